"""No stale rows: what the rows depend on outside the workflow (metric weights, external programs) is
recorded in state files (cgdm.availability, written by workflow/rules/common.smk), so that making a metric
or a codec available reruns exactly the affected jobs.

The probes are tested here directly (fast); the reruns on a clone of the session's real .test run (slow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import textwrap
import time

import pandas as pd
import pytest

from cgdm import availability as A
from cgdm import weights as W

from helpers.evaluation import seed_weights_cache
from helpers.workflow import TARGETS, clone_run, snakemake, workflow_env

LPIPS_KEYS = ("lpips_alex_v0.1", "alexnet")


# -- probes (fast) -----------------------------------------------------------------------------------


def test_write_if_changed_keeps_the_mtime(tmp_path):
    path = tmp_path / "state" / "x.json"
    assert A.write_if_changed(path, "a\n")
    old = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert not A.write_if_changed(path, "a\n")
    assert path.stat().st_mtime_ns == old
    assert A.write_if_changed(path, "b\n") and path.read_text() == "b\n"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left


def test_metric_state_follows_the_weight_files(tmp_path, monkeypatch):
    assert A.metric_state("psnr", cache=tmp_path) is None  # needs no files: no state, no extra input
    missing = A.metric_state("lpips", cache=tmp_path)
    assert missing["available"] is False and "missing" in missing["reason"]
    assert set(missing["sha256"].values()) == {None}
    paths = seed_weights_cache(tmp_path, monkeypatch, keys=LPIPS_KEYS)
    ok = A.metric_state("lpips", cache=tmp_path)
    assert ok["available"] is True and ok["reason"] == "ok"
    assert ok["sha256"] == {p.name: W.sha256_file(p) for p in paths.values()}
    # a file with the wrong content: unavailable, and the state says which
    paths["lpips_alex_v0.1"].write_bytes(b"not the weights")
    bad = A.metric_state("lpips", cache=tmp_path)
    assert bad["available"] is False and "wrong sha256" in bad["reason"]


def test_state_has_no_paths_so_moving_the_cache_reruns_nothing(tmp_path, monkeypatch):
    seed_weights_cache(tmp_path / "a", monkeypatch, keys=LPIPS_KEYS)
    first = A.state_text(A.metric_state("lpips", cache=tmp_path / "a"))
    os.rename(tmp_path / "a", tmp_path / "b")
    assert A.state_text(A.metric_state("lpips", cache=tmp_path / "b")) == first
    assert str(tmp_path) not in first


def test_hash_cache_avoids_rehashing(tmp_path, monkeypatch):
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 1000)
    cache = A.HashCache(tmp_path / "cache.json")
    digest = cache.sha256(f)
    cache.save()
    calls = []
    monkeypatch.setattr(A, "sha256_file", lambda p: calls.append(p) or "recomputed")
    assert A.HashCache(tmp_path / "cache.json").sha256(f) == digest and calls == []
    f.write_bytes(b"y" * 1001)  # new size: hashed again
    assert A.HashCache(tmp_path / "cache.json").sha256(f) == "recomputed"


def _fake_program(folder, name, body):
    path = folder / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


#: bpgenc / bpgdec stand-ins: the "bitstream" is the PNG itself (enough to run the workflow's BPG path)
FAKE_BPGENC = """
    import shutil, sys
    args = sys.argv[1:]
    shutil.copyfile(args[-1], args[args.index("-o") + 1])
