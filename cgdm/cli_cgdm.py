"""The command line of full CGDM (base codec + diffusion decoder): ``cgdm compress ... --decoder D`` and
``cgdm decompress`` of files with model id ``cgdm`` come here from :mod:`cgdm.cli_codec`, with all their
arguments. Imports :mod:`cgdm.model` (torch) at the top, so it is imported only for such files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cgdm import bitstream as bs
from cgdm.cli_util import add_max_pixels_argument, fail, one_line, write_and_report
from cgdm.imageio import ImageReadError, load_image, save_png
from cgdm.model import CGDM
from cgdm.sampling_options import SamplingOptions
from cgdm.variants import VARIANTS, Variant
from cgdm.zoo import CheckpointError, WeightsUnavailable

__all__ = ["add_sampling_arguments", "compress_main", "decompress_main"]


def add_sampling_arguments(p) -> None:
    """Options of the diffusion decoder, shared by the CLI and the benchmark."""
    d = SamplingOptions()
    p.add_argument("--variant", default="full", help=f"one of {sorted(VARIANTS)} (default: full); no_consistency / "
                                                     "no_sff need the decoder trained with that variant")
    p.add_argument("--steps", type=int, default=d.steps, help=f"DDIM steps (default {d.steps})")
    p.add_argument("--t0", type=int, default=d.t0, help="start timestep of the sampler (default: the decoder's "
                                                       "own start, the last trained step)")
    p.add_argument("--seed", type=int, default=d.seed, help="decode seed, stored in the file (default 0)")
    p.add_argument("--tile", type=int, default=d.tile, help=f"patch size in pixels (default {d.tile})")
    p.add_argument("--overlap", type=int, default=d.overlap, help=f"patch overlap in pixels (default {d.overlap})")
    p.add_argument("--guidance", type=float, default=d.guidance, help="consistency guidance strength in [0, 1]")
    p.add_argument("--bound", type=float, default=d.bound, help=f"consistency bound (default {d.bound})")
    p.add_argument("--eta", type=float, default=d.eta, help=f"sampler noise per step in [0, 1] (default {d.eta})")


def compress_main(argv: list[str] | None = None) -> int:
    """``cgdm compress IN OUT --model BASE --decoder DEC --rate K [--online-steps N] [--steps S] ...``"""
    p = argparse.ArgumentParser(prog="cgdm compress", description="Encode an image with full CGDM "
                                "(base codec + diffusion decoder settings in the file).")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", required=True, help="base codec checkpoint or zoo name")
    p.add_argument("--decoder", required=True, help="diffusion decoder checkpoint (cgdm train, stage: decoder)")
    p.add_argument("--rate", type=int, required=True, help="rate index (0 = lowest rate)")
    p.add_argument("--online-steps", type=int, default=0, help="continuous online optimisation steps (0 = off)")
    p.add_argument("--online-lr", type=float, default=0.05, help="step size of online optimisation")
    add_sampling_arguments(p)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        variant = Variant.from_name(args.variant)
        options = SamplingOptions(args.steps, args.t0, args.seed, args.tile, args.overlap, args.guidance, args.bound,
                                  args.eta)
        image = load_image(args.input)
        model = CGDM.from_checkpoints(args.model, args.decoder, args.device, options=options,
                                      boundary=variant.boundary)
        dv = model.decoder.config.variant
        if (dv.consistency, dv.sff) != (variant.consistency, variant.sff):
            raise ValueError(f"--variant {variant.name} but the decoder checkpoint is {dv.name!r}")
        t = time.perf_counter()
        data = model.compress(image, args.rate, online_steps=args.online_steps, lr=args.online_lr)
        seconds = time.perf_counter() - t
    except (ImageReadError, CheckpointError, WeightsUnavailable, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    write_and_report(args.output, data, image.shape, args.rate, seconds)
    return 0


def decompress_main(argv: list[str] | None = None) -> int:
    """``cgdm decompress IN.cgdm OUT.png --model BASE --decoder DEC``: decoding settings come from the file."""
    p = argparse.ArgumentParser(prog="cgdm decompress", description="Decode a full-CGDM .cgdm file to PNG.")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", required=True, help="base codec checkpoint or zoo name used to encode the file")
    p.add_argument("--decoder", required=True, help="diffusion decoder checkpoint used to encode the file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--progress", action="store_true", help="show a progress bar over sampling steps")
    add_max_pixels_argument(p)
    args = p.parse_args(argv)
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        return fail(f"{args.input}: cannot read ({exc.strerror or exc})")
    try:
        bs.check_pixel_budget(bs.read_cgdm(data)[0], args.max_pixels)  # before loading any weights
        model = CGDM.from_checkpoints(args.model, args.decoder, args.device)
        t = time.perf_counter()
        image = model.decompress(data, progress=args.progress, max_pixels=args.max_pixels)
        seconds = time.perf_counter() - t
        save_png(args.output, image)
    except (bs.BitstreamError, CheckpointError, WeightsUnavailable, ValueError) as exc:
        return fail(str(exc))
    except MemoryError:
        return fail("out of memory while decoding; free memory or lower the limit that stopped it")
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: exit 2 and one line, never a traceback
        return fail(one_line(exc))
    print(f"{args.output}: {image.shape[1]}x{image.shape[0]}, {seconds:.2f} s")
    return 0
