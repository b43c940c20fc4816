"""``cgdm train``: train one model into a checkpoint file (or install its shipped weights), and the zoo steps
``cgdm zoo-ship`` / ``cgdm zoo-extend`` / ``cgdm zoo-train``.

One command for the user and for the workflow (rule ``train_model``). The model is described by the keys of
a workflow ``models:`` entry (config/README.md), read from a YAML file (``--config``) or given inline as JSON
(``--spec``, what the workflow passes), plus where to train::

    cgdm train --config my_base.yaml [--out PATH] [--device auto] [--no-resume]
    cgdm train --name cgdm_decoder --spec '{"trainer": "cgdm.train_diffusion:train_decoder", "params": {...},
               "requires": ["cgdm_base"]}' --train-dir data/train --out resources/models/cgdm_decoder.pt
               --require cgdm_base=resources/models/cgdm_base.pt --device auto --threads 2

The file (the JSON has the same keys)::

    trainer: cgdm.train:train_base  # module:function, called as function(params, train_images, out, requires, device)
    stage: base                     # instead of trainer: base | decoder, the two CGDM trainers (STAGES);
                                    # without trainer and stage: base
    params: {steps: 1500, ...}      # the trainer's params (cgdm.train.DEFAULT_PARAMS, cgdm.train_diffusion, ...)
    out: resources/models/cgdm_base.pth
    train_images: data/train        # a folder, or a list of image files (default: data/train)
    requires: {}                    # other trained models, {name: checkpoint} (the decoder: the base codec);
                                    # a list of names (workflow entry) is given its paths with --require
    device: cpu                     # cpu, cuda or auto (default: cpu)
    threads: 2                      # torch CPU threads (default: torch's)

``gpu`` and ``zoo`` (a workflow entry's) are accepted and not used: shipped weights are installed only with
``--zoo NAME``. The flags ``--out``, ``--train-dir``, ``--require``, ``--device`` and ``--threads`` override
the file. The trainers continue an interrupted run from ``<out>.state`` when it was made with the same params
(``--resume``, the default); ``--no-resume`` trains from step 0 instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from cgdm.harness.codecs import import_object
from cgdm.imageio import list_images
from cgdm.pipeline import resolve_device, set_threads
from cgdm.results import code_revision

__all__ = ["ENTRY_KEYS", "STAGES", "train_main", "zoo_extend_main", "zoo_ship_main", "zoo_train_main"]

#: ``stage:`` shorthand (the standalone configs of the two CGDM stages) -> trainer
STAGES = {"base": "cgdm.train:train_base", "decoder": "cgdm.train_diffusion:train_decoder"}
#: the keys of a workflow ``models:`` entry (workflow/schemas/config.schema.yaml)
ENTRY_KEYS = {"trainer", "params", "requires", "threads", "gpu", "zoo"}
#: what a standalone file adds: the stage shorthand and what the workflow gives as flags
FILE_KEYS = ENTRY_KEYS | {"stage", "out", "train_images", "device"}


#: where the workflow keeps a trained model and its training benchmark: defined here only, the workflow's
#: rules take them from here (model_path / train_benchmark in workflow/rules/common.smk)
MODEL_PATH = "resources/models/{}.pt"
TRAIN_BENCHMARK = "results/benchmarks/train/{}.tsv"


class SpecError(ValueError):
    """A model spec (file, JSON or flags) that cannot be trained: the message says what is wrong."""


def _load_spec(args) -> dict:
    if args.spec is not None:
        try:
            spec = json.loads(args.spec)
        except json.JSONDecodeError as exc:
            raise SpecError(f"--spec is not JSON: {exc}") from None
        source = "--spec"
    else:
        try:
            spec = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"bad config {args.config}: {exc}") from None
        source = args.config
    if not isinstance(spec, dict):
        raise SpecError(f"{source}: expected a mapping of {sorted(FILE_KEYS)}, got {type(spec).__name__}")
    unknown = set(spec) - FILE_KEYS
    if unknown:
        raise SpecError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(FILE_KEYS)}")
    return spec


def _trainer(spec: dict) -> str:
    """The ``module:function`` of the spec: its ``trainer``, or the one its ``stage`` names."""
    stage, trainer = spec.get("stage"), spec.get("trainer")
    if stage is None:
        return trainer or STAGES["base"]
    if stage not in STAGES:
        raise SpecError(f"unknown stage {stage!r} (expected one of {sorted(STAGES)}, or a trainer: module:function)")
    if trainer is not None and trainer != STAGES[stage]:
        raise SpecError(f"stage {stage!r} is the trainer {STAGES[stage]}, but the trainer is {trainer}; give one")
    return STAGES[stage]


def _requires(spec: dict, flags: list[str]) -> dict[str, Path]:
    """``{name: checkpoint}``: the spec's mapping, or its list of names, completed by ``--require NAME=PATH``."""
    given = spec.get("requires") or {}
    if not isinstance(given, (dict, list)):
        raise SpecError(f"requires: expected {{name: checkpoint}} or a list of names, got {given!r}")
    paths = {k: Path(v) for k, v in given.items()} if isinstance(given, dict) else {}
    for flag in flags:
        name, sep, path = flag.partition("=")
        if not (sep and name and path):
            raise SpecError(f"--require {flag!r}: expected NAME=PATH")
        paths[name] = Path(path)
    missing = [name for name in given if name not in paths]
    if missing:
        raise SpecError(f"the model requires {missing}; give their checkpoints with --require NAME=PATH")
    return paths


