"""Workflow step: encode the images of one dataset with one codec at one rate point.

Every image is really written to a file; bpp = 8 * (size of that file) / pixels. The reconstruction is
saved as PNG for the metric step. One CSV row per image (``cgdm.results.ENCODE_COLUMNS``).

A codec that cannot run here (binary missing, weights unreachable) yields rows whose status says why,
so the workflow goes on and the tables show the gap instead of failing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from cgdm.harness.codecs import CodecUnavailable, make_codec, write_bitstream
from cgdm.imageio import list_images, load_image, save_png
from cgdm.results import ENCODE_COLUMNS, STATUS_OK, code_revision, unavailable, write_table


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch  # lazy: torch takes seconds to import; only this path needs it

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(n: int) -> None:
    """Use exactly the cores the scheduler gave the job: oversubscribed torch threads on a busy
    machine are several times slower than one thread."""
    if n > 0:
        import torch  # lazy: torch takes seconds to import; only this path needs it

        torch.set_num_threads(n)


def _encode_one(codec, path: Path, rate_value, out_dir: Path, common: dict) -> dict:
    image = load_image(path)
    t0 = time.perf_counter()
    data = codec.encode(image, rate_value)
    t1 = time.perf_counter()
    info = write_bitstream(out_dir / f"{path.stem}{codec.extension}", data, image.shape)
    # Decode from the file on disk, not from the in-memory bytes: what is measured is what is stored.
    t2 = time.perf_counter()
    recon = codec.decode(info.path.read_bytes())
    t3 = time.perf_counter()
    if recon.shape != image.shape:
        raise RuntimeError(f"{codec.name}: decoded shape {recon.shape} != input shape {image.shape} for {path}")
    recon_path = out_dir / f"{path.stem}.png"
    save_png(recon_path, recon)
    return dict(common, image=path.stem, width=image.shape[1], height=image.shape[0],
                bytes=info.num_bytes, bpp=info.bpp, bitstream=str(info.path),
                reconstruction=str(recon_path), original=str(path),
                encode_s=t1 - t0, decode_s=t3 - t2, status=STATUS_OK)


def encode_images(
    *,
    dataset: str,
    images: list[Path],
    codec_name: str,
    entry: dict,
    rate_label: str,
    rate_value,
    out_dir: Path,
    model_paths: dict[str, str] | None = None,
    device: str = "cpu",
    config_hash: str = "",
) -> pd.DataFrame:
    """Encode + decode ``images``; write bitstreams and reconstructions under ``out_dir``."""
    device = resolve_device(device)
    common = dict(dataset=dataset, codec=codec_name, rate=rate_label, device=device,
                  code_revision=code_revision(), config_hash=config_hash)
    codec = make_codec(codec_name, entry, model_paths, device)
    common["kind"] = codec.kind
    try:
        codec.check_available()
        common.update(codec_version=codec.version, weights=codec.weights)
        rows = [_encode_one(codec, path, rate_value, out_dir, common) for path in
                tqdm(images, desc=f"{codec_name}@{rate_label} {dataset}", unit="img", file=sys.stderr)]
    except CodecUnavailable as exc:
        # Missing binaries/weights may only show when a rate's model is loaded: the whole rate point
        # is then reported as unavailable, with the reason, and the workflow goes on.
        print(f"[{codec_name}] skipped: {exc}", file=sys.stderr)
        rows = [dict(common, image=p.stem, original=str(p), status=unavailable(str(exc))) for p in images]
    return pd.DataFrame(rows, columns=ENCODE_COLUMNS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cgdm encode", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--images-dir", required=True, type=Path, help="folder with the dataset's images")
    p.add_argument("--codec", required=True, help="codec name (key of the config's codecs table)")
    p.add_argument("--entry", required=True, help="the codec's config entry as JSON")
    p.add_argument("--rate", required=True, help="rate label (index into the entry's rates)")
    p.add_argument("--model", action="append", default=[], metavar="ROLE=PATH", help="trained model files")
    p.add_argument("--out-dir", required=True, type=Path, help="where bitstreams and reconstructions go")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--config-hash", default="")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)
    set_threads(args.threads)

    entry = json.loads(args.entry)
    rates = entry.get("rates", [])
    try:
        rate_value = rates[int(args.rate)]
    except (ValueError, IndexError):
        p.error(f"rate {args.rate!r} is not an index into the codec's rates {rates}")
    models = dict(m.split("=", 1) for m in args.model)
    images = list_images(args.images_dir)
    if args.limit:
        images = images[: args.limit]
    if not images:
        print(f"cgdm encode: no images in {args.images_dir}", file=sys.stderr)
        return 2
    df = encode_images(dataset=args.dataset, images=images, codec_name=args.codec, entry=entry,
                       rate_label=args.rate, rate_value=rate_value, out_dir=args.out_dir,
                       model_paths=models, device=args.device, config_hash=args.config_hash)
    write_table(df, args.out_csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
