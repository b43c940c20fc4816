"""Concatenate tidy CSVs (per-image metrics, FID/KID rows, published curves) into one checked table.

Each input must have every ``TIDY_COLUMNS`` column (extra columns are an error: they would be silently
lost); the result is checked as a whole (``status == "ok"`` exactly when a value is present, no row twice)
and sorted by dataset, codec, rate point, image and metric, so the same inputs give the same bytes.

CLI (a workflow step)::

    python -m cgdm.evaluation.aggregate --out results/results.csv IN1.csv IN2.csv ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cgdm.evaluation.tidy import TableError, read_tidy_table, validate_tidy
from cgdm.results import TIDY_COLUMNS, write_table


def aggregate(paths: list[str | Path]) -> pd.DataFrame:
    frames = []
    for path in paths:
        df = read_tidy_table(path)
        extra = [c for c in df.columns if c not in TIDY_COLUMNS]
        if extra:
            raise TableError(f"{path}: unexpected columns {extra}; tidy tables have exactly {TIDY_COLUMNS}")
        frames.append(df[TIDY_COLUMNS])
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    df = validate_tidy(pd.concat(frames, ignore_index=True), source="aggregated inputs")
    rate_num = pd.to_numeric(df["rate"], errors="coerce")
    return (df.assign(_rate=rate_num)
              .sort_values(["dataset", "codec", "_rate", "rate", "image", "metric"], kind="stable")
              .drop(columns="_rate").reset_index(drop=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.aggregate", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("inputs", nargs="+", type=Path, help="tidy CSVs")
    args = p.parse_args(argv)
    try:
        df = aggregate(args.inputs)
    except TableError as exc:
        print(f"aggregate: {exc}", file=sys.stderr)
        return 2
    write_table(df, args.out)
    ok = (df["status"] == "ok").sum()
    print(f"aggregate: {len(df)} rows ({ok} ok) from {len(args.inputs)} files -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