def _train_images(args, spec: dict) -> list[Path]:
    source = args.train_dir or spec.get("train_images", "data/train")
    if isinstance(source, (list, tuple)):
        images = [Path(s) for s in source]
    elif not Path(source).is_dir():
        raise SpecError(f"train_images: {source} is not a folder")
    else:
        images = list_images(source)
    if not images:
        raise SpecError(f"no training images in {source}")
    return images


def _call(trainer: str, resume: bool):
    """The trainer function; with ``resume=False`` bound to it (a trainer without that parameter refuses)."""
    try:
        fn = import_object(trainer)
    except ImportError as exc:
        raise SpecError(str(exc)) from None
    if resume:
        return fn  # called with the five arguments alone, as the workflow always has
    if "resume" not in inspect.signature(fn).parameters:
        raise SpecError(f"the trainer {trainer} has no resume parameter; delete <out>.state to train from step 0")
    return lambda *a: fn(*a, resume=False)


def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cgdm train", description="Train one model into a checkpoint file, or install its shipped weights.",
        epilog="The spec's keys (a workflow models: entry, plus out, train_images, device, stage): the docstring "
               "of cgdm/cli_train.py and config/README.md.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE.yaml",
                     help="the model spec as a YAML file (with out, train_images, ...)")
    src.add_argument("--spec", metavar="JSON", help="the model spec inline: a workflow models: entry as JSON")
    p.add_argument("--name", help="model name, for the messages (default: the stem of --out)")
    p.add_argument("--out", type=Path, help="checkpoint to write (overrides the file's out)")
    p.add_argument("--train-dir", type=Path, help="folder of training images (overrides the file's train_images)")
    p.add_argument("--require", action="append", default=[], metavar="NAME=PATH",
                   help="checkpoint of a model this one builds on (overrides the file's requires entry)")
    p.add_argument("--zoo", metavar="NAME", help="install these shipped weights (zoo/zoo.json) instead of training")
    p.add_argument("--device", help="cpu, cuda or auto (overrides the file's device; default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads, 0 = torch's default (overrides the file's threads)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from <out>.state of an interrupted run with the same params (default); "
                        "--no-resume trains from step 0")
    args = p.parse_args(argv)

    try:
        spec = _load_spec(args)
        out = args.out or spec.get("out")
        if not out:
            raise SpecError("no checkpoint to write: give --out (or out: in the file)")
        out = Path(out)
        name = args.name or out.stem
        trainer, params = _trainer(spec), spec.get("params") or {}
        if args.zoo:
            from cgdm.zoo import install_shipped  # lazy: cgdm.zoo imports torch

            # checked against the spec the weights were trained with (the required models by name)
            install_shipped(args.zoo, {"trainer": trainer, "params": params,
                                       "requires": list(spec.get("requires") or [])}, out)
            print(f"{name}: installed the shipped weights {args.zoo!r} (zoo/zoo.json) as {out}")
            return 0
        requires = _requires(spec, args.require)
        images = _train_images(args, spec)
        train = _call(trainer, args.resume)
        set_threads((spec.get("threads") or 0) if args.threads is None else args.threads)
        train(params, images, out, requires, resolve_device(args.device or spec.get("device", "cpu")))
    except ValueError as exc:
        # SpecError, CheckpointError (shipped weights), and what the trainers refuse before training (unknown
        # params, a state written with other params, ...)
        print(f"cgdm train: error: {exc}", file=sys.stderr)
        return 2
    if not out.exists():
        raise RuntimeError(f"trainer {trainer} finished without writing {out}")
    print(f"{name}: wrote {out}")
    return 0


