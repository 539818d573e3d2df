"""`sep-bench predict` and `sep-bench explain` on real photographs (scikit-image ships them)."""

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.detectors import get_detector
from sep_bench.engine.checkpoint import save_checkpoint
from sep_bench.weights import WeightsSource

runner = CliRunner()
SMALL_SEP = {"classifier_size": 64, "backbone": "resnet18", "dwt_size": 64, "eval_candidates": 16}


@pytest.fixture
def photos(tmp_path):
    from skimage import data

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(data.astronaut()[:160, :200]).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()[:120, :150]).save(folder / "sub" / "coffee.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture
def sep_checkpoint(tmp_path):
    spec = get_detector("sep")
    cfg = spec.make_config(SMALL_SEP)
    model = spec.build(cfg, WeightsSource.none())
    path = tmp_path / "sep.safetensors"
    save_checkpoint(path, model, {"detector": "sep", "model_config": cfg.model_dump(mode="json"),
                                  "weights": {"kind": "none", "ref": "", "sha256": None}})
    return path


def test_predict_reports_probabilities_and_skips(photos, sep_checkpoint, tmp_path):
    out = tmp_path / "pred.csv"
    res = runner.invoke(app, ["predict", str(photos), "-d", "sep", "-c", str(sep_checkpoint), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert sorted(df.path.map(lambda p: p.rsplit("/", 1)[-1])) == ["astronaut.png", "broken.jpg", "coffee.jpg"]
    ok = df[df.status == "ok"]
    assert len(ok) == 2 and ok.fake_prob.between(0, 1).all()
    assert df.loc[df.path.str.endswith("broken.jpg"), "status"].item() == "not_an_image"
    again = tmp_path / "again.csv"
    runner.invoke(app, ["predict", str(photos), "-d", "sep", "-c", str(sep_checkpoint), "--out", str(again)])
    assert pd.read_csv(again).equals(df)  # deterministic patch choice and output


def test_predict_refuses_a_checkpoint_of_another_detector(photos, sep_checkpoint):
    res = runner.invoke(app, ["predict", str(photos), "-d", "npr", "-c", str(sep_checkpoint)])
    assert res.exit_code == 2 and "checkpoint of detector 'sep', not 'npr'" in res.output


def test_explain_writes_one_figure_per_image(photos, sep_checkpoint, tmp_path):
    out = tmp_path / "figs"
    res = runner.invoke(app, ["explain", str(photos), "-c", str(sep_checkpoint), "--out", str(out)])
    assert res.exit_code == 0, res.output
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["0000_astronaut.png", "0002_coffee.png"]
    assert all(Image.open(p).size[0] > 600 for p in pngs)
    summary = pd.read_csv(out / "explain.csv")
    assert list(summary.status) == ["ok", "not_an_image", "ok"]
    assert summary.fake_prob.dropna().between(0, 1).all() and summary.score.dropna().ge(0).all()
