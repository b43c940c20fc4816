"""Training throughput of the quick models on this machine: what makes the zoo's CPU budget count.

    python benchmarks/train_speed.py            # ~3 CPU-minutes on an idle machine
    python benchmarks/train_speed.py --steps 10 # quicker, noisier

Times optimisation steps (after 3 warm-up steps) of the CGDM base codec and the two CompressAI baselines
at the quick profile's sizes (N=64, M=96), under the settings that could make training faster on CPU:
intra-op threads (1 vs 2), crop size at a fixed number of pixels per batch (8 x 128^2 vs 32 x 64^2), and
channels-last memory format. Reports ms per step and pixels per second, and the aggregate throughput of the
two ways to use 2 cores: one job with 2 threads, or two 1-thread jobs side by side (measured by running
two processes at once). Saved to benchmarks/results/train_speed.json. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._results import save  # noqa: E402

MODELS = ["cgdm_base", "bmshj2018-hyperprior", "mbt2018-mean"]


def _model(name: str):
    if name == "cgdm_base":
        from cgdm.codec import BaseCodec

        m = BaseCodec(N=64, M=96, num_rates=4, syntax_dim=16, syntax_pool_channels=None)
        m.init_gains([0.0009, 0.0018, 0.0035, 0.0067])
        return m, lambda x: m(x, torch.zeros(x.size(0), dtype=torch.long))
    from baselines.learned import build_model

    m = build_model(name, 64, 96)
    return m, m


def time_steps(name: str, threads: int, batch: int, crop: int, channels_last: bool, steps: int) -> float:
    """Mean seconds per optimisation step (forward, RD loss, backward, both optimisers)."""
    from cgdm.codec import estimate_bits
    from cgdm.training import rd_optimizers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, forward = _model(name)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt, aux_opt = rd_optimizers(model, 1e-4, 1e-3)
    x = torch.rand(batch, 3, crop, crop).to(memory_format=fmt)
    elapsed = 0.0
    for i in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        aux_opt.zero_grad(set_to_none=True)
        out = forward(x)
        bpp = sum(estimate_bits(out["likelihoods"]).values()).sum() / (batch * crop * crop)
        loss = 0.01 * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
        loss.backward()
        opt.step()
        aux = model.aux_loss()
        aux.backward()
        aux_opt.step()
        if i >= 3:
            elapsed += time.perf_counter() - t0
    return elapsed / steps


def _one(args) -> dict:
    sec = time_steps(args.one, args.threads, args.batch, args.crop, args.channels_last, args.steps)
    return {"model": args.one, "threads": args.threads, "batch": args.batch, "crop": args.crop,
            "channels_last": args.channels_last, "ms_per_step": round(1000 * sec, 1),
            "mpix_per_s": round(args.batch * args.crop**2 / sec / 1e6, 3)}


def _run(model: str, threads: int, batch: int, crop: int, channels_last: bool, steps: int, procs: int = 1) -> list:
    cmd = [sys.executable, __file__, "--one", model, "--threads", str(threads), "--batch", str(batch),
           "--crop", str(crop), "--steps", str(steps)] + (["--channels-last"] if channels_last else [])
    jobs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    rows = []
    for j in jobs:
        out, _ = j.communicate()
        if j.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed with exit code {j.returncode}")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--crop", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # a child process: one measurement, one JSON line
        print(json.dumps(_one(args)))
        return 0

    rows = []
    settings = [(1, 8, 128, False), (2, 8, 128, False), (1, 32, 64, False), (1, 8, 128, True)]
    for model in MODELS:
        for threads, batch, crop, cl in settings:
            row = _run(model, threads, batch, crop, cl, args.steps)[0]
            rows.append({**row, "setting": "alone"})
            print(f"{model:<22} threads={threads} batch={batch:>2}x{crop}px channels_last={cl!s:<5} "
                  f"{row['ms_per_step']:7.1f} ms/step  {row['mpix_per_s']:.3f} Mpx/s", flush=True)
    # two cores: one 2-thread job against two 1-thread jobs at once (the workflow's choice, threads: 1)
    two = {}
    for model in MODELS:
        pair = _run(model, 1, 8, 128, False, args.steps, procs=2)
        single = [r for r in rows if r["model"] == model and r["threads"] == 2 and r["crop"] == 128
                  and not r["channels_last"]][0]
        two[model] = {"two_1thread_jobs_mpix_per_s": round(sum(r["mpix_per_s"] for r in pair), 3),
                      "one_2thread_job_mpix_per_s": single["mpix_per_s"]}
        rows += [{**r, "setting": "two jobs at once"} for r in pair]
        print(f"{model:<22} 2 cores: two 1-thread jobs {two[model]['two_1thread_jobs_mpix_per_s']:.3f} Mpx/s, "
              f"one 2-thread job {two[model]['one_2thread_job_mpix_per_s']:.3f} Mpx/s", flush=True)
    out = save("train_speed", {"rows": rows, "two_cores": two, "steps_timed": args.steps})
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
