"""Evaluation-only entries: released weights in the official formats reproduce the model they came from.

For each of SEP (two-logit state dict), NPR (plain state dict) and UnivFD (the linear head, on a backbone file),
a model is saved both as a sep-bench checkpoint and in the authors' format; `sep-bench evaluate --released` on an
entry naming the official file must give the same logits as evaluating the checkpoint. Also: the sha256 pin,
missing files and hub references offline fail with one clear line, the report marks the row, and DVC makes
stages for defined entries only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.detectors import get_detector
from sep_bench.engine.checkpoint import save_checkpoint
from sep_bench.weights import WeightsSource, parse_pretrained, sha256_file
from tests.conftest import REPO

runner = CliRunner()

SEP_MODEL = {"classifier_size": 48, "backbone": "resnet18", "dwt_size": 32, "eval_candidates": 16}
UNIVFD_MODEL = {"arch": "tiny-vit-768", "image_size": 32, "crop_size": 32, "train_resize": None}


def _params(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "params.yaml").read_text())


def _write_params(workdir: Path, params: dict) -> None:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _evaluate(*args: str) -> str:
    res = runner.invoke(app, ["evaluate", "--no-track", *args])
    assert res.exit_code == 0, res.output
    return res.output


def _predictions(workdir: Path, row: str) -> pd.DataFrame:
    return pd.read_parquet(workdir / f"results/predictions/tiny/{row}/seed0.parquet")


def _save_pair(workdir: Path, detector: str, model, model_config: dict, official: dict) -> tuple[Path, Path]:
    """The same model as a sep-bench checkpoint and as the authors' file (`official`: the state dict they save)."""
    ckpt = workdir / f"{detector}.safetensors"
    save_checkpoint(ckpt, model, {"detector": detector, "model_config": model_config,
                                  "weights": {"kind": model.weights.kind, "ref": model.weights.ref}})
    path = workdir / f"{detector}_official.pth"
    torch.save(official, path)
    return ckpt, path


def test_npr_entry_reproduces_the_trained_model(workdir):
    """Train NPR, re-save it as the official plain state dict: the released entry gives the same predictions."""
    from sep_bench.engine.checkpoint import load_detector

    assert runner.invoke(app, ["train", "-d", "npr", "--no-track"]).exit_code == 0
    _evaluate("-d", "npr")
    model, _ = load_detector(workdir / "runs/tiny/npr/seed0/train/best.safetensors")
    official = workdir / "NPR_released.pth"
    torch.save(OrderedDict(model.state_dict()), official)
    params = _params(workdir)
    params["released"] = {"npr-official": {"detector": "npr", "weights": "NPR_released.pth",
                                           "sha256": sha256_file(official), "note": "re-saved in the test"}}
    _write_params(workdir, params)

    _evaluate("--released", "npr-official")
    assert _predictions(workdir, "npr-official").equals(_predictions(workdir, "npr"))
    m = json.loads((workdir / "results/metrics/tiny/npr-official/seed0.json").read_text())
    assert m["released_weights"] is True and m["entry"] == "npr-official" and m["detector"] == "npr"
    assert m["released"]["sha256"] == sha256_file(official) and m["weights"].startswith("file:NPR_released.pth@")
    res = runner.invoke(app, ["released", "resolve", "npr-official"])  # the DVC stage released@npr-official
    assert res.exit_code == 0, res.output
    record = json.loads((workdir / "runs/released/npr-official.json").read_text())
    assert record["sha256"] == m["released"]["sha256"] and "path" not in record  # no machine-specific path

    # ad hoc, outside DVC: its own row, never the trained detector's files
    _evaluate("-d", "npr", "--weights", str(official))
    assert _predictions(workdir, "npr-released").equals(_predictions(workdir, "npr"))

    # the report: the released row is marked, its caption line carries the sha256, cost columns beside Mean
    res = runner.invoke(app, ["report", "--no-track"])
    assert res.exit_code == 0, res.output
    table = (workdir / "results/tables/tiny_acc.md").read_text()
    assert "| npr-official‡ " in table and sha256_file(official) in table and "released weights" in table
    header = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    assert header[-5:] == ["Mean", "Params (M)", "GFLOPs", "img/s", "Mem (MiB)"]
    eff = pd.read_csv(workdir / "results/tables/tiny_efficiency.csv", index_col=0)
    assert eff.loc["npr-official‡", "Params"] == eff.loc["npr", "Params"] > 0
    assert (workdir / "results/plots/tiny_acc_vs_cost.png").stat().st_size > 1000