"""
FAKE_BPGDEC = FAKE_BPGENC


def test_codec_state_of_external_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    entry = {"class": "baselines.classical.BPG", "rates": [30]}
    assert A.codec_state("jpeg", {"class": "baselines.classical.JPEG", "rates": [50]}) is None
    before = A.codec_state("bpg", entry)
    assert before["available"] is False and before["reason"] == "missing: encoder, decoder"
    enc = _fake_program(tmp_path, "bpgenc", FAKE_BPGENC)
    _fake_program(tmp_path, "bpgdec", FAKE_BPGDEC)
    after = A.codec_state("bpg", entry)
    assert after["available"] is True and after["sha256"]["encoder"] == W.sha256_file(enc)
    # params naming the programs by path are followed
    moved = A.codec_state("bpg", {**entry, "params": {"encoder": str(enc), "decoder": "/nonexistent/bpgdec"}})
    assert moved["sha256"]["encoder"] == after["sha256"]["encoder"] and moved["sha256"]["decoder"] is None


def test_update_states_writes_only_what_depends_on_outside(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("CGDM_WEIGHTS_CACHE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    codecs = {"jpeg": {"class": "baselines.classical.JPEG", "rates": [50]},
              "bpg": {"class": "baselines.classical.BPG", "rates": [30]},
              "zoo": {"class": "baselines.learned.CompressAIZoo", "rates": [1], "params": {"qualities": [1, 2]}}}
    paths = A.update_states(["psnr", "ms_ssim", "lpips", "fid"], codecs, root=tmp_path / "state")
    assert set(paths) == {"metric:lpips", "metric:fid", "codec:bpg", "codec:zoo"}
    zoo = json.loads((tmp_path / "state" / "codec-zoo.json").read_text())
    assert zoo["available"] is False and set(zoo["sha256"]) == {"q1", "q2"}
    # a zoo file in the torch hub cache is found by its CompressAI name
    ck = tmp_path / "th" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "bmshj2018-hyperprior-1-7eb97409.pth.tar").write_bytes(b"w")
    mtimes = {k: os.stat(p).st_mtime_ns for k, p in paths.items()}
    time.sleep(0.01)
    A.update_states(["psnr", "ms_ssim", "lpips", "fid"], codecs, root=tmp_path / "state")
    changed = {k for k, p in paths.items() if os.stat(p).st_mtime_ns != mtimes[k]}
    assert changed == {"codec:zoo"}


# -- the workflow reruns exactly the affected jobs (slow) ----------------------------------------------


SITECUSTOMIZE = """
# test only: accept the seeded random weights (their sha256 replace the official ones in the table)
import dataclasses, json, os
_table = os.environ.get("CGDM_TEST_WEIGHTS_SHA256")
if _table:
    from cgdm import weights as _W
    for _key, _sha in json.load(open(_table)).items():
        _W.WEIGHTS[_key] = dataclasses.replace(_W.WEIGHTS[_key], sha256=_sha, size=None)
"""


def _scheduled(out: str) -> tuple[list[str], list[str]]:
    """(rule of each scheduled job, output of each scheduled job) from a dry run's log."""
    return (re.findall(r"^(?:local)?rule (\w+):", out, flags=re.MULTILINE),
            re.findall(r"^\s+output: (.+)$", out, flags=re.MULTILINE))


def _rows(work, metric):
    df = pd.read_csv(work / "results" / "results.csv")
    return df[(df["metric"] == metric) & (df["kind"] != "published")]


