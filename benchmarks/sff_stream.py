"""Does the SFF stream carry information, and does full CGDM gain from it? Decoders compared on Kodak.

    python benchmarks/sff_stream.py                                  # the shipped full and no_sff decoders
    python benchmarks/sff_stream.py --decoder stream=PATH.pth ...    # plus decoders trained with a stream
        [--images 24] [--threads 2]

A decoder trained with ``sff_stream_dim > 0`` (:class:`cgdm.fusion.SFFStream`) makes the encoder send a
short vector computed from the image and its base reconstruction as the file's ``sff`` section; the fusion
reads it at every decoder stage of the U-Net. Train one with the quick recipe plus the stream, e.g.::

    cgdm train --name cgdm_decoder --out stream.pth --require cgdm_base=zoo/cgdm_base.pt --spec \\
      '{"trainer": "cgdm.train_diffusion:train_decoder", "requires": ["cgdm_base"], "params": {"variant": "full",
        "steps": 1200, "batch_size": 8, "patch_size": 128, "seed": 0, "perceptual": "none", "sff_stream_dim": 8}}'

(``sff_rate_pixels`` sets how many pixels the stream's bits are spread over in the rate term: the default is
the 128 x 128 training crop, 393216 prices them as on a Kodak image, 1e9 makes the stream nearly free.)

Per decoder and rate index, on the shipped base codec (zoo/cgdm_base.pt), default decode settings (4 steps,
seed 0, tiles 256 / overlap 32), every image through real bytes: mean bpp (whole ``.cgdm`` file), mean RGB
PSNR (benchmarks/_psnr.py), SWD (:func:`cgdm.evaluation.realism.swd`, ``n_boot=0``), the mean size of the
``sff`` section, and what the stream carries: the number of distinct decoded vectors over the images and
the largest spread (max - min over images) of any of its values before quantisation. One distinct vector
means the stream is a constant: it costs bytes and tells the decoder nothing.

Saves benchmarks/results/sff_stream.json.
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

BASE = REPO / "zoo" / "cgdm_base.pt"
SHIPPED = {"shipped_full": REPO / "zoo" / "cgdm_decoder.pt", "shipped_no_sff": REPO / "zoo" / "cgdm_decoder_no_sff.pt"}


def evaluate(name: str, path: Path, images: list[np.ndarray], rates: list[int]) -> list[dict]:
    import torch

    from cgdm import bitstream as bs
    from cgdm.evaluation.realism import swd
    from cgdm.model import CGDM, load_decoder
    from cgdm.sampling_options import SamplingOptions
    from cgdm.tensors import image_to_tensor

    model = CGDM.from_checkpoints(BASE, path, options=SamplingOptions(steps=4, seed=0, tile=256, overlap=32))
    meta = load_decoder(path)[1]
    stream = model.decoder.sff_stream
    rows = []
    for r in rates:
        t0 = time.perf_counter()
        recs, bpp, ps, sff_bytes, vectors, raw = [], [], [], [], [], []
        for im in images:
            data = model.compress(im, r)
            out = model.decompress(data)
            recs.append(out)
            bpp.append(8 * len(data) / (im.shape[0] * im.shape[1]))
            ps.append(psnr(out, im))
            sections = bs.read_cgdm(data)[1]
            if stream is not None:
                sff_bytes.append(len(sections["sff"]))
                vectors.append(tuple(stream.decompress([sections["sff"]]).flatten().tolist()))
                x = image_to_tensor(im)
                with torch.no_grad():
                    x_hat = model.base(x, r)["x_hat"]
                    raw.append(stream.analyse(x * 2 - 1, x_hat * 2 - 1).flatten().numpy())
        row = {"decoder": name, "file": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path.name),
               "sff_stream_dim": meta["config"].get("sff_stream_dim", 0),
               "train_params": {k: meta["params"].get(k) for k in ("steps", "sff_stream_dim", "sff_rate_pixels")},
               "rate": r, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(ps)),
               "swd": float(swd(recs, images, n_boot=0).value)}
        if stream is not None:
            row.update(sff_bytes=float(np.mean(sff_bytes)), distinct_vectors=len(set(vectors)),
                       max_spread=float(np.ptp(np.stack(raw), axis=0).max()))
        rows.append(row)
        print(f"{name} rate {r}: bpp {row['bpp']:.4f} PSNR {row['psnr']:.3f} SWD {row['swd']:.2f}"
              + (f" sff {row['sff_bytes']:.0f} B, {row['distinct_vectors']} distinct, spread {row['max_spread']:.3f}"
                 if stream is not None else "") + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decoder", action="append", default=[], metavar="NAME=PATH",
                   help="a decoder checkpoint to compare (repeatable)")
    p.add_argument("--images", type=int, default=24, help="Kodak images (every k-th for fewer)")
    p.add_argument("--rates", default="0,1,2,3")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    from cgdm.imageio import list_images, load_image

    torch.set_num_threads(args.threads)
    decoders = dict(SHIPPED)
    for item in args.decoder:
        name, _, path = item.partition("=")
        if not path:
            p.error(f"--decoder {item!r}: expected NAME=PATH")
        decoders[name] = Path(path).resolve()
    paths = list_images(REPO / "data" / "kodak")
    images = [load_image(f) for f in paths[:: max(1, len(paths) // args.images)][: args.images]]
    rates = [int(r) for r in args.rates.split(",")]
    rows = [row for name, path in decoders.items() for row in evaluate(name, path, images, rates)]
    save("sff_stream", {"images": len(images), "rates": rates, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