def zoo_extend_main(argv: list[str] | None = None) -> int:
    """Start a longer training of shipped models from their weights: for each config model, write the
    resumable state ``resources/models/MODEL.pt.state`` from its shipped file, so that ``snakemake train_zoo
    --config retrain=true`` continues from it instead of training from scratch. The entry's params must be
    the shipped ones apart from more ``steps`` and a ``restarts`` entry at the shipped steps (checked)."""
    from cgdm.zoo import SHIPPED_DIR, shipped_models  # lazy: cgdm.zoo imports torch

    p = argparse.ArgumentParser(prog="cgdm zoo-extend", description=zoo_extend_main.__doc__)
    p.add_argument("models", nargs="+", metavar="MODEL", help="config model names (with `zoo:` entries)")
    p.add_argument("--config", default="config/config.yaml", help="workflow config holding the models")
    p.add_argument("--zoo-dir", default=str(SHIPPED_DIR), help="folder of the shipped weights (default: zoo/)")
    args = p.parse_args(argv)
    entries = (yaml.safe_load(Path(args.config).read_text()) or {}).get("models", {})
    table = shipped_models(args.zoo_dir)
    for name in args.models:
        entry = entries.get(name)
        if entry is None or entry.get("zoo") not in table:
            print(f"cgdm zoo-extend: {name!r} is not a model of {args.config} with shipped weights (zoo:)",
                  file=sys.stderr)
            return 2
        module = entry["trainer"].split(":")[0]
        try:
            extend = import_object(f"{module}:extend_state")
        except ImportError:  # import_object reports a missing attribute as ImportError too
            print(f"cgdm zoo-extend: the trainer of {name!r} ({entry['trainer']}) cannot extend a run",
                  file=sys.stderr)
            return 2
        try:
            state = extend(entry.get("params", {}), Path(args.zoo_dir) / table[entry["zoo"]].file,
                           Path(MODEL_PATH.format(name)))
        except ValueError as exc:
            print(f"cgdm zoo-extend: {name}: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: training will continue from the shipped weights ({state})")
    return 0


def _ship(names: list[str], entries: dict, revision: str, extra: dict | None = None, folder: str | None = None) -> Path:
    """Copy the trained ``names`` (MODEL_PATH, timed in TRAIN_BENCHMARK) into zoo/ and rewrite zoo/zoo.json."""
    from cgdm.zoo import ship  # lazy: cgdm.zoo imports torch

    models = {}
    for name in names:
        bench = pd.read_csv(TRAIN_BENCHMARK.format(name), sep="\t")
        models[entries[name]["zoo"]] = (entries[name], Path(MODEL_PATH.format(name)),
                                        {"wall_s": round(float(bench["s"].iloc[0]), 1),
                                         "cpu_s": round(float(bench["cpu_time"].iloc[0]), 1), **(extra or {})})
    return ship(models, revision, *([folder] if folder else []))


