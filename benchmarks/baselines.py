"""Encode / decode time per image of every baseline codec on a few Kodak images.

    python benchmarks/baselines.py                       # classical codecs (+ BPG/VTM when installed)
    python benchmarks/baselines.py --checkpoint resources/models/hyperprior_small.pt --zoo

Prints one line per (codec, rate): mean bpp (from the real bytes), mean RGB PSNR, and the mean / min
encode and decode wall time per image. Codecs that cannot run here are listed with the reason.
The first image of each codec is encoded once untimed (warm-up: library loading, model loading).
The rows (and the unavailable codecs with their reasons) are saved with provenance to
benchmarks/results/baselines.json (see benchmarks/_results.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._psnr import psnr  # noqa: E402
from benchmarks._results import save  # noqa: E402
from cgdm.harness.codecs import CodecUnavailable, make_codec  # noqa: E402
from cgdm.imageio import list_images, load_image  # noqa: E402

CLASSICAL = [
    ("jpeg-420", "baselines.classical.JPEG", {"subsampling": "4:2:0"}, [50, {"bpp": 0.25}]),
    ("jpeg-444", "baselines.classical.JPEG", {"subsampling": "4:4:4"}, [50]),
    ("webp", "baselines.classical.WebP", {}, [50, {"bpp": 0.25}]),
    ("avif", "baselines.classical.AVIF", {}, [50, {"bpp": 0.25}]),
    ("jpeg2000", "baselines.classical.JPEG2000", {}, [48, {"bpp": 0.25}]),
    ("bpg", "baselines.classical.BPG", {}, [35]),
    ("vtm", "baselines.classical.VTM", {}, [37]),
]


def bench(name: str, entry: dict, rates: list, images: list[np.ndarray], models: dict | None = None) -> list[dict]:
    """Time one codec at each rate; returns one row per rate (or one ``unavailable`` row)."""
    codec = make_codec(name, entry, models)
    try:
        codec.check_available()
    except CodecUnavailable as exc:
        reason = str(exc).splitlines()[0]
        print(f"{name:<22} unavailable: {reason[:150]}")
        return [{"codec": name, "status": f"unavailable: {reason}"}]
    rows = []
    for rate in rates:
        codec.decode(codec.encode(images[0], rate))  # warm-up
        enc, dec, bpps, psnrs = [], [], [], []
        for img in images:
            t0 = time.perf_counter()
            data = codec.encode(img, rate)
            t1 = time.perf_counter()
            rec = codec.decode(data)
            t2 = time.perf_counter()
            enc.append(t1 - t0)
            dec.append(t2 - t1)
            bpps.append(8 * len(data) / (img.shape[0] * img.shape[1]))
            psnrs.append(psnr(img, rec))
        ms = [1000 * f(t) for t in (enc, dec) for f in (np.mean, np.min)]
        print(f"{name:<22} {str(rate):<14} {np.mean(bpps):7.3f} {np.mean(psnrs):7.2f} "
              + " ".join(f"{v:9.1f}" for v in ms))
        rows.append({"codec": name, "status": "ok", "rate": rate, "bpp": float(np.mean(bpps)),
                     "psnr": float(np.mean(psnrs)), "encode_ms": ms[0], "encode_min_ms": ms[1], "decode_ms": ms[2],
                     "decode_min_ms": ms[3], "n_images": len(images)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3, help="number of Kodak images (default 3)")
    ap.add_argument("--kodak", default=str(REPO / "data" / "kodak"))
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="checkpoint of baselines.learned_training.train (CompressAITrained; repeatable)")
    ap.add_argument("--zoo", action="store_true", help="also CompressAI zoo models (downloads weights)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--codecs", nargs="+", metavar="NAME",
                    help=f"only these classical codecs (default all: {' '.join(c[0] for c in CLASSICAL)})")
    args = ap.parse_args(argv)
    unknown = set(args.codecs or []) - {c[0] for c in CLASSICAL}
    if unknown:
        ap.error(f"unknown codecs {sorted(unknown)}; choose from {[c[0] for c in CLASSICAL]}")

    import torch  # lazy: torch takes seconds to import; only this path needs it

    torch.set_num_threads(args.threads)
    paths = list_images(args.kodak)[: args.images]
    images = [load_image(p) for p in paths]
    print(f"{len(images)} images ({', '.join(p.stem for p in paths)}), {images[0].shape[1]}x{images[0].shape[0]}, "
          f"torch threads {args.threads}")
    print(f"{'codec':<22} {'rate':<14} {'bpp':>7} {'PSNR':>7} "
          + " ".join(f"{h:>9}" for h in ("enc ms", "enc min", "dec ms", "dec min")))
    rows = []
    for name, cls, params, rates in CLASSICAL:
        if args.codecs is None or name in args.codecs:
            rows += bench(name, {"class": cls, "params": params}, rates, images)
    for ckpt in args.checkpoint:
        from baselines.learned import load_checkpoint  # lazy: baselines.learned imports torch

        meta = load_checkpoint(ckpt)["meta"]
        rows += bench(f"{meta['arch']}-trained", {"class": "baselines.learned.CompressAITrained"},
                      list(range(len(meta["lambdas"]))), images, {"net": ckpt})
    if args.zoo:
        for arch, q in (("bmshj2018-hyperprior", 3), ("mbt2018-mean", 3), ("mbt2018", 3), ("cheng2020-anchor", 3)):
            rows += bench(f"{arch}-zoo", {"class": "baselines.learned.CompressAIZoo",
                                          "params": {"arch": arch, "qualities": [q]}}, [q], images)
    save("baselines", {"images": [p.stem for p in paths], "size": f"{images[0].shape[1]}x{images[0].shape[0]}",
                       "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
