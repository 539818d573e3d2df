import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sep_bench.data.perturb import encode_jpeg, gaussian_kernel, parse_perturbation
from sep_bench.protocol import EvalSpec, ProtocolError, validate_model


@pytest.fixture
def img():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_jpeg_quality_is_read_back_from_the_bytes(img):
    def tables(data: bytes) -> dict:
        return Image.open(io.BytesIO(data)).quantization

    ref = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ref, format="JPEG", quality=75)
    assert tables(encode_jpeg(img, 75)) == tables(ref.getvalue())  # libjpeg's tables for quality 75
    assert tables(encode_jpeg(img, 50)) != tables(ref.getvalue())
    out = parse_perturbation("jpeg75")(img)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_blur_kernel_sums_to_one_and_keeps_constants(img):
    for sigma in (1, 2, 3):
        k = gaussian_kernel(sigma)
        assert k.sum() == pytest.approx(1.0) and len(k) == 2 * int(np.ceil(3 * sigma)) + 1
    flat = np.full((20, 20, 3), 77, np.uint8)
    assert np.array_equal(parse_perturbation("blur2")(flat), flat)
    blurred = parse_perturbation("blur2")(img)
    assert blurred.std() < img.std()  # high frequencies removed


def test_downscale_and_combinations_are_deterministic(img):
    assert parse_perturbation("down0.5")(img).shape == (24, 32, 3)
    assert parse_perturbation("down0.25")(img).shape == (12, 16, 3)
    combo = parse_perturbation("blur1+jpeg75+down0.5")
    assert np.array_equal(combo(img), combo(img.copy()))
    assert parse_perturbation("none") is None


@pytest.mark.parametrize("bad", ["jpeg0", "jpeg101", "blur0", "down1.5", "sharpen2", "jpeg75+"])
def test_bad_names_are_rejected_with_the_syntax(bad):
    with pytest.raises(ValueError, match="perturbation|quality|sigma|downscale"):
        parse_perturbation(bad)
    with pytest.raises(ProtocolError):
        validate_model(EvalSpec, {"perturbations": [bad]})


def test_perturbed_evaluation_writes_its_own_metrics(workdir):
    from typer.testing import CliRunner

    from sep_bench.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["train", "-d", "npr", "--no-track"]).exit_code == 0
    import yaml

    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["eval"]["perturbations"] = ["jpeg95", "blur1+down0.5"]
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    res = runner.invoke(app, ["evaluate", "-d", "npr", "--no-track"])
    assert res.exit_code == 0, res.output
    folder = workdir / "results/robustness/tiny/npr/seed0"
    import json

    for name in ("jpeg95", "blur1+down0.5"):
        m = json.loads((folder / f"{name}.json").read_text())
        assert m["perturbation"] == name and set(m["generators"]) == {"g1", "g2"}
    clean = json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())
    assert clean["perturbation"] == "none"
    assert not (folder / "index.json").exists()  # the variants are the folder's files; no index to keep in step


def test_report_has_a_robustness_table_and_plot(workdir):
    import yaml
    from typer.testing import CliRunner

    from sep_bench.cli import app

    runner = CliRunner()
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["eval"]["perturbations"] = ["jpeg95", "blur2"]
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    assert runner.invoke(app, ["train", "-d", "npr", "--no-track"]).exit_code == 0
    assert runner.invoke(app, ["evaluate", "-d", "npr", "--no-track"]).exit_code == 0
    res = runner.invoke(app, ["report", "--no-track", "--reference", "npr"])
    assert res.exit_code == 0, res.output
    md = (workdir / "results/tables/tiny_robustness.md").read_text()
    header = md.split("### Mean ACC", 1)[1].strip().splitlines()[0]
    assert [c.strip() for c in header.split("|")[1:-1]] == ["detector", "clean", "blur2", "jpeg95"]
    import json

    import pandas as pd

    clean = json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())["mean"]["acc"]
    table = pd.read_csv(workdir / "results/tables/tiny_robustness.csv")
    row = table[(table.metric == "acc") & (table.detector == "npr")].iloc[0]
    assert row["clean"] == pytest.approx(100 * clean, abs=0.01)
    jpeg = json.loads((workdir / "results/robustness/tiny/npr/seed0/jpeg95.json").read_text())["mean"]["acc"]
    assert row["jpeg95"] == pytest.approx(100 * jpeg, abs=0.01)
    assert (workdir / "results/plots/tiny_robustness.png").stat().st_size > 1000


def test_variant_subset_is_fixed_and_the_clean_pass_sees_every_image(workdir):
    import json

    import yaml
    from typer.testing import CliRunner

    from sep_bench.cli import app
    from sep_bench.data.splits import evaluation_samples
    from sep_bench.engine.evaluate import variant_subset

    runner = CliRunner()
    assert runner.invoke(app, ["train", "-d", "npr", "--no-track"]).exit_code == 0
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["eval"].update(perturbations=["jpeg75"], variant_subset=1)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    res = runner.invoke(app, ["evaluate", "-d", "npr", "--no-track"])
    assert res.exit_code == 0, res.output
    clean = json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())
    folder = workdir / "results/robustness/tiny/npr/seed0"
    pert = json.loads((folder / "jpeg75.json").read_text())
    base = json.loads((folder / "clean_subset.json").read_text())
    n_groups = 2 * len(clean["generators"])  # one image per (generator, class)
    assert pert["n_images"] == base["n_images"] == n_groups < clean["n_images"]
    assert pert["variant_subset"] == {"per_generator_and_class": 1, "n_images": n_groups}
    # the subset depends on generator, class and file name only, not on where the files are
    from sep_bench.protocol import load_params

    data = load_params(workdir / "params.yaml").profiles["tiny"].data
    samples = evaluation_samples(Path(data.root), data)
    moved = [type(s)(s.path.replace(str(data.root), "/elsewhere"), s.label, s.generator, s.split) for s in samples]
    assert variant_subset(samples, 1) == variant_subset(moved, 1)


def test_variant_generators_limit_the_extra_evaluations_to_the_first_generators(workdir):
    import json

    import yaml
    from typer.testing import CliRunner

    from sep_bench.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["train", "-d", "npr", "--no-track"]).exit_code == 0
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["eval"].update(perturbations=["jpeg75"], variant_subset=1, variant_generators=1)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    res = runner.invoke(app, ["evaluate", "-d", "npr", "--no-track"])
    assert res.exit_code == 0, res.output
    clean = json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())
    first = p["profiles"]["tiny"]["data"]["test_generators"][0]
    assert len(clean["generators"]) > 1  # the clean evaluation still sees every generator
    folder = workdir / "results/robustness/tiny/npr/seed0"
    for name in ("jpeg75", "clean_subset"):
        m = json.loads((folder / f"{name}.json").read_text())
        assert m["test_generators"] == [first] and list(m["generators"]) == [first], name
        assert m["n_images"] == 2
        assert m["variant_subset"] == {"per_generator_and_class": 1, "n_images": 2, "generators": [first]}
    assert "variant_generators" not in json.dumps(clean)  # the clean record is unchanged
