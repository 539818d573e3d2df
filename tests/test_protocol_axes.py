"""eval.align and eval.preprocess: extra variants of the one evaluation pass, and their report tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sep_bench.engine.evaluate import evaluate
from sep_bench.engine.train import train
from sep_bench.protocol import ProtocolError, load_params, resolve


def test_preprocessing_axis_rows_for_one_detector(workdir):
    from sep_bench.report.protocol_tables import write_format, write_preprocess

    over = {"profiles.tiny.train.epochs": 1, "profiles.tiny.eval.preprocess": ["official", "center_crop", "resize",
                                                                              "native"],
            "profiles.tiny.eval.align": "jpeg90"}
    spec = resolve(load_params(workdir / "params.yaml", over), "npr")
    res = train(spec, workdir / "train")
    rob = workdir / "results/robustness/tiny/npr/seed0"
    m = evaluate(spec, res.best_checkpoint, workdir / "results/metrics/tiny/npr/seed0.json", workdir / "p.parquet",
                 robustness_dir=rob)
    variants = m["perturbed"]
    assert set(variants) == {"aligned", "preprocess-center_crop", "preprocess-resize", "preprocess-native"}
    # NPR's own eval view is the central 32 x 32 crop (S = 32) of the 40 px images: the center_crop rule is the same
    cc = variants["preprocess-center_crop"]
    assert cc["preprocess"] == "center_crop" and cc["input_size"] == 32
    assert cc["generators"] == m["generators"]
    official = pd.read_parquet(workdir / "p.parquet")
    assert pd.read_parquet(rob / "preprocess-center_crop.parquet").equals(official)
    # native: the whole 40 px image (NPR takes any size), resize: 40 -> 32; both other logits
    for name in ("preprocess-native", "preprocess-resize"):
        other = pd.read_parquet(rob / f"{name}.parquet")
        assert len(other) == len(official) and not np.allclose(other.fake_logit, official.fake_logit)
    assert variants["aligned"]["align"] == {"align": "jpeg90", "applied": "jpeg90", "source": "params"}
    for k in ("acc", "real_acc", "fake_acc"):
        assert variants["aligned"]["mean"][k] is not None
    on_disk = json.loads((rob / "preprocess-native.json").read_text())
    assert on_disk["perturbation"] == "preprocess-native" and on_disk["input_size"] == 32

    clean = [json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())]
    files = write_preprocess(clean, {"npr": "npr"}, {"npr": spec.recipe.eval.preprocess}, [0], "tiny",
                             workdir / "tiny_preprocess")
    table = pd.read_csv(files[1])
    assert table["rule"].tolist() == ["official", "center_crop", "resize", "native"]
    assert table.loc[0, "acc"] == pytest.approx(table.loc[1, "acc"]) == pytest.approx(100 * m["mean"]["acc"])
    assert table.loc[3, "acc"] == pytest.approx(100 * variants["preprocess-native"]["mean"]["acc"])
    assert "| npr (S=32)" in files[0].read_text()
    fmt = write_format(clean, {"npr": "npr"}, [0], "tiny", workdir / "tiny_format")
    row = pd.read_csv(fmt[1]).iloc[0]
    assert row["aligned acc"] == pytest.approx(100 * variants["aligned"]["mean"]["acc"])
    assert row["Δ ACC"] == pytest.approx(row["aligned acc"] - row["clean acc"])
    assert "eval.align: jpeg90" in fmt[0].read_text() and "Add `formatonly`" in fmt[0].read_text()


def test_native_rule_on_a_fixed_size_detector_is_recorded_not_faked(workdir, monkeypatch):
    from sep_bench.baselines.formatonly import SPEC
    from sep_bench.engine.protocol_axes import axis_variants, input_size, native_config

    cfg = SPEC.make_config({"crop_size": 32})
    assert native_config(cfg) is None and input_size(SPEC, cfg) == 32
    spec = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.eval.preprocess": ["native"]}), "npr")
    [native] = axis_variants(spec, SPEC, cfg, [])
    assert native.name == "preprocess-native" and not native.supported

    # evaluated: recorded as unsupported (no metrics), and the table says n/a
    from sep_bench.report.protocol_tables import write_preprocess

    over = {"profiles.tiny.eval.preprocess": ["official", "native"], "profiles.tiny.train.epochs": 1,
            "detectors.formatonly": {"model": {"crop_size": 32}}}
    spec = resolve(load_params(workdir / "params.yaml", over), "formatonly")
    res = train(spec, workdir / "fo")
    rob = workdir / "results/robustness/tiny/formatonly/seed0"
    m = evaluate(spec, res.best_checkpoint, workdir / "m.json", workdir / "p.parquet", robustness_dir=rob)
    assert m["perturbed"] == {} and not (rob / "preprocess-native.parquet").exists()
    assert json.loads((rob / "preprocess-native.json").read_text())["supported"] is False
    files = write_preprocess([m], {"formatonly": "formatonly"}, {"formatonly": ["official", "native"]}, [0], "tiny",
                             workdir / "t")
    row = files[0].read_text().splitlines()[2]
    assert row.startswith("| formatonly (S=32)") and row.rstrip().endswith("n/a |")


def test_unknown_axis_values_name_the_allowed_ones(workdir):
    with pytest.raises(ProtocolError, match="distinct rules out of official, center_crop, resize, native"):
        load_params(workdir / "params.yaml", {"profiles.tiny.eval.preprocess": ["crop"]})
    with pytest.raises(ProtocolError, match="use none, jpeg"):
        load_params(workdir / "params.yaml", {"profiles.tiny.eval.align": "png"})
    # `jpeg` reads the real test images' quality: the tiny set's reals are PNGs, so there is none to read
    spec = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.eval.align": "jpeg"}), "npr")
    from sep_bench.data.splits import evaluation_samples
    from sep_bench.detectors import get_detector
    from sep_bench.engine.protocol_axes import axis_variants

    det = get_detector("npr")
    samples = evaluation_samples(spec.profile.data.root and __import__("pathlib").Path(spec.profile.data.root),
                                 spec.profile.data)
    with pytest.raises(ProtocolError, match="none of the 16 real images looked at is a JPEG"):
        axis_variants(spec, det, det.make_config(spec.recipe.model), samples)


def test_an_alignment_equal_to_a_listed_perturbation_reuses_its_result(workdir):
    over = {"profiles.tiny.train.epochs": 1, "profiles.tiny.eval.align": "jpeg90",
            "profiles.tiny.eval.perturbations": ["jpeg90", "blur1"]}
    spec = resolve(load_params(workdir / "params.yaml", over), "npr")
    res = train(spec, workdir / "train")
    m = evaluate(spec, res.best_checkpoint, workdir / "m.json", workdir / "p.parquet", robustness_dir=workdir / "r")
    aligned, same = m["perturbed"]["aligned"], m["perturbed"]["jpeg90"]
    assert aligned["generators"] == same["generators"] and aligned["perturbation"] == "aligned"
    assert m["efficiency"]["evaluation_variants"] == 3  # clean, jpeg90, blur1: the alias costs nothing


def test_resampling_alignments_parse_and_apply_their_steps_before_the_jpeg():
    from sep_bench.data.perturb import downscale, jpeg
    from sep_bench.engine.align import check_alignment, resolve_alignment

    a = resolve_alignment("down0.5+jpeg90")
    assert (a.quality, a.pre, a.label) == (90, "down0.5", "down0.5+jpeg90")
    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    out = a.function()(img)
    assert out.shape == (20, 24, 3) and np.array_equal(out, jpeg(downscale(img, 0.5), 90))
    assert resolve_alignment("jpeg90").label == "jpeg90" and resolve_alignment("none").function() is None
    assert check_alignment("blur1+down0.75+jpeg") == "blur1+down0.75+jpeg"
    for bad, match in (("down0.5+none", "unknown alignment"), ("jpeg75+jpeg95", "only down<scale> and blur"),
                       ("down1.5+jpeg95", "downscale factor"), ("down0.5", "unknown alignment")):
        with pytest.raises(ValueError, match=match):
            check_alignment(bad)


def test_resampling_before_the_jpeg_removes_an_earlier_compression_lattice():
    """A real image with an earlier JPEG (quality 60) keeps that quantisation lattice under a jpeg95 re-encoding,
    so it differs from a never-compressed image in format; down0.5 first leaves both with the new one only."""
    import torch

    from sep_bench.baselines.formatonly import format_features
    from sep_bench.data.perturb import jpeg
    from sep_bench.engine.align import resolve_alignment

    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(1)
    smooth = 128 + 60 * np.sin(x / 9.0)[..., None] * np.cos(y / 13.0)[..., None] + rng.normal(0, 12, (256, 256, 3))
    pristine = np.clip(smooth, 0, 255).astype(np.uint8)
    compressed = jpeg(pristine, 60)

    def lattice(img):
        luma = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return format_features(torch.from_numpy(luma)[None, None]).mean().item()

    for name, leaks in (("jpeg95", True), ("down0.5+jpeg95", False)):
        f = resolve_alignment(name).function()
        gap = lattice(f(compressed)) - lattice(f(pristine))
        assert (gap > 0.1) is leaks, (name, gap)


def _aligned_run(profile: str, row: str, seed: int, acc: float, applied: str = "jpeg95") -> None:
    from sep_bench import paths
    from sep_bench.io import write_json

    mean = {"acc": acc, "real_acc": acc, "fake_acc": acc}
    write_json(paths.robustness_dir(profile, row, seed) / "aligned.json",
               {"mean": mean, "align": {"align": applied, "applied": applied, "source": "params"}})


def test_the_format_table_and_the_report_flag_a_control_that_still_leaks_after_alignment(tmp_path, monkeypatch):
    from sep_bench.report.protocol_tables import FORMAT_LEAK_BAR, format_leak, write_format

    monkeypatch.chdir(tmp_path)
    clean = [{"detector": "formatonly", "seed": s, "mean": {"acc": 0.75, "real_acc": 0.9, "fake_acc": 0.6}}
             for s in (0, 1)]
    rows = {"formatonly": "formatonly¶"}
    _aligned_run("p", "formatonly", 0, 0.51)
    _aligned_run("p", "formatonly", 1, 0.53)
    assert format_leak(rows, [0, 1], "p") == ""
    text = write_format(clean, rows, [0, 1], "p", tmp_path / "p_format")[0].read_text()
    assert "still leaks" not in text

    _aligned_run("p", "formatonly", 1, (FORMAT_LEAK_BAR + 10) / 100)  # one seed above the bar is enough
    flag = format_leak(rows, [0, 1], "p")
    assert flag.startswith("format still leaks") and "seed 1: 70.00% under eval.align jpeg95" in flag
    assert "seed 0" not in flag
    text = write_format(clean, rows, [0, 1], "p", tmp_path / "p_format")[0].read_text()
    assert "**Format still leaks" in text and "| formatonly¶ (format still leaks) |" in text
    assert format_leak({"npr": "npr"}, [0, 1], "p") == ""  # no control in the run: nothing to say