def test_sep_entry_in_the_two_logit_format_reproduces_the_model(workdir):
    spec = get_detector("sep")
    cfg = spec.make_config(SEP_MODEL)
    torch.manual_seed(0)
    model = spec.build(cfg, WeightsSource.none()).eval()
    ckpt, official = _save_pair(workdir, "sep", model, SEP_MODEL, OrderedDict(model.state_dict()))
    assert "disc.fc.weight" in torch.load(official) and torch.load(official)["disc.fc.weight"].shape[0] == 2
    params = _params(workdir)
    params["detectors"]["sep"] = {"model": SEP_MODEL}
    params["released"] = {"sep-official": {"detector": "sep", "weights": str(official)}}
    _write_params(workdir, params)

    _evaluate("-d", "sep", "--checkpoint", str(ckpt))
    _evaluate("--released", "sep-official")
    ours, released = _predictions(workdir, "sep"), _predictions(workdir, "sep-official")
    assert ours["path"].tolist() == released["path"].tolist()
    assert torch.allclose(torch.tensor(ours["fake_logit"].to_numpy()), torch.tensor(released["fake_logit"].to_numpy()),
                          atol=1e-6)


def test_univfd_head_entry_on_a_backbone_file_reproduces_the_model(workdir):
    from sep_bench.baselines.univfd import create_clip

    torch.manual_seed(3)
    clip = create_clip("tiny-vit-768", image_size=32)
    torch.save(clip.state_dict(), workdir / "clip.pt")
    spec = get_detector("univfd")
    cfg = spec.make_config(UNIVFD_MODEL)
    model = spec.build(cfg, parse_pretrained(str(workdir / "clip.pt"), None)).eval()
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    head = OrderedDict(weight=model.fc.weight.detach().clone(), bias=model.fc.bias.detach().clone())
    ckpt, official = _save_pair(workdir, "univfd", model, UNIVFD_MODEL, head)
    params = _params(workdir)
    params["detectors"]["univfd"] = {"model": UNIVFD_MODEL, "pretrained": str(workdir / "clip.pt")}
    params["released"] = {
        "univfd-official": {"detector": "univfd", "weights": str(official)},
        "univfd-random-backbone": {"detector": "univfd", "weights": str(official), "pretrained": False},
    }
    _write_params(workdir, params)

    _evaluate("-d", "univfd", "--checkpoint", str(ckpt))
    _evaluate("--released", "univfd-official")
    ours, released = _predictions(workdir, "univfd"), _predictions(workdir, "univfd-official")
    assert torch.allclose(torch.tensor(ours["fake_logit"].to_numpy()), torch.tensor(released["fake_logit"].to_numpy()),
                          atol=1e-5)
    # the head on a random backbone is evaluated, but never passed off as the real thing
    _evaluate("--released", "univfd-random-backbone")
    m = json.loads((workdir / "results/metrics/tiny/univfd-random-backbone/seed0.json").read_text())
    assert m["pretrained"] is False and m["weights"].startswith("random-init (univfd_official.pth")
    from sep_bench.report.tables import row_name

    assert row_name(m) == "univfd-random-backbone‡†"


def test_pin_missing_file_and_offline_hub_are_one_line_errors(workdir):
    (workdir / "w.pth").write_bytes(b"not the pinned file")
    params = _params(workdir)
    params["released"] = {
        "pinned": {"detector": "npr", "weights": "w.pth", "sha256": "0" * 64},
        "missing": {"detector": "npr", "weights": "nowhere/npr.pth"},
        "hub": {"detector": "npr", "weights": "hf-hub:someone/npr-weights/npr.pth"},
    }
    _write_params(workdir, params)
    for name, expected in (("pinned", "but the entry pins"), ("missing", "nowhere/npr.pth not found"),
                           ("hub", "cannot get npr.pth from the Hugging Face hub")):
        res = runner.invoke(app, ["evaluate", "--no-track", "--released", name])
        assert res.exit_code == 2 and expected in res.output, res.output
        res = runner.invoke(app, ["released", "resolve", name])
        assert res.exit_code == 2 and expected in res.output, res.output
    assert not (workdir / "results/metrics").exists()


@pytest.mark.parametrize("entry, expected", [
    ({"npr": {"detector": "npr", "weights": "x.pth"}}, "not also a detector name"),
    ({"a/b": {"detector": "npr", "weights": "x.pth"}}, "plain file name"),
    ({"x": {"detector": "nope", "weights": "x.pth"}}, "released.x.detector 'nope'"),
    ({"x": {"detector": "npr", "weights": "x.pth", "sha256": "abc"}}, "sha256"),
])
def test_bad_entries_are_protocol_errors(workdir, entry, expected):
    params = _params(workdir)
    params["released"] = entry
    _write_params(workdir, params)
    res = runner.invoke(app, ["evaluate", "--no-track", "-d", "npr"])
    assert res.exit_code == 2 and expected in res.output, res.output


def test_dvc_makes_released_stages_only_for_defined_entries(tmp_path):
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc is not installed")
    shutil.copy(REPO / "dvc.yaml", tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)

    def stages() -> list[str]:
        out = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=tmp_path, check=True, capture_output=True,
                             text=True).stdout
        return out.split()

    assert not [s for s in stages() if "released" in s]
    params["released"] = {"npr-official": {"detector": "npr", "weights": "weights/npr.pth"}}
    params["run"]["seeds"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    names = stages()
    assert {"released@npr-official", "evaluate_released@npr-official-0", "evaluate_released@npr-official-1"} <= set(names)
    assert not [s for s in names if s.startswith("train@npr-official")]
