"""Hostile inputs: a generated corpus of broken, odd and malicious files through decoding, the dataset readers,
training, evaluation and `predict`; crafted pickles; links out of the dataset root. Nothing may hang (timeouts),
crash a run, or shrink a metric's image set silently. docs/robustness.md has the table of outcomes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.data.images import DecodeError, decode_image
from sep_bench.data.layouts import read_layout
from sep_bench.data.transforms import sample_rng
from sep_bench.detectors import get_detector, list_detectors
from sep_bench.weights import UnsafeCheckpointError, WeightsFileError, load_state_dict

from .hostile import BOMB_SIDE, GRAY16, RGB16, Hostile, deny_read, png_bytes, write_corpus

runner = CliRunner()


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> tuple[Path, list[Hostile]]:
    folder = tmp_path / "corpus"
    entries = write_corpus(folder, outside=tmp_path / "outside")
    deny_read(folder / "noperm.png", monkeypatch)
    return folder, entries


# ---- decoding: every file is either an RGB uint8 array by its rule or a DecodeError with its reason -------------


@pytest.mark.timeout(30)
def test_every_corpus_file_decodes_by_its_rule_or_is_refused_with_its_reason(corpus):
    folder, entries = corpus
    for h in entries:
        if h.outcome == "not_listed":
            continue
        path = folder / h.name
        if h.outcome == "skipped":
            with pytest.raises(DecodeError) as err:
                decode_image(path)
            assert err.value.reason == h.reason, (h.name, str(err.value))
            continue
        arr = decode_image(path)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.flags.c_contiguous, h.name
    px = lambda name: decode_image(folder / name)  # noqa: E731
    assert (px("gray16.png") == GRAY16 >> 8).all()  # high byte, not clipped to 255
    assert (px("rgb16.png") == np.array([v >> 8 for v in RGB16], np.uint8)).all()
    assert (px("rgba.png") == (10, 20, 30)).all()  # alpha dropped, colour kept (fully transparent pixels)
    assert (px("palette.png") == (200, 100, 50)).all() and (px("palette_trns.png") == (10, 200, 30)).all()
    assert (px("la.png") == 77).all()
    cmyk = px("cmyk.jpg").reshape(-1, 3).mean(0)
    assert cmyk[0] > 200 and cmyk[1] < 50 and cmyk[2] < 50  # C=0 M=Y=255: red
    rot = px("exif_rotated.jpg")  # stored 40 wide x 20 high, left red / right blue; orientation 6 -> upright
    assert rot.shape == (40, 20, 3)
    assert rot[5, 10, 0] > 200 and rot[5, 10, 2] < 50 and rot[35, 10, 2] > 200 and rot[35, 10, 0] < 50
    for name in ("animated.gif", "animated.webp"):
        if (folder / name).exists():
            assert (np.abs(px(name).astype(int) - (255, 0, 0)) <= 2).all(), name  # the first frame (red)
    assert px("tiny_1x1.png").shape == (1, 1, 3) and px("small_20x20.jpg").shape == (20, 20, 3)


@pytest.mark.timeout(60)
def test_bomb_header_is_refused_without_allocating_it(tmp_path):
    """The 30000x30000 header is refused from the header alone: in a process whose address space is capped far
    below the 2.7 GB the image would need, decoding returns `too_large` at once, also with a raised limit."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(BOMB_SIDE, BOMB_SIDE, bit_depth=8, color_type=2, raw=None))
    mid = tmp_path / "mid.png"  # 90 Mpx: above max_image_pixels, below PIL's own hard limit
    mid.write_bytes(png_bytes(10_000, 9_000, bit_depth=8, color_type=2, raw=None))
    code = f"""
import resource, numpy as np
resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
from sep_bench.data.images import DecodeError, decode_image
for path, limit in (({str(bomb)!r}, 89_478_485), ({str(bomb)!r}, 10**12), ({str(mid)!r}, 89_478_485)):
    try:
        decode_image(path, max_pixels=limit)
        raise SystemExit("decoded " + path)
    except DecodeError as err:
        assert err.reason == "too_large", err
try:
    np.ones({BOMB_SIDE} * {BOMB_SIDE} * 3, np.uint8)
    raise SystemExit("the cap does not stop a real allocation; the test would prove nothing")
except MemoryError:
    pass
print("refused")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env)
    assert res.returncode == 0 and "refused" in res.stdout, res.stdout + res.stderr


# ---- every detector's views on the odd images that decode -------------------------------------------------


@pytest.mark.timeout(120)
def test_every_detector_view_accepts_every_decodable_corpus_image(corpus):
    """Tiny, odd-shaped, rotated, palette, 16-bit ... images give views of the same shapes as a normal image
    (padding by the centre/random crop, or the SEP/SSP small-image resize), finite values, for every detector."""
    folder, entries = corpus
    images = {h.name: decode_image(folder / h.name) for h in entries if h.outcome == "processed"}
    normal = np.random.default_rng(0).integers(0, 256, (300, 280, 3), dtype=np.uint8)
    for name in list_detectors():
        spec = get_detector(name)
        cfg = spec.make_config({})
        for train in (True, False):
            view = spec.views(cfg, train, train)
            ref = {k: tuple(v.shape) for k, v in view(normal, sample_rng(0, 0, 0)).items()}
            other = {k: tuple(v.shape) for k, v in view(normal[:200, :190], sample_rng(0, 0, 0)).items()}
            keeps_size = other != ref  # a full-image view (e.g. GramNet's official evaluation): channels only
            for fname, img in images.items():
                out = view(img, sample_rng(0, 1, 0))
                shapes = {k: tuple(v.shape) for k, v in out.items()}
                if keeps_size:
                    assert {k: s[:-2] for k, s in shapes.items()} == {k: s[:-2] for k, s in ref.items()}, (name, fname)
                else:
                    assert shapes == ref, (name, train, fname)
                assert all(torch.isfinite(v).all() for v in out.values()), (name, train, fname)


# ---- the dataset readers ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_readers_skip_link_loops_dangling_links_and_links_out_of_the_root(tmp_path, caplog):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    write_corpus(root / "g" / "val" / "ai", outside=outside)
    (root / "g" / "val" / "nature").mkdir(parents=True)
    # a class folder that is itself a link out of the root, and a generator folder linked from outside
    (outside / "nature_imgs").mkdir()
    (outside / "nature_imgs" / "x.png").write_bytes((root / "g" / "val" / "ai" / "la.png").read_bytes())
    os.symlink(outside / "nature_imgs", root / "g" / "val" / "nature" / "sub")
    os.symlink(outside, root / "linked_gen")
    os.symlink(root, root / "g" / "val" / "ai" / "root_loop")  # a folder loop up to the root
    samples = read_layout(root, "genimage")
    names = sorted(Path(s.path).name for s in samples)
    assert names == sorted(h.name for h in write_corpus_entries() if h.outcome != "not_listed")
    assert all(Path(s.path).resolve().is_relative_to(root.resolve()) for s in samples)
    assert "outside the dataset root" in caplog.text and "link loop" in caplog.text
    # the root itself may be a link: its files are inside it
    os.symlink(root, tmp_path / "root_link")
    assert len(read_layout(tmp_path / "root_link", "genimage")) == len(samples)


def write_corpus_entries() -> list[Hostile]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return write_corpus(Path(d) / "c")


# ---- training, evaluation and predict on a dataset that contains the corpus ----------------------------------


def _expected_skips(entries) -> Counter:
    return Counter(h.reason for h in entries if h.outcome == "skipped")


def _params(workdir: Path, **data) -> Path:
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["data"].update(data)
    p["profiles"]["tiny"]["train"]["epochs"] = 1
    return p


def _write(path: Path, p: dict) -> Path:
    path.write_text(yaml.safe_dump(p))
    return path


def _run(args):
    res = runner.invoke(app, args)
    return res


@pytest.mark.timeout(240)
def test_hostile_corpus_through_train_evaluate_and_predict(workdir, tiny_tree, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    train_dir, test_dir = data / "g1" / "train" / "nature", data / "g2" / "val" / "ai"
    entries = write_corpus(train_dir, outside=tmp_path / "outside_a")
    write_corpus(test_dir, outside=tmp_path / "outside_b")
    for d in (train_dir, test_dir):
        deny_read(d / "noperm.png", monkeypatch)
    expected = _expected_skips(entries)
    n_listed = sum(h.outcome != "not_listed" for h in entries)
    n_processed = sum(h.outcome == "processed" for h in entries)
    _write(workdir / "params.yaml", _params(workdir, root=str(data), max_skip_fraction=0.3))

    # training: every listed corpus file is in the training split; skips are counted by reason, and logged
    res = _run(["train", "--detector", "npr"])
    assert res.exit_code == 0, res.output
    summary = json.loads((workdir / "runs/tiny/npr/seed0/train/train.json").read_text())
    assert summary["n_train"] == 24 + n_listed
    assert summary["skipped"] == {"count": sum(expected.values()), "by_reason": dict(expected)}
    assert "skipped" in res.output and "fifo.png" in res.output

    # evaluation: the metrics JSON and the MLflow run list how many images were skipped and why
    res = _run(["evaluate", "--detector", "npr"])
    assert res.exit_code == 0, res.output
    mpath = workdir / "results/metrics/tiny/npr/seed0.json"
    metrics = json.loads(mpath.read_text())
    assert metrics["skipped"] == {"count": sum(expected.values()), "by_reason": dict(sorted(expected.items()))}
    assert Counter(f["reason"] for f in metrics["skipped_files"]) == expected
    assert {Path(f["path"]).name for f in metrics["skipped_files"]} == {h.name for h in entries if h.outcome == "skipped"}
    assert all(f["generator"] == "g2" for f in metrics["skipped_files"])
    assert metrics["n_images"] == 32 + n_processed
    preds = pd.read_parquet(workdir / "results/predictions/tiny/npr/seed0.parquet")
    corpus_preds = preds[preds.path.str.startswith(str(test_dir) + "/") & ~preds.path.str.contains("__")]
    assert sorted(Path(p).name for p in corpus_preds.path) == sorted(h.name for h in entries if h.outcome == "processed")
    assert np.isfinite(preds.fake_logit).all()

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    runs = {r.data.tags["sep_bench.kind"]: r for r in client.search_runs([exp.experiment_id])}
    for kind in ("train", "evaluate"):
        r = runs[kind]
        assert r.info.status == "FINISHED"
        assert r.data.metrics["skipped"] == sum(expected.values())
        assert r.data.tags["sep_bench.skipped"] == str(sum(expected.values()))
        assert r.data.tags["sep_bench.skip_reasons"] == ",".join(f"{k}={v}" for k, v in sorted(expected.items()))
        for reason, n in expected.items():
            assert r.data.metrics[f"skipped.{reason}"] == n, (kind, reason)

    # never a metric on a silently shrunken set: over the budget is a one-line error, the previous outputs stay
    before = mpath.read_bytes()
    _write(workdir / "strict.yaml", _params(workdir, root=str(data), max_skip_fraction=0.05))
    res = _run(["evaluate", "--detector", "npr", "--params", "strict.yaml"])
    assert res.exit_code == 2, res.output
    assert f"{sum(expected.values())} of {32 + n_listed} images could not be used" in res.output
    assert "max_skip_fraction=0.05" in res.output and "Traceback" not in res.output
    assert mpath.read_bytes() == before
    failed = [r for r in client.search_runs([exp.experiment_id]) if r.info.status == "FAILED"]
    assert len(failed) == 1 and "could not be used" in failed[0].data.tags["sep_bench.error"]
    res = _run(["train", "--detector", "npr", "--params", "strict.yaml", "--no-track", "--out", "strict_run"])
    assert res.exit_code == 2 and "training:" in res.output and "could not be used" in res.output, res.output

    # predict: one row per file with its status; a FIFO or a link loop never blocks
    res = _run(["predict", str(test_dir), "--detector", "npr", "--checkpoint",
                "runs/tiny/npr/seed0/train/best.safetensors", "--device", "cpu", "--out", "pred.csv"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(workdir / "pred.csv")
    status = {Path(p).name: s for p, s in zip(table.path, table.status)}
    for h in entries:
        if h.name == "dirloop":
            assert h.name not in status  # a folder link is not walked
            continue
        want = h.predict or ("ok" if h.outcome == "processed" else h.reason)
        assert status[h.name] == want, h.name
    assert table[table.status == "ok"].fake_prob.between(0, 1).all()
    assert table[table.status != "ok"].fake_prob.isna().all()


@pytest.mark.timeout(120)
def test_skip_budget_also_holds_per_test_generator(workdir, tiny_tree, tmp_path):
    """3 of 32 test images skipped is under a 15% budget overall, but 3 of g2's 16 is not: refused, naming g2."""
    from sep_bench.engine.evaluate import evaluate
    from sep_bench.engine.inference import SkipBudgetError
    from sep_bench.engine.train import train
    from sep_bench.protocol import load_params, resolve

    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    for i in range(3):
        (data / "g2" / "val" / "ai" / f"p{i}__{i:03d}.png").write_bytes(b"GIF89a broken")
    spec = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.data.root": str(data),
                                                         "profiles.tiny.train.epochs": 1,
                                                         "profiles.tiny.data.max_skip_fraction": 0.15}), "npr")
    res = train(spec, workdir / "r")
    with pytest.raises(SkipBudgetError, match=r"evaluation of npr on g2: 3 of 16 images could not be used"):
        evaluate(spec, res.best_checkpoint, workdir / "m.json", workdir / "p.parquet")
    assert not (workdir / "m.json").exists() and not (workdir / "p.parquet").exists()


