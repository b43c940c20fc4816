"""``cgdm download``: the command line of the datasets (used by the workflow's data rule).

Prepares a dataset with :func:`cgdm.datasets.prepare` (download, verify, extract) and writes the marker
file the workflow rule waits for; ``--list`` prints the registry (:mod:`cgdm.dataset_registry`)::

    cgdm download NAME [--root DIR] [--mirror URL_OR_DIR] [--marker FILE]
    cgdm download mydata --path some/folder      # a user-defined folder of images
    cgdm download --list [NAME]
"""

from __future__ import annotations

import argparse
import json
import sys

from cgdm.dataset_checksums import SHA256SUMS
from cgdm.dataset_registry import REGISTRY, DatasetError, get
from cgdm.datasets import DEFAULT_ROOT, TIMEOUT_S, prepare
from cgdm.imageio import atomic_write_bytes, list_images

__all__ = ["download_main", "format_registry"]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_registry(name: str | None = None) -> str:
    """Text table of the registry, or the file list (URL, bytes, sha256) of one dataset."""
    if name is not None:
        ds = get(name)
        lines = [f"{ds.name}: {ds.description}",
                 f"  kind: {ds.kind}   split: {ds.split}   images: {ds.n_images or '?'}   layout: {ds.layout or '-'}"]
        if ds.embedded:
            lines.append(f"  embedded copy: {ds.embedded}")
        if ds.homepage:
            lines.append(f"  homepage: {ds.homepage}")
        lines += [f"  {f.sha256}  {f.size:>12,}  {f.url}" for f in ds.files]
        return "\n".join(lines)
    rows = [("name", "split", "images", "download", "source")]
    for ds in REGISTRY.values():
        source = (ds.files[0].url if len(ds.files) == 1 else
                  f"{len(ds.files)} files from {ds.homepage}" if ds.files else "-")
        if ds.embedded:
            source = f"embedded {ds.embedded}" + (f"; else {source}" if ds.files else "")
        rows.append((ds.name, ds.split, str(ds.n_images or "?"), _human(ds.size) if ds.files else "-", source))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def download_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cgdm download",
        description="Download, verify and extract a dataset into <root>/<name>/images "
                    "(the embedded Kodak copy is verified and used in place).")
    parser.add_argument("name", nargs="?", help="dataset name (see --list)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="datasets folder (default: %(default)s)")
    parser.add_argument("--mirror", help="local folder, file:// or http(s):// base URL holding the files "
                                         "under their original names (config: data.mirror)")
    parser.add_argument("--path", help="a user-defined dataset: local folder of images (checked against "
                                       f"its {SHA256SUMS} when present)")
    parser.add_argument("--marker", help="file written after success (the workflow rule's output)")
    parser.add_argument("--list", action="store_true",
                        help="print the registry; with NAME, the files of that dataset with their sha256")
    parser.add_argument("--delete-archive", action="store_true",
                        help="delete the downloaded zip after extraction (default: keep it in <root>/downloads)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds without an answer before a request fails (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        if args.list:
            print(format_registry(args.name))
            return 0
        if not args.name:
            parser.error("give a dataset NAME (or --list)")
        spec = {"path": args.path} if args.path else None
        folder = prepare(args.name, args.root, args.mirror, spec=spec, keep_archive=not args.delete_archive,
                         timeout=args.timeout)
        images = list_images(folder)
        if args.marker:
            marker = {"dataset": args.name, "images": str(folder), "n_images": len(images),
                      "files": [p.name for p in images]}
            atomic_write_bytes(args.marker, (json.dumps(marker, indent=1) + "\n").encode())
    except DatasetError as exc:
        print(f"cgdm download: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}: {len(images)} images verified in {folder}")
    return 0
