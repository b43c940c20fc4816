"""Time per image of each per-image metric (and of FID/256 feature extraction) on a few Kodak images.

    python benchmarks/metrics.py [--images 4] [--device cpu] [--threads 1] [--cache DIR]
        [--metrics psnr,ms_ssim,lpips,dists]

The reconstruction is the image JPEG-compressed at quality 50 (Pillow), so the numbers are those of a
real pair. Building the metric (imports + weights) is timed separately from computing it. Metrics whose
weights are missing are reported as unavailable (fetch them with `python -m cgdm.evaluation.weights
--fetch`). Prints one line per metric: build seconds, then mean +- std seconds per image.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cgdm.evaluation import fid, metrics  # noqa: E402
from cgdm.imageio import list_images, load_image  # noqa: E402


def jpeg_pair(path: Path, quality: int = 50) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(path)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB")), img


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4, help="number of Kodak images")
    p.add_argument("--metrics", default=",".join(metrics.DEFAULT_METRICS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--cache", type=Path, default=None, help="metric weights cache")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    pairs = [jpeg_pair(path) for path in list_images(REPO / "data" / "kodak")[: args.images]]
    h, w = pairs[0][1].shape[:2]
    print(f"{len(pairs)} Kodak images ({w}x{h}), device {args.device}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}")
    for name in [m for m in args.metrics.split(",") if m]:
        t0 = time.perf_counter()
        m = metrics.ImageMetrics([name], device=args.device, cache=args.cache)
        build = time.perf_counter() - t0
        if name in m.unavailable:
            print(f"{name:8s} unavailable: {m.unavailable[name][:120]}...")
            continue
        m(*pairs[0])  # warm-up (first call allocates)
        times = []
        for rec, ref in pairs:
            t0 = time.perf_counter()
            value, _ = m(rec, ref)[name]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(f"{name:8s} build {build:6.2f} s   {np.mean(times):7.3f} +- {np.std(times):.3f} s/image"
              f"   (last value {value:.4f})")

    try:
        t0 = time.perf_counter()
        model = fid.InceptionFeatures(args.cache, args.device)
        build = time.perf_counter() - t0
    except FileNotFoundError as exc:
        print(f"fid/kid  unavailable: {str(exc)[:120]}...")
        return 0
    patches = [p for rec, _ in pairs for p in fid.patches(rec)]
    t0 = time.perf_counter()
    model(patches, desc="patches")
    feat = time.perf_counter() - t0
    print(f"fid/kid  build {build:6.2f} s   {feat / len(pairs):7.3f} s/image Inception features "
          f"({len(patches) // len(pairs)} patches per image; the Frechet distance is extra, once per rate point)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
