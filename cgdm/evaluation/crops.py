"""Side-by-side crops of every codec at matched bpp, for the report.

For one image the target bpp is the real bpp (from the file on disk) of a *reference* codec's rate point
(the learned codec under study, default: a ``cgdm`` codec; its rate point closest to the requested bpp).
The classical codecs, which can hit any rate, are **rate-matched** to that target on this image: their
quality parameter is searched (codecs with :attr:`~cgdm.harness.codecs.Codec.rate_matchable`:
:meth:`baselines.classical.ClassicalCodec.match_bpp`, each step a real encode; the bitstream is written
to a file and its size is the bpp shown). Codecs with fixed rate points (learned ones) contribute their
rate point closest to the target. Every panel shows its actual bpp and its difference to the target; a
panel more than ``tolerance`` (default 5 %) away is dimmed and titled in red with the reason (e.g. "JPEG
cannot go below 0.19 bpp"), never shown as if it matched. The crop is the window of the original with the
most detail (largest gradient energy), where codecs differ most visibly. The panels are also written as a
table (``--table``): codec, how it was matched, setting, bpp, target, relative difference, within
tolerance, note.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cgdm.harness.codecs import Codec, CodecUnavailable, import_object, make_codec, write_bitstream  # noqa: E402
from cgdm.imageio import load_image  # noqa: E402
from cgdm.results import write_table  # noqa: E402

#: default tolerance of the crops: |bpp - target| <= 5 % of the target
DEFAULT_TOLERANCE = 0.05
#: kinds of codec that can serve as the reference (fixed rate points, the ones classical codecs follow)
REFERENCE_KINDS = ("cgdm", "learned")


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


@dataclass
class Panel:
    codec: str
    label: str
    how: str               # "reference", "rate-matched" or "rate point"
    setting: str           # quality parameter (rate-matched) or rate value (rate point)
    bpp: float
    target_bpp: float
    within: bool
    note: str
    image: np.ndarray

    def row(self, image: str, tolerance: float) -> dict:
        return {"image": image, "codec": self.codec, "label": self.label, "how": self.how,
                "setting": self.setting, "bpp": self.bpp, "target_bpp": self.target_bpp,
                "rel_diff": self.bpp / self.target_bpp - 1, "tolerance": tolerance,
                "within_tolerance": self.within, "note": self.note}


def reference_point(enc: pd.DataFrame, image: str, target_bpp: float, reference: str | None = None) -> pd.Series:
    """The rate point the crops are matched to: of codec ``reference`` (default: a ``cgdm`` codec, else a
    learned one), the one whose bpp on ``image`` is closest to ``target_bpp``."""
    rows = enc[(enc["image"] == image) & (enc["status"] == "ok")]
    if reference is not None:
        cand = rows[rows["codec"] == reference]
        if cand.empty:
            raise ValueError(f"reference codec {reference!r} has no decoded rate point of {image!r}; codecs: "
                             f"{', '.join(sorted(rows['codec'].unique()))}")
    else:
        kinds = rows["kind"] if "kind" in rows else pd.Series("", index=rows.index)
        cand = next((rows[kinds == k] for k in REFERENCE_KINDS if (kinds == k).any()), rows.iloc[0:0])
        if cand.empty:   # only classical codecs: match them all to the requested bpp
            return pd.Series({"codec": None, "bpp": target_bpp})
    return cand.loc[(cand["bpp"] - target_bpp).abs().idxmin()]


def _is_classical(entry: dict | None) -> bool:
    if not entry:
        return False
    cls = import_object(entry["class"])
    return isinstance(cls, type) and issubclass(cls, Codec) and cls.rate_matchable


def _within(bpp: float, target: float, tolerance: float) -> bool:
    return abs(bpp - target) <= tolerance * target + 1e-12


def _rate_matched(name: str, entry: dict, original: np.ndarray, target: float, tolerance: float,
                  label: str, tmp: Path) -> Panel:
    """Encode ``original`` with the classical codec of ``entry`` at the setting closest to ``target``."""
    codec = make_codec(name, entry)
    try:
        codec.check_available()
    except CodecUnavailable as exc:
        blank = np.full_like(original, 255)
        return Panel(name, label, "rate-matched", "", float("nan"), target, False,
                     f"unavailable: {str(exc).splitlines()[0]}", blank)
    info = write_bitstream(tmp / f"{name}{codec.extension}", codec.encode(original, {"bpp": target}),
                           original.shape)   # the bpp shown is the size of this file
    rec = codec.decode(info.path.read_bytes())
    levels = list(codec.levels)
    within = _within(info.bpp, target, tolerance)
    note = ""
    if not within:
        if codec.last_quality == levels[0] and info.bpp > target:
            note = f"cannot go below {info.bpp:.3f} bpp"
        elif codec.last_quality == levels[-1] and info.bpp < target:
            note = f"cannot go above {info.bpp:.3f} bpp"
        else:
            note = "no setting within tolerance"
    return Panel(name, label, "rate-matched", f"{codec.last_quality:g}", info.bpp, target, within, note, rec)


def crop_panels(enc: pd.DataFrame, image: str, target_bpp: float, *, entries: dict[str, dict] | None = None,
                tolerance: float = DEFAULT_TOLERANCE, reference: str | None = None,
                labels: dict[str, str] | None = None) -> tuple[float, str | None, np.ndarray, list[Panel]]:
    """(target bpp, reference codec, original, panels) of one image; see the module docstring."""
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0 (a fraction of the target bpp), got {tolerance}")
    labels, entries = labels or {}, entries or {}
    ok = enc[(enc["image"] == image) & (enc["status"] == "ok")]
    if ok.empty:
        raise ValueError(f"no decoded rate point of image {image!r}")
    ref = reference_point(enc, image, target_bpp, reference)
    target, ref_codec = float(ref["bpp"]), ref["codec"]
    original = load_image(ok["original"].iloc[0])
    panels = []
    with tempfile.TemporaryDirectory(prefix="cgdm-crops-") as tmp:
        for codec in sorted(ok["codec"].unique()):
            label = labels.get(codec, codec)
            if codec == ref_codec:
                panels.append(Panel(codec, label, "reference", str(ref["rate"]), target, target, True, "",
                                    load_image(ref["reconstruction"])))
            elif _is_classical(entries.get(codec)):
                panels.append(_rate_matched(codec, entries[codec], original, target, tolerance, label, Path(tmp)))
            else:
                r = matched_points(ok[ok["codec"] == codec], image, target).iloc[0]
                within = _within(float(r["bpp"]), target, tolerance)
                panels.append(Panel(codec, label, "rate point", str(r["rate"]), float(r["bpp"]), target, within,
                                    "" if within else "no rate point within tolerance",
                                    load_image(r["reconstruction"])))
    panels.sort(key=lambda p: (p.how != "reference", not p.within, p.bpp if np.isfinite(p.bpp) else np.inf))
    return target, ref_codec, original, panels


def crops_figure(enc: pd.DataFrame, out: Path, image: str | None = None, target_bpp: float | None = None,
                 size: int = 192, labels: dict[str, str] | None = None, *, entries: dict[str, dict] | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, reference: str | None = None,
                 table: Path | None = None) -> Path:
    """Write the crops figure of one image (and, with ``table``, its panels as CSV)."""
    ok = enc[enc["status"] == "ok"]
    if ok.empty:
        raise ValueError("no decoded images to show")
    image = image or sorted(ok["image"].unique())[0]
    requested = float(target_bpp if target_bpp is not None else ok["bpp"].median())
    target, ref_codec, original, panels = crop_panels(ok, image, requested, entries=entries, tolerance=tolerance,
                                                      reference=reference, labels=labels)
    y, x = detail_window(original, size)
    size = min(size, *original.shape[:2])
    cols = min(4, len(panels) + 1)
    rows = -(-(len(panels) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(original[y:y + size, x:x + size], interpolation="nearest")
    axes.flat[0].set_title("original", fontsize=9)
    # the grid may have more cells than panels (the last row is padded): zip stops at the last panel
    for ax, p in zip(list(axes.flat)[1:], panels, strict=False):
        # a panel outside the tolerance is dimmed and titled in red: never passed off as matched
        ax.imshow(p.image[y:y + size, x:x + size], interpolation="nearest", alpha=1.0 if p.within else 0.35)
        diff = f"{p.bpp:.3f} bpp ({100 * (p.bpp / target - 1):+.1f} %)" if np.isfinite(p.bpp) else "no bpp"
        how = {"reference": "reference", "rate-matched": f"matched, setting {p.setting}",
               "rate point": f"rate point {p.setting}"}[p.how]
        title = f"{p.label}\n{diff}, {how}" + (f"\n{p.note}" if p.note else "")
        ax.set_title(title, fontsize=8, color="black" if p.within else "red")
    who = f"bpp of {ref_codec} on this image" if ref_codec else "requested bpp"
    fig.suptitle(f"{image}: crops at {target:.3f} bpp ({who}); classical codecs rate-matched per image; "
                 f"tolerance ±{100 * tolerance:g} %, red = outside it", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    # temporary file + rename: an interrupted job never leaves a truncated figure (suffix kept for the format)
    tmp = out.with_name(f".{out.stem}.part{out.suffix}")
    fig.savefig(tmp, dpi=130)
    tmp.replace(out)
    plt.close(fig)
    if table is not None:
        write_table(pd.DataFrame([p.row(image, tolerance) for p in panels]), table)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.crops", description=__doc__.splitlines()[0])
    p.add_argument("encode_csvs", nargs="+", type=Path, help="encode tables (results/encoded/.../encode.csv)")
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.add_argument("--image", help="image name (default: the first)")
    p.add_argument("--bpp", type=float, help="requested bpp; the reference codec's rate point closest to it "
                                             "sets the target (default: median bpp of all rate points)")
    p.add_argument("--size", type=int, default=192, help="crop size in pixels")
    p.add_argument("--labels", default="{}", help="JSON {codec: label}")
    p.add_argument("--entries", default="{}", help="JSON {codec: config entry}: the classical codecs among "
                                                   "them are rate-matched to the target")
    p.add_argument("--reference", help="codec whose bpp is the target (default: a cgdm codec, else a learned one)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="allowed |bpp - target| / target (default: %(default)s)")
    p.add_argument("--table", type=Path, help="also write the panels as a CSV table")
    args = p.parse_args(argv)

    enc = pd.concat([pd.read_csv(f) for f in args.encode_csvs], ignore_index=True)
    crops_figure(enc, args.out, args.image, args.bpp, args.size, json.loads(args.labels),
                 entries=json.loads(args.entries), tolerance=args.tolerance, reference=args.reference,
                 table=args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