def test_trainer_metrics_follow_the_decoders_perceptual_setting():
    decoder = "cgdm.train_diffusion:train_decoder"
    assert A.trainer_metrics({"trainer": decoder, "params": {}}) == ["lpips-vgg"]  # auto: used when cached
    assert A.trainer_metrics({"trainer": decoder, "params": {"perceptual": "adversarial+lpips"}}) == ["lpips-vgg"]
    for params in ({"perceptual": "none"}, {"perceptual": "adversarial"}, {"lpips_weight": 0}):
        assert A.trainer_metrics({"trainer": decoder, "params": params}) == []
    assert A.trainer_metrics({"trainer": "cgdm.train:train_base"}) == []


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may pay for the .test workflow run in its setup
def test_lpips_becoming_available_reruns_only_the_jobs_that_use_it(tiny_workflow_run, tmp_path, monkeypatch):
    """Every LPIPS metric job reruns and fills its rows; nothing upstream: no model retrains (the CGDM
    decoders' perceptual loss is LPIPS-VGG, not the AlexNet test metric) and nothing is re-encoded."""
    work = clone_run(tiny_workflow_run, tmp_path / "run")
    before = _rows(work, "lpips")
    assert len(before) and before["status"].str.startswith("unavailable").all()
    assert before["value"].isna().all()

    # seeded random LPIPS weights appear in the run's cache; the job processes accept their sha256
    cache = work.parent / "torch_home"
    paths = seed_weights_cache(cache, monkeypatch, keys=LPIPS_KEYS)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    table = tmp_path / "sha256.json"
    table.write_text(json.dumps({k: W.sha256_file(p) for k, p in paths.items()}))
    env = workflow_env(work, PYTHONPATH=str(tmp_path / "site"), CGDM_TEST_WEIGHTS_SHA256=str(table))

    dry = snakemake(work, *TARGETS, "--dry-run", env=env)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    rules, outputs = _scheduled(dry.stdout + dry.stderr)
    assert "resources/state/metric-lpips.json" in dry.stdout + dry.stderr  # the reason: the updated state
    n_metric_jobs = len(list((work / "results" / "metrics").glob("*/*/*.csv")))
    assert rules.count("image_metrics") == n_metric_jobs  # every codec x rate
    assert not [o for o in outputs if o.startswith(("resources/models", "results/encoded/", "results/fid/"))]
    codecs = set()  # no codec's bitstreams change
    assert set(rules) <= {"image_metrics", "aggregate",
                          "aggregate_ablations", "rd_report", "ablation_report", "crops", "ablations",
                          "redecode", "redecode_metrics", "aggregate_ablation_seeds"}

    res = snakemake(work, *TARGETS, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    after = _rows(work, "lpips")
    ok_images = _rows(work, "psnr")["status"] == "ok"
    assert len(after) == len(before) and (after["status"] == "ok").sum() == ok_images.sum()
    values = after.loc[after["status"] == "ok", "value"]
    assert values.notna().all() and (values >= 0).all() and values.nunique() > 1
    # the other codecs' rows are those of the first run, and a third run has nothing to do
    a = pd.read_csv(tiny_workflow_run / "results" / "results.csv")
    b = pd.read_csv(work / "results" / "results.csv")
    a, b = a[~a["codec"].isin(codecs)], b[~b["codec"].isin(codecs)]
    for metric in ("psnr", "fid"):
        cols = ["dataset", "image", "codec", "rate", "bpp", "value", "status"]
        key = cols[:4]
        pd.testing.assert_frame_equal(a[a["metric"] == metric][cols].sort_values(key).reset_index(drop=True),
                                      b[b["metric"] == metric][cols].sort_values(key).reset_index(drop=True))
    again = snakemake(work, *TARGETS, "--dry-run", env=env)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may pay for the .test workflow run in its setup
def test_installing_bpg_reruns_only_bpg(tiny_workflow_run, tmp_path):
    if shutil.which("bpgenc", path=workflow_env(tiny_workflow_run)["PATH"]):
        pytest.skip("a real bpgenc is installed: BPG cannot become available between two runs")
    work = clone_run(tiny_workflow_run, tmp_path / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    with_bpg = ["--config", "codecs={bpg: {class: baselines.classical.BPG, rates: [30, 40]}}"]
    bpg_metrics = [f"results/metrics/kodak_tiny/bpg/{r}.csv" for r in (0, 1)]
    env = workflow_env(work)
    first = snakemake(work, *bpg_metrics, *with_bpg, env=env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    enc = pd.read_csv(work / "results" / "encoded" / "kodak_tiny" / "bpg" / "0" / "encode.csv")
    assert enc["status"].str.contains("bpgenc, bpgdec not found").all()

    _fake_program(bin_dir, "bpgenc", FAKE_BPGENC)
    _fake_program(bin_dir, "bpgdec", FAKE_BPGDEC)
    env = workflow_env(work, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    dry = snakemake(work, "results/rd_curves.pdf", *bpg_metrics, *with_bpg, "--dry-run", env=env)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    out = dry.stdout + dry.stderr
    encoded = set(re.findall(r"results/encoded/kodak_tiny/([\w.-]+)/\d+/encode\.csv", out))
    assert encoded == {"bpg"}
    rules, outputs = _scheduled(out)
    assert rules.count("encode") == 2 and "train_model" not in rules
    per_codec = [o for o in outputs if o.startswith(("results/encoded", "results/metrics", "results/fid"))]
    assert per_codec and all("/bpg/" in o for o in per_codec), per_codec
    assert "resources/state/codec-bpg.json" in out

    res = snakemake(work, *bpg_metrics, *with_bpg, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    enc = pd.read_csv(work / "results" / "encoded" / "kodak_tiny" / "bpg" / "0" / "encode.csv")
    assert (enc["status"] == "ok").all() and (enc["bytes"] > 0).all()
