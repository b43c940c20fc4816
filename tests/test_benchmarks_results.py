"""The benchmarks save their numbers with provenance (benchmarks/_results.py): the helper itself and the
save path of every benchmark script, each run on a tiny input and redirected to a temporary folder so the
kept files under benchmarks/results/ are never overwritten by a test."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import _results  # noqa: E402


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    out = tmp_path / "results"
    monkeypatch.setenv(_results.ENV_DIR, str(out))
    return out


def _script(name: str):
    """Import benchmarks/<name>.py as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_provenance(doc: dict, name: str):
    assert doc["name"] == name
    prov = doc["provenance"]
    assert prov["code_revision"]  # "unknown" outside a git checkout
    assert prov["date"].endswith("+00:00") and prov["machine"]["cores"] >= 1 and prov["machine"]["cpu"]
    assert prov["torch"] and prov["numpy"] and prov["python"]
    assert prov["command"].startswith("python ")


def test_save_writes_strict_json_with_provenance(results_dir):
    frame = pd.DataFrame({"rate": [0, 1], "bpp": [0.1, np.nan]}).set_index("rate")
    path = _results.save("demo", {"x": np.float32(1.5), "v": np.arange(3), "f": frame, "p": Path("a/b")},
                         command=["python", "benchmarks/demo.py", "--n", "2"])
    assert path == results_dir / "demo.json"
    text = path.read_text()
    assert "NaN" not in text  # strict JSON: NaN -> null
    doc = json.loads(text)
    _check_provenance(doc, "demo")
    assert doc["provenance"]["command"] == "python benchmarks/demo.py --n 2"
    assert doc["results"] == {"x": 1.5, "v": [0, 1, 2], "f": [{"rate": 0, "bpp": 0.1}, {"rate": 1, "bpp": None}],
                              "p": "a/b"}
    assert _results.load("demo") == doc
    with pytest.raises(ValueError, match="plain file stem"):
        _results.save("../escape", {})
    with pytest.raises(TypeError, match="cannot store object"):
        _results.save("bad", {"o": object()})
    assert not (results_dir / "bad.json").exists()


def test_default_folder_is_the_kept_one(monkeypatch):
    monkeypatch.delenv(_results.ENV_DIR, raising=False)
    assert _results.results_dir() == REPO / "benchmarks" / "results"


