"""What is reproducible across thread counts (issue 15, item 3).

A file is encoded in a process with 2 intra-op threads and decoded in processes with 2 and 1 threads
(``torch.set_num_threads`` and ``OMP_NUM_THREADS``). The entropy-decoded symbols must be identical; the
pixels may differ by the float summation order of oneDNN's convolutions, which depends on the thread
count: the tolerance asserted here is the one stated in the README (CGDM section).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_SCRIPT = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore")
    threads, folder, encode = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "encode"
    import numpy as np, torch
    torch.set_num_threads(threads)
    sys.path.insert(0, "tests")
    from helpers.diffusion import test_image, tiny_cgdm
    from cgdm import rans_guard
    from cgdm.codec import ARCH, BaseCodec
    from cgdm.coder import BaseCoder
    from cgdm.model import CGDM
    from cgdm.zoo import save_checkpoint

    symbols = []
    inner = rans_guard.GuardedDecoder.decode_with_indexes
    def record(self, *args, **kwargs):
        values = inner(self, *args, **kwargs)
        symbols.append(np.asarray(values, dtype=np.int64))
        return values
    rans_guard.GuardedDecoder.decode_with_indexes = record

    if encode:  # weights, CDF tables and files come from this (2-thread) process only
        torch.manual_seed(0)
        base = BaseCodec(N=32, M=48, num_rates=2, syntax_dim=8)
        base.init_gains([0.001, 0.016])
        with torch.no_grad():
            base.log_gain.add_(2.0)
        base.update(force=True)
        save_checkpoint(folder + "/base.pth", base.state_dict(), {"arch": ARCH, "steps": 0, "config": base.config})
        image = test_image(192, 256)
        open(folder + "/base.cgdm", "wb").write(BaseCoder(base.eval()).encode(image, 1))
        tiny = tiny_cgdm(base=tiny_cgdm().base)
        save_checkpoint(folder + "/tbase.pth", tiny.base.state_dict(),
                        {"arch": ARCH, "steps": 0, "config": tiny.base.config})
        save_checkpoint(folder + "/dec.pth", tiny.decoder.state_dict(),
                        {"arch": "cgdm-decoder", "steps": 0, "config": tiny.decoder.config.to_dict()})
        open(folder + "/full.cgdm", "wb").write(tiny.compress(test_image(96, 144), 1))
    coder = BaseCoder.from_checkpoint(folder + "/base.pth")
    base_px = coder.decode(open(folder + "/base.cgdm", "rb").read())
    n_base = len(symbols)
    full = CGDM.from_checkpoints(folder + "/tbase.pth", folder + "/dec.pth", batch=2)
    full_px = full.decompress(open(folder + "/full.cgdm", "rb").read())
    np.savez(f"{folder}/out{threads}.npz", base=base_px, full=full_px,
             **{f"s{i}": s for i, s in enumerate(symbols)}, n_base=n_base)
""")


def _run(threads: int, folder, encode: bool):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(threads), str(folder), "encode" if encode else "decode"],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(folder / f"out{threads}.npz")


@pytest.mark.slow  # three subprocesses, each importing torch and decoding (~30 s idle, minutes under load)
def test_symbols_identical_pixels_within_tolerance_across_thread_counts(tmp_path):
    two = _run(2, tmp_path, encode=True)
    one = _run(1, tmp_path, encode=False)
    keys = sorted(k for k in two.files if k.startswith("s"))
    assert keys == sorted(k for k in one.files if k.startswith("s")) and len(keys) == 6  # z, y, syntax x 2 files
    for k in keys:  # entropy decoding: bit-exact
        assert np.array_equal(two[k], one[k]), k
    report = {}
    for name in ("base", "full"):
        a, b = two[name].astype(int), one[name].astype(int)
        assert a.shape == b.shape
        diff = np.abs(a - b)
        report[name] = (int(diff.max()), float((diff > 0).mean()))
        # README, CGDM section: at most 1 (of 255) in at most 0.1 % of the values
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (name, report[name])
    print(report)
