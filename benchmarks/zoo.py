"""Rate-distortion of the shipped quick models (zoo/) against WebP and the published CompressAI curves.

    python benchmarks/zoo.py                  # Kodak (24) and the held-out validation photos (data/val, 4)
    python benchmarks/zoo.py --sets val       # only the photos the models never saw

Encodes every image of each set with the learned codecs of the quick profile (CGDM base, bmshj2018 and
mbt2018-mean, each from the shipped weights in zoo/, checked against zoo/zoo.json) and with WebP and JPEG
(run here), at the rate points of config/config.yaml; bpp from the real bytes, RGB PSNR per image, curves
averaged over images, and how much a block grid (checkerboard) stands out in the coding error
(:func:`grid_peak`). Prints and saves (benchmarks/results/zoo.json) the PSNR BD-rate (Akima) of every
codec against WebP and, on Kodak, of the learned codecs against CompressAI's published curve of their
architecture (bmshj2018-hyperprior / mbt2018-mean), i.e. the zoo issue's targets:
CGDM base <= -10 % vs WebP and <= +30 % vs published bmshj2018-hyperprior.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baselines.published import load_published  # noqa: E402
from benchmarks._psnr import psnr  # noqa: E402
from benchmarks._results import save  # noqa: E402
from cgdm.evaluation.bdrate import BDRateError, bd_rate  # noqa: E402
from cgdm.harness.codecs import make_codec  # noqa: E402
from cgdm.imageio import list_images, load_image  # noqa: E402
from cgdm.zoo import install_shipped  # noqa: E402

SETS = {"kodak": REPO / "data" / "kodak", "val": REPO / "data" / "val"}
CODECS = ["cgdm_base", "bmshj2018", "hyperprior", "webp", "jpeg"]
#: learned codec -> the published curve of its architecture (config's published: table)
PUBLISHED = {"bmshj2018": "bmshj2018_published", "hyperprior": "mbt2018mean_published",
             "cgdm_base": "bmshj2018_published"}


def grid_peak(image: np.ndarray, recon: np.ndarray) -> float:
    """How much a block grid stands out in the coding error: the largest ratio, over the periods 2, 4, 8
    and 16 pixels and both axes, of the error's power at that frequency to the mean power of the
    frequencies next to it (±2, ±3 bins). It sees a grid whose phase holds over the whole image, as
    up-sampling layers leave: a checkerboard of only ±2 grey levels added to WebP's decoding of kodim01
    (quality 5) raises it from 1.4 to 100 (period 2), 12 (period 4) and 8 (period 8). JPEG's block
    edges, whose sign changes from block to block, give about 1."""
    err = recon.astype(np.float64).mean(2) - image.astype(np.float64).mean(2)
    power = np.abs(np.fft.fft2(err - err.mean())) ** 2
    rows, cols = power.mean(1), power.mean(0)  # power per vertical / horizontal frequency
    ratios = []
    for spectrum in (rows, cols):
        for period in (2, 4, 8, 16):
            k = len(spectrum) // period
            ratios.append(spectrum[k] / np.mean(spectrum[[k - 3, k - 2, k + 2, k + 3]]))
    return float(max(ratios))


def curve(codec, rates, images) -> dict:
    """Mean bpp (from the bytes), mean RGB PSNR and mean grid peak (:func:`grid_peak`) per rate point."""
    bpp, q, grid = [], [], []
    for r in tqdm(rates, desc="  rates", leave=False):
        b, p, g = [], [], []
        for img in images:
            data = codec.encode(img, r)
            rec = codec.decode(data)
            b.append(8 * len(data) / (img.shape[0] * img.shape[1]))
            p.append(psnr(img, rec))
            g.append(grid_peak(img, rec))
        bpp.append(float(np.mean(b)))
        q.append(float(np.mean(p)))
        grid.append(float(np.mean(g)))
    return {"rates": list(rates), "bpp": bpp, "psnr": q, "grid_peak": grid}


def bd(anchor: dict, test: dict) -> float | str:
    try:
        return round(bd_rate(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"], method="akima"), 2)
    except BDRateError as exc:
        return f"refused: {exc}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    ap.add_argument("--limit", type=int, default=0, help="first N images of each set (0: all)")
    args = ap.parse_args(argv)

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    models_dir = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    paths = {}
    for name, entry in cfg["models"].items():
        if entry.get("zoo"):
            paths[name] = str(install_shipped(entry["zoo"], entry, models_dir / f"{name}.pt"))
    codecs = {}
    for name in CODECS:
        entry = cfg["codecs"][name]
        roles = {role: paths[m] for role, m in (entry.get("models") or {}).items()}
        codecs[name] = (make_codec(name, entry, roles), entry["rates"])

    results = {}
    for set_name in args.sets:
        files = list_images(SETS[set_name])[: args.limit or None]
        images = [load_image(f) for f in files]
        curves = {}
        for name, (codec, rates) in codecs.items():
            print(f"{set_name}: {name}", flush=True)
            curves[name] = curve(codec, rates, images)
        bd_webp = {name: bd(curves["webp"], c) for name, c in curves.items() if name != "webp"}
        bd_pub = {}
        if set_name == "kodak":
            for name, pub in PUBLISHED.items():
                df = load_published(cfg["published"][pub], name=pub)
                df = df[df["metric"] == "psnr"].sort_values("bpp")
                bd_pub[f"{name} vs {pub}"] = bd({"bpp": df["bpp"].to_numpy(), "psnr": df["value"].to_numpy()},
                                                curves[name])
        results[set_name] = {"images": [f.name for f in files], "curves": curves,
                             "bd_rate_vs_webp_akima": bd_webp, "bd_rate_vs_published_akima": bd_pub}
        print(f"\n{set_name} ({len(files)} images): PSNR BD-rate (Akima) vs WebP run here")
        for name, v in bd_webp.items():
            print(f"  {name:<12} {v if isinstance(v, str) else f'{v:+.2f} %'}")
        for name, v in bd_pub.items():
            print(f"  {name:<36} {v if isinstance(v, str) else f'{v:+.2f} %'}")
        print("  grid peak of the coding error per rate point (about 1: no block grid)")
        for name, c in curves.items():
            print(f"  {name:<12} " + " ".join(f"{g:.2f}" for g in c["grid_peak"]))
    shipped = yaml.safe_load((REPO / "zoo" / "zoo.json").read_text())
    out = save("zoo", {"sets": results, "zoo": shipped})
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
