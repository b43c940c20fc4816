"""Figures and tables from the aggregated tidy results (the workflow's last step).

Main results::

    python -m cgdm.evaluation.report --results results/results.csv --pdf results/rd_curves.pdf \\
        --tables results/tables --anchor jpeg [--labels '{"jpeg": "JPEG (4:2:0)"}'] [--bootstrap 1000]

writes ``rd_curves.pdf`` (+ ``rd_curves-<dataset>.png``) and, in ``--tables``, ``rd_table``,
``bd_rate_table`` (+ ``bd_rate.csv``), ``runtime_table`` and ``provenance_table`` as ``.md`` and ``.tex``.

Ablations::

    python -m cgdm.evaluation.report --ablations results/ablations.csv --pdf results/ablations.pdf \\
        --tables results/tables --full cgdm --variants no_consistency=cgdm_no_consistency \\
        no_sff=cgdm_no_sff no_boundary=cgdm_no_boundary        # or --ablation-json mapping.json

writes the ablation RD curves and ``ablation_table`` (every variant at every rate point + BD-rate of
each variant against the full model). With ``--seeds results/ablation_seeds.csv`` (the re-decode study
over decode seeds, :mod:`cgdm.evaluation.studies`) the table starts with the means over seeds and the
paired differences to the full model with their intervals (:mod:`cgdm.evaluation.paired`), also written
as ``ablation_paired.csv``.

Distortion-perception curve::

    python -m cgdm.evaluation.report --dp-curve results/dp_curve.csv --pdf results/dp_curve.pdf \
        --png results/dp_curve.png --tables results/tables --full cgdm --variants no_sff=cgdm_no_sff ... \
        [--base cgdm_base]

writes the figure (PSNR vs SWD per sweep point, one line per variant) and ``dp_curve_table``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from cgdm.evaluation import bdrate, plots, studies, tables
from cgdm.evaluation.paired import dp_points, paired_differences
from cgdm.evaluation.tidy import TableError, read_tidy_table
from cgdm.results import write_table


def main_report(df, pdf: Path, tables_dir: Path, anchor: str, labels: dict, n_boot: int,
                bd_metrics: list[str] | None) -> list[Path]:
    written = [pdf, *plots.plot_rd(df, pdf, labels=labels)]
    written += tables.write(tables.rd_tables(df), tables_dir, "rd_table", "Rate-distortion results")
    if anchor and anchor in set(df["codec"]):
        bd = bdrate.bd_rate_table(df, anchor, metrics=bd_metrics, n_boot=n_boot)
        write_table(bd, tables_dir / "bd_rate.csv")
        written.append(tables_dir / "bd_rate.csv")
        bd_blocks = tables.bd_tables(bd)
    else:
        why = f"anchor codec {anchor!r} has no results" if anchor else "no anchor codec configured (report.anchor)"
        print(f"[report] no BD-rate: {why}", file=sys.stderr)
        bd_blocks = [tables.Table(pd.DataFrame({"BD-rate": [tables.NA]}), "BD-rate", [why])]
    written += tables.write(bd_blocks, tables_dir, "bd_rate_table", f"BD-rate vs {anchor or '(no anchor)'}")
    written += tables.write(tables.runtime_tables(df), tables_dir, "runtime_table", "Coding time")
    written += tables.write(tables.provenance_tables(df), tables_dir, "provenance_table", "Provenance")
    return written


def ablation_report(df, pdf: Path, tables_dir: Path, variants: dict[str, str], labels: dict, n_boot: int,
                    bd_metrics: list[str] | None, seeds: pd.DataFrame | None = None) -> list[Path]:
    if "full" not in variants:
        raise ValueError("the ablation mapping needs a 'full' entry (--full CODEC)")
    labels = {**{codec: variant for variant, codec in variants.items()}, **labels}
    written = [pdf, *plots.plot_rd(df, pdf, labels=labels, title="Ablations")]
    bd = bdrate.bd_rate_table(df, variants["full"], metrics=bd_metrics, methods=("akima",), n_boot=n_boot,
                              codecs=[c for v, c in variants.items() if v != "full"])
    blocks = tables.ablation_tables(df, variants, bd)
    if seeds is not None:
        paired = paired_differences(seeds, variants)
        write_table(paired, tables_dir / "ablation_paired.csv")
        written.append(tables_dir / "ablation_paired.csv")
        blocks = tables.ablation_seed_tables(paired, seeds, variants) + [
            tables.Table(b.frame, b.caption.replace("every variant at every rate point",
                                                    "every variant at every rate point, encoded decode seed"), b.notes)
            for b in blocks]
    written += tables.write(blocks, tables_dir, "ablation_table", "Ablations")
    return written


def dp_curve_report(df, pdf: Path, png: Path, tables_dir: Path, variants: dict[str, str], base: str | None,
                    labels: dict) -> list[Path]:
    points = dp_points(df, variants, base)
    if points.empty:
        raise ValueError("the D-P study table has none of the given codecs")
    labels = {**{codec: variant for variant, codec in variants.items()}, **({base: "base codec"} if base else {}),
              **labels}
    written = plots.plot_dp_curve(points, pdf, png, labels=labels)
    write_table(points, tables_dir / "dp_curve_points.csv")
    written.append(tables_dir / "dp_curve_points.csv")
    written += tables.write(tables.dp_curve_tables(points), tables_dir, "dp_curve_table", "Distortion-perception sweep")
    return written


def _json_arg(value: str) -> dict:
    """Inline JSON (starting with ``{``) or the path of a JSON file."""
    return json.loads(value if value.lstrip().startswith("{") else Path(value).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.report", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", type=Path, help="aggregated tidy CSV (main results)")
    src.add_argument("--ablations", type=Path, help="aggregated tidy CSV of the ablation codecs")
    src.add_argument("--dp-curve", type=Path, help="study table of the distortion-perception sweep")
    p.add_argument("--seeds", type=Path, default=None,
                   help="ablations: study table of the decode-seed re-decodes (paired differences to full)")
    p.add_argument("--png", type=Path, default=None, help="dp-curve: PNG copy of the figure")
    p.add_argument("--base", default=None, help="dp-curve: reference codec without diffusion (e.g. cgdm_base)")
    p.add_argument("--pdf", required=True, type=Path, help="RD curves PDF (PNG copies go next to it)")
    p.add_argument("--tables", required=True, type=Path, help="folder for the Markdown / LaTeX tables")
    p.add_argument("--anchor", nargs="?", default="", help="codec BD-rates are computed against")
    p.add_argument("--bd-metrics", default="", help="comma-separated metrics for BD-rate (default: all)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for BD-rate intervals")
    p.add_argument("--labels", default=None,
                   help='codec labels for the figure legends: a JSON file or inline JSON {"jpeg": "JPEG (4:2:0)"}')
    p.add_argument("--full", default=None, help="ablations: codec name of the full model")
    p.add_argument("--variants", nargs="*", default=[], metavar="VARIANT=CODEC", help="ablations: variant codecs")
    p.add_argument("--ablation-json", type=Path, default=None,
                   help='ablations: JSON {"full": codec, "no_consistency": codec, ...} instead of --full/--variants')
    args = p.parse_args(argv)

    labels = _json_arg(args.labels) if args.labels else {}
    bd_metrics = [m for m in args.bd_metrics.split(",") if m] or None
    source = args.results or args.ablations or args.dp_curve
    try:
        df = studies.read_study_table(source) if args.dp_curve else read_tidy_table(source)
        seeds = studies.read_study_table(args.seeds) if args.seeds else None
    except TableError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    if df.empty:
        print(f"report: {source} has no rows", file=sys.stderr)
        return 2
    if args.results:
        written = main_report(df, args.pdf, args.tables, args.anchor or "", labels, args.bootstrap, bd_metrics)
    else:
        variants = _json_arg(str(args.ablation_json)) if args.ablation_json else {}
        if args.full:
            variants = {"full": args.full, **{k: v for k, v in variants.items() if k != "full"}}
        for spec in args.variants:
            if "=" not in spec:
                p.error(f"--variants takes VARIANT=CODEC, got {spec!r}")
            k, v = spec.split("=", 1)
            variants[k] = v
        if "full" not in variants:
            p.error("ablations need the full model: --full CODEC or a 'full' key in --ablation-json")
        if args.dp_curve:
            png = args.png or args.pdf.with_suffix(".png")
            written = dp_curve_report(df, args.pdf, png, args.tables, variants, args.base, labels)
        else:
            written = ablation_report(df, args.pdf, args.tables, variants, labels, args.bootstrap, bd_metrics,
                                      seeds=seeds)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