@pytest.mark.timeout(120)
def test_validation_slice_is_never_silently_shrunk(workdir, tiny_tree, tmp_path):
    from sep_bench.engine.inference import SkipBudgetError
    from sep_bench.engine.train import train
    from sep_bench.protocol import load_params, resolve

    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    (data / "g1" / "train" / "ai" / "p3__003.png").write_bytes(b"")  # one of the 8 validation images (group p3)
    spec = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.data.root": str(data),
                                                         "profiles.tiny.train.epochs": 1,
                                                         "profiles.tiny.data.max_skip_fraction": 0.1}), "npr")
    with pytest.raises(SkipBudgetError, match="validation: 1 of 8 images could not be used"):
        train(spec, workdir / "r")


# ---- safe loading of weight files ---------------------------------------------------------------------------


class _Marker:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _EvalMarker(_Marker):
    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').close()",))


@pytest.mark.timeout(60)
def test_pickles_that_would_run_code_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    cases = {
        "zip.pth": lambda p: torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _Marker(str(marker))}, p),
        "legacy.pt": lambda p: torch.save({"w": _Marker(str(marker))}, p, _use_new_zipfile_serialization=False),
        "eval.bin": lambda p: torch.save({"model": {"w": _EvalMarker(str(marker))}}, p),
        "raw.pth": lambda p: p.write_bytes(pickle.dumps({"w": _Marker(str(marker))})),
    }
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(UnsafeCheckpointError, match=rf"{name}: refused") as err:
            load_state_dict(path)
        assert "arbitrary code" in str(err.value) and "safetensors" in str(err.value)
        assert not marker.exists(), name
    with pytest.raises(UnsafeCheckpointError, match="calls posix.system"):
        load_state_dict(tmp_path / "zip.pth")
    with pytest.raises(UnsafeCheckpointError, match="calls .*eval"):
        load_state_dict(tmp_path / "eval.bin")
    # plain tensors still load (weights_only allows them), wrappers and DDP prefixes unwrapped
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, tmp_path / "ok.pth")
    assert torch.equal(load_state_dict(tmp_path / "ok.pth")["w"], torch.ones(2))
    for bad, content in (("empty.pth", b""), ("junk.safetensors", b"\x00" * 40)):
        (tmp_path / bad).write_bytes(content)
        with pytest.raises(WeightsFileError, match=bad):
            load_state_dict(tmp_path / bad)


@pytest.mark.timeout(120)
def test_cli_refuses_a_malicious_official_checkpoint_in_one_line(workdir, tmp_path, tiny_tree):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "npr_official.pth"
    torch.save({"model": {"w": _Marker(str(marker))}}, evil)
    img = next((tiny_tree / "g2" / "val" / "ai").iterdir())
    res = runner.invoke(app, ["predict", str(img), "--detector", "npr", "--checkpoint", str(evil), "--official",
                              "--device", "cpu"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: npr_official.pth: refused: the pickle calls posix.system")
    assert not marker.exists()
