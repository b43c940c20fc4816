"""Which training objective makes the quick CGDM decoder better than its base codec? (issue 13)

    python benchmarks/decoder_objectives.py --base resources/models/cgdm_base.pt [--steps 600]
        [--objectives mse,adversarial,adversarial_refine,adversarial_refine_x4] [--threads 1] [--images 12]
        [--jobs 1] [--save-as decoder_objectives]

Trains the full decoder (consistency branch + SFF, residual-shifting diffusion, 4 steps) once per objective
on the embedded training photos (data/train), on a frozen base checkpoint, for the same number of steps,
then decodes every other Kodak image (12 of 24) at the lowest and highest rate (no entropy coding: the
forward path equals the bytes round trip, tests/test_model.py) and reports, against the base codec's own
reconstructions: mean PSNR (RGB) and the sliced Wasserstein distance (cgdm.evaluation.realism, the
weight-free realism measure; lower = patch statistics closer to the originals'), with its ratio to the
base's. The quick profile's objective (config/config.yaml, ``perceptual``) is chosen from this file.

Objectives (``cgdm.train_diffusion`` params on top of its defaults):

* ``mse``: diffusion x0 MSE + consistency + deviation losses (``perceptual: none``);
* ``adversarial``: + conditional patch-discriminator loss, weight 0.005, from step 0;
* ``adversarial_late``: the same after 25 % of the steps (the trainer's defaults: ``perceptual: auto``
  offline, and config/zoo/gpu.yaml's decoders);
* ``adversarial_refine``: the same with the full-resolution output head (16 channels), the adversarial
  term after 25 % of the steps;
* ``adversarial_refine_x4``: the same, adversarial weight 0.02.

``--jobs N`` trains N objectives at once (separate processes, ``--threads`` each); the decodes run one at a
time afterwards. Saves benchmarks/results/<save-as>.json (default decoder_objectives.json; with provenance
and the base checkpoint's hash).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._psnr import psnr  # noqa: E402
from benchmarks._results import save  # noqa: E402

OBJECTIVES = {
    "mse": {"perceptual": "none"},
    "adversarial": {"perceptual": "adversarial", "adversarial_weight": 0.005, "adversarial_start": 0.0},
    "adversarial_late": {"perceptual": "adversarial", "adversarial_weight": 0.005, "adversarial_start": 0.25},
    "adversarial_refine": {"perceptual": "adversarial", "adversarial_weight": 0.005, "adversarial_start": 0.25,
                           "refine_channels": 16},
    "adversarial_refine_x4": {"perceptual": "adversarial", "adversarial_weight": 0.02, "adversarial_start": 0.25,
                              "refine_channels": 16},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="base codec checkpoint (the workflow's resources/models/cgdm_base.pt)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=12, help="Kodak images (every 24/N-th)")
    p.add_argument("--jobs", type=int, default=1, help="objectives trained at once")
    p.add_argument("--save-as", default="decoder_objectives", help="result name (benchmarks/results/NAME.json)")
    p.add_argument("--reference", metavar="DECODER", help="a trained decoder checkpoint measured alongside, "
                   "untrained here (e.g. zoo/cgdm_decoder.pt: the shipped decoder on the same images)")
    args = p.parse_args(argv)

    import torch

    from cgdm.evaluation.realism import swd
    from cgdm.imageio import list_images, load_image
    from cgdm.model import CGDM, load_base
    from cgdm.sampling_options import SamplingOptions
    from cgdm.tensors import image_to_tensor, tensor_to_image
    from cgdm.zoo import load_checkpoint

    torch.set_num_threads(args.threads)
    kodak = list_images(REPO / "data" / "kodak")
    originals = [load_image(f) for f in kodak[:: max(1, len(kodak) // args.images)]]
    train = list_images(REPO / "data" / "train")
    rates = (0, 3)
    rows, base_swd = [], {}  # the base codec's SWD per rate: the same for every objective
    names = [o.strip() for o in args.objectives.split(",") if o.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        # 1. train (in parallel with --jobs: separate processes, spawned so each starts its own torch threads)
        jobs = [({**OBJECTIVES[n], "steps": args.steps, "threads": args.threads, "checkpoint_every": 10**9},
                 train, Path(tmp) / f"{n}.pt", {"base": args.base}) for n in names]
        with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            train_s = dict(zip(names, pool.map(_train, jobs), strict=True))
        # 2. decode and measure, one decoder at a time
        decoders = {n: Path(tmp) / f"{n}.pt" for n in names}
        if args.reference:
            decoders["reference"] = Path(args.reference)
            train_s["reference"] = None
        for name, out in decoders.items():
            meta = load_checkpoint(out)["meta"]
            model = CGDM.from_checkpoints(args.base, out, options=SamplingOptions(tile=256, overlap=32))
            for r in rates:
                base, recons = [], []
                with torch.no_grad():
                    for im in originals:
                        o = model.base(image_to_tensor(im), r)
                        base.append(tensor_to_image(o["x_hat"]))
                        recons.append(tensor_to_image(model.postprocess(o["x_hat"], o["features"], o["syntax"], r)))
                if r not in base_swd:
                    base_swd[r] = swd(base, originals)
                s_base = base_swd[r]
                s_cgdm = swd(recons, originals)
                row = {
                    "objective": name, "params": OBJECTIVES.get(name, meta.get("params")), "rate": r,
                    "steps": meta.get("steps"), "losses": meta["losses"], "ms_per_step": meta["ms_per_step"],
                    "train_s": train_s[name] and round(train_s[name], 1),
                    "psnr_base": np.mean([psnr(a, b) for a, b in zip(base, originals, strict=True)]),
                    "psnr_cgdm": np.mean([psnr(a, b) for a, b in zip(recons, originals, strict=True)]),
                    "swd_base": s_base.value, "swd_cgdm": s_cgdm.value,
                    "swd_levels_base": s_base.levels, "swd_levels_cgdm": s_cgdm.levels,
                }
                row["psnr_gain_db"] = row["psnr_cgdm"] - row["psnr_base"]
                row["swd_ratio"] = row["swd_cgdm"] / row["swd_base"]
                rows.append(row)
                print(f"{name:24s} rate {r}: PSNR {row['psnr_base']:.2f} -> {row['psnr_cgdm']:.2f} dB "
                      f"({row['psnr_gain_db']:+.2f}), SWD {row['swd_base']:.1f} -> {row['swd_cgdm']:.1f} "
                      f"(x{row['swd_ratio']:.3f}); train {train_s[name] or 0:.0f} s", flush=True)
    _, base_meta = load_base(args.base)
    save(args.save_as, {
        "setup": {"base": os.path.relpath(args.base, REPO) if Path(args.base).is_absolute() else args.base,
                  "base_weights_sha256": base_meta.get("weights_sha256"), "base_steps": base_meta.get("steps"),
                  "kodak_images": len(originals), "rates": list(rates), "threads": args.threads, "jobs": args.jobs,
                  "reference": args.reference and os.path.relpath(Path(args.reference).resolve(), REPO),
                  "sampling": "SamplingOptions(tile=256, overlap=32), defaults otherwise",
                  "load_average_end": os.getloadavg()},
        "rows": rows,
    })
    return 0


def _train(job) -> float:
    """Train one objective's decoder (a worker process); its wall seconds."""
    import torch

    from cgdm.train_diffusion import train_decoder

    params, images, out, requires = job
    torch.set_num_threads(params["threads"])
    t = time.perf_counter()
    train_decoder(params, images, out, requires, progress=False)
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
