"""Re-decode studies: the bitstreams already encoded, decoded again under other decoder settings.

A full-CGDM file stores its decoding settings (seed, guidance, bound, ...) in its ``decoder`` section
(:mod:`cgdm.redecode`), so a study that varies only those settings does not re-encode: it rewrites the
settings of the files written by the encode step and decodes them. Two studies use this:

* ``ablations``: full CGDM and every ablation variant decoded with several decode seeds (config
  ``ablations.seeds``), so the table can give per-image paired differences to full CGDM with confidence
  intervals (:func:`cgdm.evaluation.paired.paired_differences`);
* ``dp_curve``: at one rate point, full CGDM and every variant decoded at several (guidance, bound)
  points: the distortion-perception trade-off (:func:`cgdm.evaluation.paired.dp_points`), with the base
  codec as a reference.

The statistics of the resulting tables (paired differences, D-P points) are in
:mod:`cgdm.evaluation.paired`; this module produces the tables.

Workflow steps (CLI sub-commands, one job per (study, dataset, codec, rate point))::

    python -m cgdm.evaluation.studies decode --encode-csv results/encoded/D/C/R/encode.csv --study S \\
        --entry JSON --model ROLE=PATH ... --settings JSON --out-dir DIR --out decode.csv
    python -m cgdm.evaluation.studies metrics --decode-csv decode.csv --out metrics.csv --metrics psnr,...
    python -m cgdm.evaluation.studies aggregate --out results/ablation_seeds.csv IN.csv ...

``--settings`` is a JSON list of ``{"name": str, "overrides": {field: value}, "point": int}`` (``point``
only in the D-P study; ``"dither": s`` adds white noise of s grey levels to the setting's pixels: the D-P
study's noise-alone control on the base codec, :func:`cgdm.evaluation.realism.dither`). For each image
and setting the decode step writes the rewritten bitstream
(bpp from its size on disk, as everywhere in the suite) and decodes it, except when the setting decodes
to pixels that already exist: the same effective settings as the encoded file (then the encode step's
reconstruction is used, ``decoded_as = encode``) or as an earlier setting of the job (``decoded_as =
<that setting>``); "effective" leaves out settings without effect (:func:`cgdm.redecode.decode_key`:
guidance and bound without the consistency branch, bound at guidance 0).

Rows: the tidy columns (:data:`cgdm.results.TIDY_COLUMNS`, same provenance as the main results) plus
:data:`STUDY_COLUMNS`; one row per (dataset, image, codec, rate, metric, setting). Per image: the
configured per-image metrics and ``seam`` (:func:`cgdm.boundary.seam_metric` at the period of the
file's own tile size); per setting (``image = <dataset>``): SWD with its interval and levels
(:mod:`cgdm.evaluation.realism`), the ``swd`` row carrying its bootstrap samples in ``bootstrap`` so
that differences between codecs get paired intervals later (:func:`realism.paired_difference`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgdm.evaluation import DATASET_IMAGE, realism
from cgdm.evaluation.metrics import ImageMetrics
from cgdm.evaluation.tidy import (
    KEY,
    TableError,
    _read_csv,
    join_values,
    read_encode_table,
    set_row,
    tidy_rows,
    validate_tidy,
)
from cgdm.harness.codecs import CodecUnavailable, make_codec, write_bitstream
from cgdm.imageio import load_image, save_png
from cgdm.pipeline import resolve_device
from cgdm.redecode import decode_key, decoder_options, override_decoder_options
from cgdm.results import ENCODE_COLUMNS, STATUS_OK, TIDY_COLUMNS, code_revision, unavailable, write_table

#: columns a study adds to the tidy columns
STUDY_COLUMNS = ["study", "setting", "seed", "point", "overrides", "options", "decoded_as", "bootstrap"]
#: columns of the decode step's table (an encode table per setting)
DECODE_COLUMNS = ENCODE_COLUMNS + STUDY_COLUMNS[:-1]
#: columns of a study's tidy table
STUDY_TIDY_COLUMNS = TIDY_COLUMNS + STUDY_COLUMNS
STUDY_KEY = KEY + ["setting"]
STUDIES = ("ablations", "dp_curve")
#: the per-image seam metric (mean step across tile borders / mean step elsewhere, 1 = no seams)
SEAM = "seam"
_TEXT = ["study", "setting", "overrides", "options", "decoded_as", "bootstrap"]


# ---------------------------------------------------------------------------------------------------
# decode step
# ---------------------------------------------------------------------------------------------------
def _decode_key(data: bytes):
    """What decides the decoded pixels of ``data`` besides its image sections (bytes without settings:
    the bytes themselves)."""
    try:
        return decode_key(data)
    except ValueError:
        return ("bytes", hashlib.sha256(data).hexdigest())


def _options_json(data: bytes) -> str:
    try:
        return json.dumps(dataclasses.asdict(decoder_options(data)), sort_keys=True)
    except ValueError:
        return ""  # no decoder section (base codec)


def check_settings(settings: list[dict]) -> list[dict]:
    names = [s.get("name") for s in settings]
    if not settings or any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"settings need unique non-empty names, got {names}")
    for s in settings:
        if not isinstance(s.get("overrides", {}), dict):
            raise ValueError(f"setting {s['name']!r}: overrides must be a mapping, got {s['overrides']!r}")
        sigma = s.get("dither", 0)
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 <= sigma <= 64:
            raise ValueError(f"setting {s['name']!r}: dither must be a noise level in [0, 64] grey levels, "
                             f"got {sigma!r}")
    return settings


def redecode(encode: pd.DataFrame, settings: list[dict], codec, out_dir: Path, study: str,
             config_hash: str = "", progress: bool = True) -> pd.DataFrame:
    """Decode every encoded image of ``encode`` under every setting (see the module docstring) ->
    rows with :data:`DECODE_COLUMNS`. ``codec``: the :class:`cgdm.harness.codecs.Codec` that wrote the files,
    or None when it is unavailable (rows then keep the encode rows' status)."""
    check_settings(settings)
    rows = []
    records = sorted(encode.to_dict("records"), key=lambda r: str(r["image"]))
    desc = f"redecode {records[0]['codec']}@{records[0]['rate']}" if records else "redecode"
    for rec in tqdm(records, desc=desc, unit="img", disable=not progress, file=sys.stderr):
        image = str(rec["image"])
        if rec["status"] != STATUS_OK or codec is None:
            for s in settings:
                rows.append(dict(rec, **_study_fields(study, s, ""), decoded_as="",
                                 status=rec["status"] if rec["status"] != STATUS_OK else
                                 unavailable("the codec cannot decode here")))
            continue
        data = Path(rec["bitstream"]).read_bytes()
        shape = (int(rec["height"]), int(rec["width"]))
        # pixels decoded so far, by what decides them: the encode step's reconstruction first
        decoded = {_decode_key(data): (rec["reconstruction"], "encode", rec["decode_s"], rec["code_revision"])}
        for s in settings:
            new = override_decoder_options(data, s.get("overrides") or {})
            folder = out_dir / s["name"]
            info = write_bitstream(folder / Path(rec["bitstream"]).name, new, shape)
            key = _decode_key(new)
            if key not in decoded:
                t = time.perf_counter()
                out = codec.decode(info.path.read_bytes())  # what is decoded is what is stored
                seconds = time.perf_counter() - t
                if out.shape[:2] != shape:
                    raise RuntimeError(f"{codec.name}: decoded shape {out.shape} != {shape} for {info.path}")
                png = folder / f"{image}.png"
                save_png(png, out)
                decoded[key] = (str(png), s["name"], seconds, code_revision())
            recon, source, seconds, revision = decoded[key]
            if s.get("dither"):
                # the noise-alone control: these pixels plus white noise (realism.dither), seeded per image
                png = folder / f"{image}.png"
                save_png(png, realism.dither(load_image(recon), float(s["dither"]), image))
                recon, source = str(png), f"{source}+dither"
            rows.append(dict(rec, bytes=info.num_bytes, bpp=info.bpp, bitstream=str(info.path),
                             reconstruction=recon, decode_s=seconds, code_revision=revision,
                             config_hash=config_hash or rec["config_hash"], status=STATUS_OK,
                             **_study_fields(study, s, _options_json(new)), decoded_as=source))
    return pd.DataFrame(rows, columns=DECODE_COLUMNS)


def _study_fields(study: str, setting: dict, options: str) -> dict:
    seed = json.loads(options).get("seed") if options else None
    overrides = {**(setting.get("overrides") or {}), **({"dither": setting["dither"]} if setting.get("dither") else {})}
    return dict(study=study, setting=setting["name"], seed=seed, point=setting.get("point"),
                overrides=json.dumps(overrides, sort_keys=True), options=options)


def read_decode_table(path) -> pd.DataFrame:
    df = read_encode_table(path)
    missing = [c for c in DECODE_COLUMNS if c not in df.columns]
    if missing:
        raise TableError(f"{path}: not a re-decode table (missing columns {missing})")
    for col in _TEXT[:-1]:
        df[col] = df[col].astype("string").fillna("")
    return df


# ---------------------------------------------------------------------------------------------------
# metrics step
# ---------------------------------------------------------------------------------------------------
def seam_value(image: np.ndarray, options: str) -> tuple[float, str]:
    """``seam_metric`` of a decoded image at the period of its file's tile size."""
    from cgdm.boundary import seam_metric  # lazy: cgdm.boundary imports torch; only seam rows need it

    tile = json.loads(options).get("tile") if options else None
    if not tile:
        return np.nan, unavailable("no tiles: the file has no decoder settings (decoded without tiling)")
    if not image.flags.writeable:  # torch warns on read-only memory
        image = image.copy()
    try:
        return float(seam_metric(image, period=int(tile))), STATUS_OK
    except ValueError as exc:
        return np.nan, unavailable(f"seam: {exc}")


def study_metrics(decode: pd.DataFrame, metrics, progress: bool = True, swd_kwargs: dict | None = None
                  ) -> pd.DataFrame:
    """Tidy rows with :data:`STUDY_COLUMNS` of a decode table: ``metrics`` (an
    :class:`cgdm.evaluation.metrics.ImageMetrics`) and the seam per image, SWD per setting. Identical
    reconstructions (settings decoded as another) are measured once."""
    names = [*metrics.names, SEAM]
    lower = {**metrics.lower_better, SEAM: True}
    cache: dict[str, dict] = {}
    rows = []
    records = decode.to_dict("records")
    for rec in tqdm(records, desc="study metrics", unit="img", disable=not progress, file=sys.stderr):
        if rec["status"] != STATUS_OK:
            values = {n: (np.nan, rec["status"]) for n in names}
        else:
            key = f"{rec['reconstruction']}\0{rec['options']}"
            if key not in cache:
                recon, orig = load_image(rec["reconstruction"]), load_image(rec["original"])
                cache[key] = {**metrics(recon, orig), SEAM: seam_value(recon, rec["options"])}
            values = cache[key]
        extra = {c: rec.get(c) for c in STUDY_COLUMNS if c != "bootstrap"}
        rows += [dict(r, **extra, bootstrap="") for r in tidy_rows(rec, values, lower)]
    rows += _swd_rows(decode, swd_kwargs or {})
    return pd.DataFrame(rows, columns=STUDY_TIDY_COLUMNS)


def _swd_rows(decode: pd.DataFrame, swd_kwargs: dict) -> list[dict]:
    rows, cache = [], {}
    groups = decode.groupby(["dataset", "codec", "rate", "setting"], sort=False)
    for (dataset, codec, rate, setting), g in groups:
        g = g.sort_values("image")  # the same order in every group: bootstrap resamples are paired
        ok = g[g["status"] == STATUS_OK]
        sizes = ok[["height", "width"]].apply(pd.to_numeric, errors="coerce").dropna()
        levels = min((realism.num_levels(h, w) for h, w in zip(sizes["height"], sizes["width"], strict=True)),
                     default=0)
        names = realism.metric_names(levels)
        boot = ""
        if len(ok) < len(g) or ok.empty:
            bad = g.loc[g["status"] != STATUS_OK, "status"]
            status = bad.iloc[0] if ok.empty else unavailable(f"{len(bad)} of {len(g)} images have no "
                                                              f"reconstruction ({bad.iloc[0]})")
            values = {m: (np.nan, status) for m in names}
        else:
            key = tuple(ok["reconstruction"])
            if key not in cache:
                try:
                    cache[key] = realism.swd([load_image(p) for p in ok["reconstruction"]],
                                             [load_image(p) for p in ok["original"]], **swd_kwargs)
                except realism.RealismError as exc:
                    cache[key] = exc
            res = cache[key]
            if isinstance(res, Exception):
                values = {m: (np.nan, unavailable(f"swd: {res}")) for m in names}
            else:
                v = res.as_metrics()
                values = {m: (v[m], STATUS_OK) if np.isfinite(v.get(m, np.nan))
                          else (np.nan, unavailable(f"{m} undefined for {res.n_images} image(s)")) for m in names}
                boot = json.dumps([round(float(x), 6) for x in res.boot])
                print(f"[swd] {dataset} {codec}@{rate} {setting}: {res.value:.2f} [{res.ci_low:.2f}, "
                      f"{res.ci_high:.2f}] over {res.n_images} images", file=sys.stderr)
        first = g.iloc[0]
        base = dict(set_row(dataset, codec, rate, g, DATASET_IMAGE),
                    **{c: first[c] for c in ("study", "setting", "seed", "point", "overrides", "options")},
                    decoded_as=join_values(g["decoded_as"]))
        for m, (value, status) in values.items():
            rows.append(dict(base, metric=m, value=value if status == STATUS_OK else np.nan, lower_better=True,
                             status=status, bootstrap=boot if m == realism.SWD and status == STATUS_OK else ""))
    return rows


# ---------------------------------------------------------------------------------------------------
# the study table
# ---------------------------------------------------------------------------------------------------
def validate_study(df: pd.DataFrame, source: str = "study table") -> pd.DataFrame:
    missing = [c for c in STUDY_TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise TableError(f"{source}: not a study table (missing columns {missing})")
    extra = [c for c in df.columns if c not in STUDY_TIDY_COLUMNS]
    if extra:
        raise TableError(f"{source}: unexpected columns {extra}; study tables have exactly {STUDY_TIDY_COLUMNS}")
    df = validate_tidy(df[STUDY_TIDY_COLUMNS], source=source, key=STUDY_KEY)
    for col in _TEXT:
        df[col] = df[col].astype("string").fillna("")
    for col in ("seed", "point"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def read_study_table(path) -> pd.DataFrame:
    df = _read_csv(path, STUDY_TIDY_COLUMNS, "study table")
    return validate_study(df, source=str(path))


def aggregate(paths) -> pd.DataFrame:
    frames = [f for f in (read_study_table(p) for p in paths) if len(f)]
    if not frames:
        return pd.DataFrame(columns=STUDY_TIDY_COLUMNS)
    df = validate_study(pd.concat(frames, ignore_index=True), source="aggregated study tables")
    rate_num = pd.to_numeric(df["rate"], errors="coerce")
    return (df.assign(_rate=rate_num)
              .sort_values(["dataset", "codec", "_rate", "rate", "point", "seed", "setting", "image", "metric"],
                           kind="stable", na_position="first")
              .drop(columns="_rate").reset_index(drop=True))


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------
def _decode_main(args) -> int:
    if args.threads:
        import torch  # lazy: torch only to set its thread count when asked

        torch.set_num_threads(args.threads)
    encode = read_encode_table(args.encode_csv)
    settings = check_settings(json.loads(args.settings))
    entry = json.loads(args.entry)
    models = dict(m.split("=", 1) for m in args.model)
    codec = None
    if (encode["status"] == STATUS_OK).any():
        name = str(encode["codec"].iloc[0])
        codec = make_codec(name, entry, models, resolve_device(args.device))
        try:
            codec.check_available()
        except CodecUnavailable as exc:
            print(f"[{name}] cannot decode: {exc}", file=sys.stderr)
            codec = None
    df = redecode(encode, settings, codec, args.out_dir, args.study, args.config_hash)
    write_table(df, args.out)
    n = df.loc[df["status"] == STATUS_OK]
    fresh = (n["decoded_as"] == n["setting"]).sum()
    print(f"redecode: {len(df)} rows, {fresh} decoded, {len(n) - fresh} reused -> {args.out}", file=sys.stderr)
    return 0


def _metrics_main(args) -> int:
    if args.threads:
        import torch  # lazy: torch only to set its thread count when asked

        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    metrics = ImageMetrics(names, device=args.device, cache=args.cache)
    for name, reason in metrics.unavailable.items():
        print(f"[metrics] {name} unavailable: {reason}", file=sys.stderr)
    write_table(study_metrics(read_decode_table(args.decode_csv), metrics), args.out)
    return 0


def _aggregate_main(args) -> int:
    df = aggregate(args.inputs)
    write_table(df, args.out)
    print(f"aggregate: {len(df)} rows from {len(args.inputs)} files -> {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.studies", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decode", help="re-decode one (dataset, codec, rate point) under several settings")
    d.add_argument("--encode-csv", required=True, type=Path)
    d.add_argument("--study", required=True, choices=STUDIES)
    d.add_argument("--entry", required=True, help="the codec's config entry as JSON")
    d.add_argument("--model", action="append", default=[], metavar="ROLE=PATH")
    d.add_argument("--settings", required=True, help='JSON list of {"name", "overrides", "point"}')
    d.add_argument("--out-dir", required=True, type=Path)
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--device", default="cpu")
    d.add_argument("--config-hash", default="")
    d.add_argument("--threads", type=int, default=0)
    m = sub.add_parser("metrics", help="per-image metrics, seam and SWD of a re-decode table")
    m.add_argument("--decode-csv", required=True, type=Path)
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--metrics", default="psnr", help="comma-separated pyiqa per-image metrics")
    m.add_argument("--device", default="cpu")
    m.add_argument("--cache", type=Path, default=None)
    m.add_argument("--threads", type=int, default=0)
    a = sub.add_parser("aggregate", help="concatenate and check study tables")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("inputs", nargs="+", type=Path)
    args = p.parse_args(argv)
    try:
        return {"decode": _decode_main, "metrics": _metrics_main, "aggregate": _aggregate_main}[args.command](args)
    except (TableError, ValueError) as exc:
        print(f"studies {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
