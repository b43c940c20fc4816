"""Side-by-side crops of every codec at matched bpp, for the report.

For one image, each codec contributes the reconstruction of its rate point whose bpp (from the file on
disk) is closest to the target bpp; the crop is the window of the original with the most detail
(largest gradient energy), where codecs differ most visibly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cgdm.imageio import load_image  # noqa: E402


def detail_window(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the largest gradient energy."""
    g = np.asarray(image, np.float32).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = energy.shape
    size = min(size, h, w)
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 4)
    best, corner = -1.0, (0, 0)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            s = integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            if s > best:
                best, corner = s, (y, x)
    return corner


def matched_points(enc: pd.DataFrame, image: str, target_bpp: float) -> pd.DataFrame:
    """Per codec, the row of ``image`` whose bpp is closest to ``target_bpp``."""
    rows = enc[(enc["image"] == image) & (enc["status"] == "ok")].copy()
    rows["distance"] = (rows["bpp"] - target_bpp).abs()
    return rows.sort_values("distance").groupby("codec", as_index=False).first().sort_values("bpp")


def crops_figure(enc: pd.DataFrame, out: Path, image: str | None = None, target_bpp: float | None = None,
                 size: int = 192, labels: dict[str, str] | None = None) -> Path:
    ok = enc[enc["status"] == "ok"]
    if ok.empty:
        raise ValueError("no decoded images to show")
    image = image or sorted(ok["image"].unique())[0]
    target_bpp = float(target_bpp if target_bpp is not None else ok["bpp"].median())
    points = matched_points(ok, image, target_bpp)
    original = load_image(points["original"].iloc[0])
    y, x = detail_window(original, size)
    size = min(size, *original.shape[:2])
    panels = [("original", None, original)] + [
        (labels.get(r.codec, r.codec) if labels else r.codec, r.bpp, load_image(r.reconstruction)) for r in points.itertuples()
    ]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, bpp, img) in zip(axes.flat, panels):
        ax.imshow(img[y:y + size, x:x + size], interpolation="nearest")
        ax.set_title(name if bpp is None else f"{name}\n{bpp:.3f} bpp", fontsize=9)
    fig.suptitle(f"{image}: crops at ~{target_bpp:.2f} bpp (closest rate point of each codec)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.crops", description=__doc__.splitlines()[0])
    p.add_argument("encode_csvs", nargs="+", type=Path, help="encode tables (results/encoded/.../encode.csv)")
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.add_argument("--image", help="image name (default: the first)")
    p.add_argument("--bpp", type=float, help="target bpp (default: median bpp of all rate points)")
    p.add_argument("--size", type=int, default=192, help="crop size in pixels")
    p.add_argument("--labels", default="{}", help="JSON {codec: label}")
    args = p.parse_args(argv)
    import json

    enc = pd.concat([pd.read_csv(f) for f in args.encode_csvs], ignore_index=True)
    crops_figure(enc, args.out, args.image, args.bpp, args.size, json.loads(args.labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