def zoo_ship_main(argv: list[str] | None = None) -> int:
    """Workflow step of ``train_zoo``: copy freshly trained models into zoo/ and rewrite zoo/zoo.json."""
    p = argparse.ArgumentParser(prog="cgdm zoo-ship", description=zoo_ship_main.__doc__)
    p.add_argument("--retrained", action="store_true", help="the models were trained by this run (retrain: true)")
    p.add_argument("--models", required=True, help="the config's models: entries to ship, as JSON")
    p.add_argument("--revision", help="code revision the models were trained at (default: this checkout's)")
    p.add_argument("ship", nargs="*", metavar="MODEL",
                   help="config model names (resources/models/MODEL.pt, results/benchmarks/train/MODEL.tsv)")
    args = p.parse_args(argv)
    if not args.retrained:
        print("cgdm zoo-ship: train_zoo re-trains the shipped models; run `snakemake train_zoo --config "
              "retrain=true` (without it the models are the shipped ones, installed, not trained)", file=sys.stderr)
        return 2
    if not args.ship:
        print("cgdm zoo-ship: no model of the config names shipped weights (zoo:); nothing to ship")
        return 0
    manifest = _ship(args.ship, json.loads(args.models), args.revision or code_revision())
    print(f"shipped {', '.join(args.ship)} -> {manifest}")
    return 0


def _unmet(entry: dict, done, present: set[str]) -> list[str]:
    """The models ``entry`` requires that are neither trained yet (``done``) nor ``present`` already."""
    return [r for r in entry.get("requires") or [] if r not in done and r not in present]


def _order(entries: dict[str, dict], present: set[str]) -> list[str]:
    """The models in an order that trains each after the models it requires, which are trained here or
    ``present`` already (SpecError on a cycle or a required model that is neither)."""
    done: list[str] = []
    pending = dict(entries)
    while pending:
        ready = [n for n, e in pending.items() if not _unmet(e, done, present)]
        if not ready:
            missing = {n: _unmet(e, done, present) for n, e in pending.items()}
            raise SpecError(f"the models' requires are neither trained here nor in {MODEL_PATH.format('*')}: "
                            f"{missing}")
        for n in ready:
            done.append(n)
            del pending[n]
    return done


