"""Time per image of each per-image metric, SWD per set and FID/256 feature extraction on Kodak.

    python benchmarks/metrics.py [--images 4] [--swd-images 24] [--device cpu] [--threads 1] [--cache DIR]
        [--metrics psnr,ms_ssim,lpips,dists,nlpd,gmsd,fsim,vsi,vif,cw_ssim] [--slow mad] [--slow-images 1]

The reconstruction is the image JPEG-compressed at quality 50 (Pillow), so the numbers are those of a
real pair. Building the metric (imports + weights) is timed separately from computing it; the first call
is a warm-up and is not timed. Metrics whose weights are missing are reported as unavailable (fetch them
with `python -m cgdm.evaluation.weights --fetch`). The default list holds the configured metrics and the
weight-free pyiqa candidates that were measured to choose NLPD and GMSD. MAD, the other candidate, is
not in the default list: it took over a minute per image in a probe on one core (add it with
``--metrics ...,mad``; ``--slow`` metrics are timed on ``--slow-images`` images only). Both wall-clock
and CPU seconds (``time.process_time``: all threads of this process) are recorded, since wall time on a
shared machine depends on the load.

SWD (cgdm.evaluation.realism) is a set-level measure: it is timed once over ``--swd-images`` pairs (Kodak:
all 24), image decoding excluded, bootstrap included -- what one (dataset, codec, rate) job costs.

Prints one line per metric and saves everything to benchmarks/results/metrics.json (with provenance).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._results import save  # noqa: E402
from cgdm.evaluation import fid, metrics, realism  # noqa: E402
from cgdm.imageio import list_images, load_image  # noqa: E402

DEFAULT = "psnr,ms_ssim,lpips,dists,nlpd,gmsd,fsim,vsi,vif,cw_ssim"


def jpeg_pair(path: Path, quality: int = 50) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(path)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB")), img


class Clock:
    """Wall-clock and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4, help="Kodak images per per-image metric")
    p.add_argument("--swd-images", type=int, default=24, help="Kodak images in the SWD set")
    p.add_argument("--metrics", default=DEFAULT)
    p.add_argument("--slow", default="mad", help="metrics timed on --slow-images images only")
    p.add_argument("--slow-images", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--cache", type=Path, default=None, help="metric weights cache")
    p.add_argument("--no-save", action="store_true", help="print only")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    paths = list_images(REPO / "data" / "kodak")
    pairs = [jpeg_pair(path) for path in paths[: max(args.images, args.slow_images)]]
    h, w = pairs[0][1].shape[:2]
    print(f"{len(pairs)} Kodak images ({w}x{h}), JPEG q50, device {args.device}, {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}")
    slow = {m for m in args.slow.split(",") if m}
    results = {}
    for name in [m for m in args.metrics.split(",") if m]:
        with Clock() as build:
            m = metrics.ImageMetrics([name], device=args.device, cache=args.cache)
        if name in m.unavailable:
            results[name] = {"status": f"unavailable: {m.unavailable[name]}"}
            print(f"{name:8s} unavailable: {m.unavailable[name][:120]}...")
            continue
        use = pairs[: args.slow_images if name in slow else args.images]
        m(*use[0])  # warm-up (first call allocates)
        walls, cpus = [], []
        for rec, ref in use:
            with Clock() as c:
                value, _ = m(rec, ref)[name]
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
            walls.append(c.wall)
            cpus.append(c.cpu)
        results[name] = {"status": "ok", "images": len(use), "build_s": build.wall, "wall_s": float(np.mean(walls)),
                         "wall_std_s": float(np.std(walls)), "cpu_s": float(np.mean(cpus)),
                         "lower_better": m.lower_better[name], "last_value": value}
        print(f"{name:8s} build {build.wall:6.2f} s   {np.mean(walls):7.3f} +- {np.std(walls):.3f} s/image "
              f"(cpu {np.mean(cpus):.3f} s, {len(use)} images)   last value {value:.4f}")

    swd_pairs = [jpeg_pair(path) for path in paths[: args.swd_images]]
    with Clock() as c:
        res = realism.swd([r for r, _ in swd_pairs], [o for _, o in swd_pairs])
    results["swd"] = {"status": "ok", "images": len(swd_pairs), "per_set_wall_s": c.wall, "per_set_cpu_s": c.cpu,
                      "value": res.value, "ci": [res.ci_low, res.ci_high], "levels": res.levels,
                      "n_boot": res.n_boot}
    print(f"swd      {c.wall:7.3f} s per set of {len(swd_pairs)} images (cpu {c.cpu:.3f} s)   value "
          f"{res.value:.2f} [{res.ci_low:.2f}, {res.ci_high:.2f}], levels {np.round(res.levels, 1).tolist()}")

    try:
        with Clock() as build:
            model = fid.InceptionFeatures(args.cache, args.device)
    except FileNotFoundError as exc:
        results["fid_features"] = {"status": f"unavailable: {exc}"}
        print(f"fid/kid  unavailable: {str(exc)[:120]}...")
    else:
        patches = [p for rec, _ in pairs[: args.images] for p in fid.patches(rec)]
        with Clock() as c:
            model(patches, desc="patches")
        n = min(args.images, len(pairs))
        results["fid_features"] = {"status": "ok", "images": n, "build_s": build.wall, "wall_s": c.wall / n,
                                   "cpu_s": c.cpu / n, "patches_per_image": len(patches) // n}
        print(f"fid/kid  build {build.wall:6.2f} s   {c.wall / n:7.3f} s/image Inception features "
              f"({len(patches) // n} patches per image; the Frechet distance is extra, once per rate point)")

    if not args.no_save:
        save("metrics", {"setup": {"dataset": "kodak", "size": f"{w}x{h}", "reconstruction": "JPEG q50 (Pillow)",
                                   "device": args.device, "torch_threads": args.threads,
                                   "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
                         "metrics": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
