"""The paper profile, run once for real at smoke size (slow: a few minutes on 2 cores).

The config is generated from config/paper.yaml by .test/paper/make_config.py (CPU, the two cropped
Kodak images of .test/, training photos through the dataset registry, first and last rate of each
codec, paper-size networks trained for one step per λ), so this run cannot drift from the paper
profile. Checks: every rule the paper
profile schedules executed; every codec of the paper profile has its rows, ``ok`` or an explicit
``unavailable: reason`` (programs and weights missing here), never missing; the trained models have
the paper's sizes; bpp comes from the files on disk; a second run schedules nothing.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TARGETS = ["all", "ablations", "paper_tables", "reference_snapshot"]
# Codecs that need nothing but the installed Python packages and the models trained in the run:
# they must produce numbers. The others (external programs, downloaded weights) may be unavailable.
MUST_RUN = {"baselines.classical.JPEG", "baselines.classical.WebP", "baselines.classical.AVIF",
            "baselines.classical.JPEG2000", "baselines.learned.CompressAITrained",
            "cgdm.harness.cgdm_codecs.CGDMBaseCodec", "cgdm.harness.cgdm_codecs.CGDMCodec"}

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("paper_smoke_config", REPO / ".test" / "paper" / "make_config.py")
make_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_config)


def snakemake(workdir, *args, timeout=1800):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run([SNAKEMAKE, "--cores", "2", "--directory", str(workdir), "--snakefile",
                          str(REPO / "workflow" / "Snakefile"), *args], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=timeout)
    res.output = res.stdout + res.stderr
    return res


def scheduled_rules(output):
    """Rule names of the jobs a (dry-)run scheduled or ran, from Snakemake's log."""
    return set(re.findall(r"^(?:local)?rule (\w+):", output, flags=re.M))


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper-smoke")
    # config/config.yaml under --directory: the workflow's configfile resolves to it
    make_config.write_smoke_config(work / "config" / "config.yaml")
    res = snakemake(work, *TARGETS)
    (work / "snakemake.log").write_text(res.output)
    assert res.returncode == 0, res.output[-6000:]
    return work, res.output


@pytest.mark.timeout(1900)
def test_every_rule_of_the_paper_profile_ran(smoke_run, tmp_path):
    work, output = smoke_run
    # what the real paper profile would run (dry-run in an empty directory: nothing built)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "paper.yaml").read_text())
    dry = snakemake(tmp_path, *TARGETS, "--dry-run", timeout=300)
    assert dry.returncode == 0, dry.output[-3000:]
    wanted = scheduled_rules(dry.output) - set(TARGETS)
    assert {"prepare_dataset", "train_model", "encode", "image_metrics", "published_curve"} <= wanted
    ran = scheduled_rules(output)
    assert wanted <= ran, f"rules of the paper profile the smoke run did not execute: {wanted - ran}"
    again = snakemake(work, *TARGETS, "--dry-run", timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.output, again.output[-3000:]


@pytest.mark.timeout(1900)
def test_every_codec_has_rows_ok_or_unavailable_with_reason(smoke_run, paper):
    work, _ = smoke_run
    enc = pd.concat(pd.read_csv(p) for p in (work / "results" / "encoded").glob("*/*/*/encode.csv"))
    smoke = yaml.safe_load((work / "config" / "config.yaml").read_text())
    n_images = enc["image"].nunique()
    assert n_images == 2, "the smoke dataset is .test/data/kodak_tiny (two crops)"
    variants = {f"{paper['ablations']['full']}_{v}": e for v, e in paper["ablations"]["variants"].items()}
    for name, entry in {**paper["codecs"], **variants}.items():
        rows = enc[enc["codec"] == name]
        rates = smoke["codecs"].get(name, smoke["ablations"]["variants"].get(
            name.removeprefix(paper["ablations"]["full"] + "_"), {})).get("rates", [])
        # one row per (image, rate kept)
        assert rows["rate"].nunique() == len(rates) and len(rows) == len(rates) * n_images, name
        status = rows["status"].astype(str)
        if entry["class"] in MUST_RUN:
            assert (status == "ok").all(), (name, status.tolist())
        else:
            assert status.map(lambda s: s == "ok" or (s.startswith("unavailable: ") and len(s) > 20)).all(), \
                (name, status.tolist())
    ok = enc[enc["status"] == "ok"]
    assert len(ok) > 0
    for row in ok.itertuples():
        # bpp is 8 x (bytes of the bitstream on disk) / pixels
        assert row.bpp == pytest.approx(8 * os.path.getsize(work / row.bitstream) / (row.width * row.height))
    results = pd.read_csv(work / "results" / "results.csv")
    assert set(paper["codecs"]) <= set(results["codec"])
    published = results[results["kind"] == "published"]
    assert set(paper["published"]) <= set(published["codec"]), "every published curve of the paper profile is drawn"
    # metrics without weights here (LPIPS, DISTS, FID / KID) are rows saying so, never absent
    metrics = set(paper["metrics"]["per_image"]) | set(paper["metrics"].get("distribution", []))
    assert metrics <= set(results.loc[results["kind"] != "published", "metric"])
    abl = pd.read_csv(work / "results" / "ablations.csv")
    assert set(abl["codec"]) == {paper["ablations"]["full"], *variants}
    for f in ["rd_curves.pdf", "ablations.pdf", "crops/kodak_tiny.png", "reference/rd_curves.pdf",
              *(f"tables/{t}_table.md" for t in ("rd", "bd_rate", "runtime", "ablation"))]:
        assert (work / "results" / f).stat().st_size > 0, f


@pytest.mark.timeout(1900)
def test_models_have_the_paper_sizes(smoke_run, paper):
    work, _ = smoke_run
    for name, spec in paper["models"].items():
        ckpt = torch.load(work / "resources" / "models" / f"{name}.pt", map_location="cpu", weights_only=False)
        meta = ckpt.get("meta", {})
        text = repr(meta)
        for key in ("N", "M"):
            if key in spec["params"]:
                assert re.search(rf"'{key}': {spec['params'][key]}\b", text), (name, key, text[:500])
        if "channels" in spec["params"]:
            assert str(list(spec["params"]["channels"])) in text, (name, text[:500])
