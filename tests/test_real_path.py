"""The path of a user with a dataset on disk: a self-placed GenImage-shaped tree gets its manifest and stamp from
`sep-bench data prepare`, a failed check keeps the earlier output, run.detectors narrows without editing
run.selection, `sep-bench report` tabulates what has results (--strict refuses), the smoke budget caps every
detector in one switch, and `--set` overrides params.yaml per command. Fast (no training): about 20 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sep_bench.acquire.synth import synth_tree
from sep_bench.cli import app
from sep_bench.cli.common import parse_sets
from sep_bench.protocol import ProtocolError, load_params, resolve
from sep_bench.report import tables
from tests.conftest import REPO
from tests.test_report import write_results

runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


@pytest.fixture
def placed(tmp_path, monkeypatch):
    """The repository's params.yaml in a temporary folder, with a GenImage-shaped tree (`data synth`) placed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEP_BENCH_PARENT_RUN_ID", raising=False)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    synth_tree("genimage", tmp_path / "data/external/genimage", n_train=2, n_test=1, scale=0.125)
    return tmp_path


def test_data_prepare_stamps_a_placed_tree_and_a_failed_check_keeps_the_earlier_output(placed):
    out = _ok(["data", "prepare", "--profile", "genimage"])
    manifest = placed / "data/external/genimage/MANIFEST.sha256.json"
    stamp = placed / "data/stamps/genimage.json"
    assert manifest.is_file() and "wrote data/stamps/genimage.json" in out
    import hashlib

    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert json.loads(stamp.read_text()) == {"profile": "genimage",
                                             "manifests_sha256": {"data/external/genimage": digest}}
    assert (placed / "results/selection/genimage").is_dir()  # the report stage's dependency, even with no selection
    summary = placed / "data/prepared/genimage/summary.json"
    mtime = stamp.stat().st_mtime_ns

    assert "wrote data/stamps" not in _ok(["data", "prepare", "--profile", "genimage"])  # unchanged: not rewritten
    assert stamp.stat().st_mtime_ns == mtime
    before = (mtime, summary.read_bytes())

    extra = placed / "data/external/genimage/imagenet_glide/val/ai/added.png"
    extra.write_bytes((placed / "data/external/genimage/imagenet_glide/val/nature/ILSVRC2012_val_00000000.JPEG")
                      .read_bytes())
    res = runner.invoke(app, ["data", "prepare", "--profile", "genimage"])
    assert res.exit_code == 2 and "not in the manifest" in " ".join(res.output.split()), res.output
    assert summary.read_bytes() == before[1] and stamp.stat().st_mtime_ns == before[0]


def test_narrowed_run_detectors_skip_the_other_selection_runs(placed):
    p = load_params("params.yaml", {"run.detectors": ["npr", "sep"], "run.selection": ["f3net", "sep"]})
    assert p.selection_detectors() == ["sep"] and p.skipped_selection("sep") is None
    out = _ok(["selection", "--detector", "f3net", "-S", "run.detectors=[npr,sep]", "--profile", "genimage"])
    assert "f3net is in run.selection but not in run.detectors" in out
    record = json.loads((placed / "results/selection/genimage/f3net/seed0.json").read_text())
    assert record["skipped"].startswith("f3net is in run.selection") and record["seed"] == 0
    assert (placed / "runs/genimage/f3net/seed0/train_select_on_test").is_dir()  # the stage's other output
    with pytest.raises(ProtocolError, match=r"names \['nosuch'\] without a block"):
        load_params("params.yaml", {"run.selection": ["nosuch"]})