def zoo_train_main(argv: list[str] | None = None) -> int:
    """Train every model of a config that has shipped weights (`zoo:`) and ship them into zoo/, without
    Snakemake: what `snakemake train_zoo --config retrain=true` does, for a machine that has PyTorch and this
    package but not the workflow's dependencies (a rented GPU; Makefile: gpu-wheels, README: the zoo).

    Each model is one `cgdm train` process (log: logs/train/MODEL.log; resumable like it), started once the
    models it requires are trained, up to --jobs at once; its wall and CPU seconds are measured and written
    where the workflow's benchmark directive writes them, so zoo/zoo.json gets the same provenance. Nothing
    is shipped unless every model trained."""
    p = argparse.ArgumentParser(prog="cgdm zoo-train", description=zoo_train_main.__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", metavar="MODEL", help="config model names (default: every one with zoo:)")
    p.add_argument("--config", default="config/config.yaml", help="workflow config holding the models: table")
    p.add_argument("--train-dir", help="training images (default: the config's train_data)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--jobs", type=int, default=0, help="models trained at once (default: all that are ready)")
    p.add_argument("--threads", type=int, help="torch CPU threads per model (default: the entry's threads)")
    p.add_argument("--revision", help="code revision trained (default: this checkout's, or $CGDM_CODE_REVISION)")
    p.add_argument("--zoo-dir", help="folder to ship into (default: zoo/)")
    args = p.parse_args(argv)
    try:
        config = yaml.safe_load(Path(args.config).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"cgdm zoo-train: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    entries = {n: e for n, e in (config.get("models") or {}).items() if e.get("zoo")}
    unknown = [n for n in args.models if n not in entries]
    if unknown or not entries:
        print(f"cgdm zoo-train: {unknown or 'no model'} is not a model of {args.config} with shipped weights "
              f"(zoo:); those are: {sorted(entries)}", file=sys.stderr)
        return 2
    if args.models:
        entries = {n: entries[n] for n in args.models}
    # a required model that is not trained here is used as it is in resources/models/ (e.g. the installed
    # base codec, when only the decoders are retrained)
    present = {n for n in config.get("models") or {} if n not in entries and Path(MODEL_PATH.format(n)).is_file()}
    try:
        order = _order(entries, present)
    except SpecError as exc:
        print(f"cgdm zoo-train: {exc}", file=sys.stderr)
        return 2
    train_dir = args.train_dir or config.get("train_data", "data/train")
    device = resolve_device(args.device)
    jobs = args.jobs or len(order)
    done, failed, running = [], [], {}
    print(f"cgdm zoo-train: {len(order)} models on {device}, {jobs} at once: {', '.join(order)}", flush=True)
    while order or running:
        for name in [n for n in order if not _unmet(entries[n], done, present)]:
            if len(running) >= jobs:
                break
            order.remove(name)
            running[name] = (_start(name, entries[name], train_dir, device, args.threads), time.monotonic())
        time.sleep(0.2)
        for name, (proc, t0) in list(running.items()):
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            del running[name]
            wall, cpu = time.monotonic() - t0, usage.ru_utime + usage.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(name)
                # models that need it cannot train: dropped, and named at the end
                order = [n for n in order if name not in (entries[n].get("requires") or [])]
                print(f"{name}: FAILED after {wall:.0f} s (log: {_LOG.format(name)})", flush=True)
                continue
            bench = Path(TRAIN_BENCHMARK.format(name))
            bench.parent.mkdir(parents=True, exist_ok=True)
            # the columns zoo-ship reads, named as Snakemake's benchmark directive names them
            bench.write_text(f"s\tcpu_time\n{wall:.4f}\t{cpu:.4f}\n")
            done.append(name)
            print(f"{name}: trained in {wall:.0f} s ({cpu:.0f} CPU s)", flush=True)
    if failed or len(done) < len(entries):
        print(f"cgdm zoo-train: {failed} failed, {sorted(set(entries) - set(done) - set(failed))} not trained; "
              "nothing shipped (the finished checkpoints stay in resources/models/, and the same command "
              "continues the interrupted ones)", file=sys.stderr)
        return 1
    extra = {"note": f"cgdm zoo-train, {jobs} models at once on {_device_name(device)}"}
    manifest = _ship(done, entries, args.revision or code_revision(), extra, args.zoo_dir)
    print(f"shipped {', '.join(done)} -> {manifest}")
    return 0


_LOG = "logs/train/{}.log"


def _start(name: str, entry: dict, train_dir: str, device: str, threads: int | None) -> subprocess.Popen:
    """One `cgdm train` process for a config entry, the way the workflow's train_model rule runs it."""
    cmd = [sys.executable, "-m", "cgdm", "train", "--name", name, "--spec", json.dumps(entry),
           "--train-dir", str(train_dir), "--out", MODEL_PATH.format(name), "--device", device,
           "--threads", str(entry.get("threads", 2) if threads is None else threads)]
    cmd += [a for r in entry.get("requires") or [] for a in ("--require", f"{r}={MODEL_PATH.format(r)}")]
    Path(_LOG.format(name)).parent.mkdir(parents=True, exist_ok=True)
    with open(_LOG.format(name), "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch  # lazy: only the GPU case needs it

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device
