#!/usr/bin/env bash
# Train the zoo on a CUDA machine that has Python 3.12 and PyTorch but not this project's environment (a
# rented GPU), and pack it for the trip back. From the repository root:
#
#     make gpu-wheels                                   # here (needs the package index): .whl/
#     # copy the checkout with .whl/ to the GPU machine; zoo/ (55 MB) need not travel, it is rewritten
#     bash config/zoo/train_on_gpu.sh [CONFIG] [OUTDIR] # there
#     cat OUTDIR/zoo.tar.part-* | tar x                 # here again: zoo/ with the new weights and zoo.json
#
# CONFIG: the models to train (default config/zoo/gpu.yaml); OUTDIR: where the packed zoo and the logs go
# (default $OUT, else benchmarks/out/zoo-gpu). The wheels of .whl/ (compressai and pytorch-msssim, the
# two the training imports that a PyTorch image lacks) are installed into a private folder first. Set
# CGDM_CODE_REVISION to the commit copied when the checkout has no .git. DEVICE=cpu runs it anywhere (the
# test suite does, with a tiny config).
set -uo pipefail
config=${1:-config/zoo/gpu.yaml}
out=${2:-${OUT:-benchmarks/out/zoo-gpu}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # the package of this checkout
revision=${CGDM_CODE_REVISION:-$(git rev-parse --short=12 HEAD 2> /dev/null || echo unknown)}
(nvidia-smi -L || echo "no nvidia-smi") > "$out/device.txt" 2>&1
python3 -m cgdm zoo-train --config "$config" --device "${DEVICE:-cuda}" --revision "$revision" \
    2>&1 | tee "$out/zoo-train.log"
rc=${PIPESTATUS[0]}
# the per-model logs (steps/s, losses) come back whether or not the run finished
tar czf "$out/logs.tgz" logs/train results/benchmarks/train 2> /dev/null
[ "$rc" = 0 ] || exit "$rc"
# files of at most 16 MiB travel back from a rented machine: zoo/ (about 55 MB) in 15 MiB parts
tar c zoo | split -b 15M - "$out/zoo.tar.part-"
