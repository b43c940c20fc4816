"""Which training objective makes the quick CGDM decoder better than its base codec? (issue 13)

    python benchmarks/decoder_objectives.py --base resources/models/cgdm_base.pt [--steps 600]
        [--objectives mse,adversarial,adversarial_refine,adversarial_refine_x4] [--threads 1] [--images 12]

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
* ``adversarial_refine``: the same with the full-resolution output head (16 channels), the adversarial
  term after 25 % of the steps;
* ``adversarial_refine_x4``: the same, adversarial weight 0.02.

Saves benchmarks/results/decoder_objectives.json (with provenance and the base checkpoint's hash).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._psnr import psnr  # noqa: E402
from benchmarks._results import save  # noqa: E402

OBJECTIVES = {
    "mse": {"perceptual": "none"},
    "adversarial": {"perceptual": "adversarial", "adversarial_weight": 0.005, "adversarial_start": 0.0},
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
    args = p.parse_args(argv)

    import torch

    from cgdm.evaluation.realism import swd
    from cgdm.imageio import list_images, load_image
    from cgdm.model import CGDM, load_base
    from cgdm.sampling_options import SamplingOptions
    from cgdm.tensors import image_to_tensor, tensor_to_image
    from cgdm.train_diffusion import train_decoder
    from cgdm.zoo import load_checkpoint

    torch.set_num_threads(args.threads)
    kodak = list_images(REPO / "data" / "kodak")
    originals = [load_image(f) for f in kodak[:: max(1, len(kodak) // args.images)]]
    train = list_images(REPO / "data" / "train")
    rates = (0, 3)
    rows, base_swd = [], {}  # the base codec's SWD per rate: the same for every objective
    with tempfile.TemporaryDirectory() as tmp:
        for name in [o.strip() for o in args.objectives.split(",") if o.strip()]:
            params = {**OBJECTIVES[name], "steps": args.steps, "threads": args.threads, "checkpoint_every": 10**9}
            out = Path(tmp) / f"{name}.pt"
            t = time.perf_counter()
            train_decoder(params, train, out, {"base": args.base}, progress=False)
            train_s = time.perf_counter() - t
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
                    "objective": name, "params": OBJECTIVES[name], "steps": args.steps, "rate": r,
                    "losses": meta["losses"], "train_s": round(train_s, 1), "ms_per_step": meta["ms_per_step"],
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
                      f"(x{row['swd_ratio']:.3f}); train {train_s:.0f} s", flush=True)
    _, base_meta = load_base(args.base)
    save("decoder_objectives", {
        "setup": {"base": os.path.relpath(args.base, REPO) if Path(args.base).is_absolute() else args.base,
                  "base_weights_sha256": base_meta.get("weights_sha256"), "base_steps": base_meta.get("steps"),
                  "kodak_images": len(originals), "rates": list(rates), "threads": args.threads,
                  "sampling": "SamplingOptions(tile=256, overlap=32), defaults otherwise",
                  "load_average_end": os.getloadavg()},
        "rows": rows,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
