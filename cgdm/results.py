"""The one results format of the suite: a tidy table, one row per
(dataset, image, codec, rate point, metric), with provenance.

Encode jobs write *encode rows* (one per image: bytes on disk, times, paths); metric jobs turn them into
*tidy rows* (one per metric). Every table and figure is computed from the tidy rows by code.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pandas as pd

#: columns of the per-image encode table written by the encode step
ENCODE_COLUMNS = [
    "dataset", "image", "codec", "kind", "rate", "width", "height", "bytes", "bpp",
    "bitstream", "reconstruction", "original", "encode_s", "decode_s",
    "codec_version", "weights", "device", "code_revision", "config_hash", "status",
]

#: columns of the tidy results table
TIDY_COLUMNS = [
    "dataset", "image", "codec", "kind", "rate", "bpp", "metric", "value", "lower_better", "status",
    "encode_s", "decode_s", "codec_version", "weights", "device", "code_revision", "config_hash",
]

STATUS_OK = "ok"

__all__ = ["ENCODE_COLUMNS", "STATUS_OK", "TIDY_COLUMNS", "code_revision", "read_tables", "unavailable",
           "write_table"]


def unavailable(reason: str) -> str:
    """Status text of a row whose value could not be computed (value is then NaN)."""
    return f"unavailable: {reason}"


@functools.cache
def code_revision(root: str | None = None) -> str:
    """Git revision of the code (``+dirty`` when the tree has changes); ``unknown`` outside git."""
    root = root or str(Path(__file__).resolve().parent.parent)
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no",
                                "--", "cgdm", "baselines", "workflow"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("CGDM_CODE_REVISION", "unknown")


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a CSV atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def read_tables(paths) -> pd.DataFrame:
    """Concatenate CSV tables (empty frame when none)."""
    frames = [pd.read_csv(p, keep_default_na=True) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TIDY_COLUMNS)