def test_baselines_benchmark_saves(results_dir, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/baselines.py"])
    assert _script("baselines").main(["--images", "1", "--codecs", "jpeg-444", "vtm"]) == 0
    doc = _results.load("baselines")
    _check_provenance(doc, "baselines")
    rows = {r["codec"]: r for r in doc["results"]["rows"]}
    assert rows["jpeg-444"]["status"] == "ok" and rows["jpeg-444"]["bpp"] > 0 and rows["jpeg-444"]["psnr"] > 20
    assert rows["vtm"]["status"].startswith("unavailable: ") or rows["vtm"]["status"] == "ok"
    assert doc["results"]["images"] == ["kodim01"]


def test_workflow_benchmark_saves(results_dir, monkeypatch):
    """The workflow runs themselves take minutes (benchmarks/workflow.py); here only the save path, with
    the run replaced by fixed wall times."""
    mod = _script("workflow")
    monkeypatch.setattr(mod, "run", lambda config, cores: {1: 100.0, 2: 60.0}[cores])
    monkeypatch.setattr(sys, "argv", ["benchmarks/workflow.py"])
    assert mod.main(["--cores", "1", "2"]) == 0
    doc = _results.load("workflow-test")
    _check_provenance(doc, "workflow-test")
    assert doc["results"]["runs"] == [{"cores": 1, "wall_s": 100.0, "speedup": 1.0},
                                      {"cores": 2, "wall_s": 60.0, "speedup": pytest.approx(100 / 60)}]


def test_bitstream_benchmark_saves(results_dir, tmp_path, monkeypatch):
    from cgdm.train import train_base

    train = tmp_path / "train"
    train.mkdir()
    crop = Image.open(REPO / "data" / "kodak" / "kodim01.png").crop((0, 0, 64, 64))
    for i in range(2):
        crop.save(train / f"im{i}.png")
    model = train_base({"N": 8, "M": 8, "syntax_dim": 4, "lambdas": [0.002, 0.01], "batch_size": 2,
                        "patch_size": 32, "steps": 2, "threads": 1}, sorted(train.glob("*.png")),
                       tmp_path / "tiny.pth", progress=False)
    monkeypatch.setattr(sys, "argv", ["benchmarks/bitstream.py"])
    assert _script("bitstream").main(["--model", str(model), "--images", str(train), "--limit", "1"]) == 0
    doc = _results.load("bitstream")
    _check_provenance(doc, "bitstream")
    res = doc["results"]
    assert res["n_images"] == 1 and res["model_meta"]["N"] == 8
    assert [r["rate"] for r in res["per_rate"]] == [0, 1] and len(res["rows"]) == 2
    assert all(r["bpp_file"] > 0 for r in res["rows"]) and isinstance(res["all_bit_exact"], bool)


def test_sff_stream_benchmark_saves(results_dir, tmp_path, monkeypatch):
    """One Kodak image at one rate: the shipped decoders and a random decoder with a 4-value SFF stream
    (built for the shipped base), whose sff section and stream statistics are reported."""
    import torch

    from cgdm.diffusion_decoder import CGDMDecoder, DecoderConfig
    from cgdm.zoo import save_checkpoint

    torch.manual_seed(0)
    cfg = DecoderConfig(num_rates=4, feature_channels=64, syntax_dim=16, channels=(8, 16), emb_dim=16,
                        consistency_channels=8, consistency_hidden=8, consistency_blocks=1, sff_stream_dim=4)
    dec = CGDMDecoder(cfg)
    dec.update(force=True)
    ckpt = tmp_path / "stream.pth"
    save_checkpoint(ckpt, dec.state_dict(), {"arch": "cgdm-decoder", "steps": 0, "config": cfg.to_dict(),
                                             "params": {"steps": 0, "sff_stream_dim": 4}})
    monkeypatch.setattr(sys, "argv", ["benchmarks/sff_stream.py"])
    assert _script("sff_stream").main(["--images", "1", "--rates", "0", "--threads", "1",
                                       "--decoder", f"stream={ckpt}"]) == 0
    doc = _results.load("sff_stream")
    _check_provenance(doc, "sff_stream")
    rows = {r["decoder"]: r for r in doc["results"]["rows"]}
    assert set(rows) == {"shipped_full", "shipped_no_sff", "stream"}
    assert "sff_bytes" not in rows["shipped_full"] and rows["stream"]["sff_bytes"] >= 8
    assert rows["stream"]["distinct_vectors"] == 1 and rows["stream"]["max_spread"] == 0  # one image
    assert rows["stream"]["bpp"] > rows["shipped_full"]["bpp"]  # the same base streams plus the sff section
    assert 20 < rows["shipped_full"]["psnr"] < 40


def test_snapshot_benchmark_saves(results_dir, monkeypatch, capsys):
    """The snapshot's real steps take ~90 min (benchmarks/snapshot.py); here they are replaced by commands
    that run in the fresh clone in moments: the clone holds HEAD, each step is timed, and a failing step
    stops the run with its command named and nothing copied or saved."""
    mod = _script("snapshot")
    check = [sys.executable, "-c",
             "import pathlib, sys; sys.exit(not pathlib.Path('benchmarks/snapshot.py').is_file())"]
    monkeypatch.setattr(mod, "STEPS", [("first", ["true"]), ("in_the_clone", check)])
    monkeypatch.setattr(sys, "argv", ["benchmarks/snapshot.py", "--no-copy"])
    assert mod.main(["--no-copy"]) == 0
    doc = _results.load("snapshot")
    _check_provenance(doc, "snapshot")
    res = doc["results"]
    assert [s["step"] for s in res["steps"]] == ["first", "in_the_clone"] and res["copied"] is False
    assert all(s["wall_s"] >= 0 for s in res["steps"]) and res["total_s"] == pytest.approx(
        sum(s["wall_s"] for s in res["steps"]))
    (results_dir / "snapshot.json").unlink()
    monkeypatch.setattr(mod, "STEPS", [("fails", ["false"]), ("never", ["true"])])
    with pytest.raises(SystemExit, match="false failed .* nothing copied"):
        mod.main(["--no-copy"])
    assert not (results_dir / "snapshot.json").exists()