def test_report_tabulates_the_detectors_with_results_and_strict_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEP_BENCH_PARENT_RUN_ID", raising=False)
    params = write_results(tmp_path, "tiny", ["g1", "g2"], {"npr": 0.8, "sep": 0.9})
    params["run"]["detectors"] = ["npr", "sep", "cnnspot"]
    params["detectors"]["cnnspot"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = _ok(["report", "--n-boot", "200"])
    assert "not in the tables (no results for every seed yet): cnnspot" in out
    md = (tmp_path / "results/tables/tiny_acc.md").read_text()
    assert "| sep " in md and "| cnnspot" not in md and "Not in this table (no results for seed(s) 0 yet): cnnspot" in md
    res = runner.invoke(app, ["report", "--n-boot", "200", "--strict"])
    assert res.exit_code == 2 and "results/metrics/tiny/cnnspot/seed0.json" in res.output, res.output
    params["run"]["detectors"] = ["cnnspot"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = runner.invoke(app, ["report", "--n-boot", "200"])
    assert res.exit_code == 2 and "no results of profile 'tiny'" in " ".join(res.output.split()), res.output


def test_smoke_budget_caps_every_detector_and_is_another_protocol():
    full = load_params(REPO / "params.yaml", {"profile": "genimage"})
    smoke = load_params(REPO / "params.yaml", {"profile": "genimage", "budget": "smoke"})
    caps = smoke.run_budget()
    assert full.run_budget() is None and caps.epochs == 1 and caps.max_steps_per_epoch
    for det in full.detectors:
        f, s = resolve(full, det), resolve(smoke, det)
        assert s.recipe.train.epochs == 1 <= f.recipe.train.epochs  # over the detector's own epochs (SEP: 50)
        assert s.recipe.train.max_steps_per_epoch == caps.max_steps_per_epoch
        assert s.profile.data.max_train_images == caps.max_train_images
        assert s.profile.data.max_val_images == caps.max_val_images
        assert s.profile.data.max_test_images_per_generator == caps.max_test_images_per_generator
        assert s.recipe.eval.variant_subset == caps.variant_subset
        # what is measured is untouched: the model, its weights, the batch, the views, the evaluation variants
        assert (s.recipe.model, s.recipe.pretrained, s.recipe.optim) == (f.recipe.model, f.recipe.pretrained,
                                                                         f.recipe.optim)
        assert s.recipe.train.batch_size == f.recipe.train.batch_size
        assert s.recipe.eval.perturbations == f.recipe.eval.perturbations
        assert s.budget == "smoke" and s.protocol_hash() != f.protocol_hash()
        assert s.flat_params()["budget"] == "smoke"  # MLflow
    # the full budget hashes as before budgets existed: the committed mini results stay current
    mini = load_params(REPO / "params.yaml")
    committed = json.loads((REPO / "results/metrics/mini/npr/seed0.json").read_text())["protocol_hash"]
    assert resolve(mini, "npr").protocol_hash() == committed
    with pytest.raises(ProtocolError, match="budget 'tiny' is not defined; use 'full' or one of budgets: smoke"):
        load_params(REPO / "params.yaml", {"budget": "tiny"})


def test_budgets_full_takes_no_caps_and_stages_read_only_the_active_budget():
    with pytest.raises(ProtocolError, match="budgets.full: the name 'full' is the protocol itself and takes no caps"):
        load_params(REPO / "params.yaml", {"budgets.full": {"epochs": 1}})
    # each stage's DVC params name the active budget's caps only, so defining another budget reruns nothing
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    budget_params = {name: [p for p in st.get("params", []) if isinstance(p, str) and p.startswith("budget")]
                     for name, st in stages.items()}
    assert all(ps in ([], ["budget", "budgets.${budget}"]) for ps in budget_params.values()), budget_params
    assert sum(1 for ps in budget_params.values() if ps) >= 5


def test_tables_name_the_run_budget():
    m = {"detector": "npr", "profile": "genimage", "seed": 0, "protocol_hash": "x", "budget": "smoke"}
    lines, _ = tables.caption_lines([m], "ACC")
    assert any(line.startswith("RUN BUDGET `smoke`") and "NOT the protocol's numbers" in line for line in lines)
    lines, _ = tables.caption_lines([{**m, "budget": None}], "ACC")
    assert not any("RUN BUDGET" in line for line in lines)


def test_set_options_override_params_per_command():
    assert parse_sets(["budget=smoke", "run.detectors=[npr, sep]", "profiles.genimage.train.epochs=2",
                       "tracking.uri=null"]) == {"budget": "smoke", "run.detectors": ["npr", "sep"],
                                                 "profiles.genimage.train.epochs": 2, "tracking.uri": None}
    for bad in ("budget", "=smoke", "a..b=1"):
        with pytest.raises(ProtocolError, match="expected KEY=VALUE"):
            parse_sets([bad])
    res = runner.invoke(app, ["report", "--params", str(REPO / "params.yaml"), "--set", "profiles.mini.train.epohcs=2"])
    assert res.exit_code == 2 and "profiles.mini.train.epohcs: unknown key" in res.output, res.output


def test_params_survive_dvc_exp_run_set(tmp_path):
    """`dvc exp run -S` rewrites params.yaml through ruamel's round trip (block style, quotes dropped where YAML
    1.2 needs none): DVC's own reader must read the result, and it must mean the same protocol to sep-bench (PyYAML,
    YAML 1.1: an unquoted 04:00:00 would be a number)."""
    import io

    from ruamel.yaml import YAML

    data = YAML(typ="rt").load((REPO / "params.yaml").read_text())
    data["budget"] = "smoke"
    dumper = YAML()
    dumper.default_flow_style = False  # as DVC writes it
    out = io.StringIO()
    dumper.dump(data, out)
    YAML(typ="safe").load(out.getvalue())  # DVC reads the rewritten file back
    (tmp_path / "params.yaml").write_text(out.getvalue())
    assert load_params(tmp_path / "params.yaml") == load_params(REPO / "params.yaml", {"budget": "smoke"})
