import pytest
import yaml

from sep_bench.detectors import get_detector
from sep_bench.protocol import ProtocolError, deep_merge, load_params, resolve
from tests.conftest import REPO, tiny_params


def test_repository_params_validate_for_every_profile_and_detector():
    p = load_params(REPO / "params.yaml")
    assert p.profile == "mini"
    for prof in p.profiles:
        for det in p.detectors:
            spec = resolve(p, det, prof)
            assert spec.profile_name == prof and len(spec.protocol_hash()) == 16
            get_detector(det).make_config(spec.recipe.model)  # the detector's own schema accepts its block
    genimage = p.profiles["genimage"].data
    assert genimage.test_generators == ["Midjourney", "SDv1.4", "SDv1.5", "ADM", "GLIDE", "Wukong", "VQDM", "BigGAN"]
    assert len(p.profiles["aigcbench"].data.test_generators) == 16


def _write(tmp_path, params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"profiles.tiny.train.epohcs": 1}, "profiles.tiny.train.epohcs: unknown key; allowed: epochs, batch_size"),
        ({"profiles.tiny.train.epochs": "many"}, "profiles.tiny.train.epochs: Input should be a valid integer"),
        ({"profiles.tiny.amp": "fp8"}, "Input should be 'off', 'bf16' or 'fp16'"),
        ({"profile": "nope"}, "profile 'nope' is not defined; defined: tiny"),
        ({"run.detectors": ["npr", "ghost"]}, "run.detectors names ['ghost'] without a block"),
        ({"profiles.tiny.data.layout": "imagenet"}, "Input should be 'genimage', 'aigcbench' or 'folder'"),
        ({"profiles.tiny.data.val.group_pattern": "(x)"}, "named group"),
    ],
)
def test_errors_name_the_key_and_allowed_values(tmp_path, tiny_tree, override, expected):
    path = _write(tmp_path, tiny_params(tiny_tree))
    with pytest.raises(ProtocolError) as err:
        load_params(path, override)
    assert expected in str(err.value)
    assert "\n" not in str(err.value).strip() or len(str(err.value).splitlines()) <= 3


def test_detector_overrides_merge_over_profile_and_are_validated(tmp_path, tiny_tree):
    params = tiny_params(tiny_tree)
    params["detectors"]["npr"]["overrides"] = {"tiny": {"train": {"epochs": 5}, "model": {"crop_size": 24}}}
    spec = resolve(load_params(_write(tmp_path, params)), "npr")
    assert spec.recipe.train.epochs == 5 and spec.recipe.train.batch_size == 8
    assert spec.recipe.model["crop_size"] == 24 and spec.recipe.model["layers"] == [1, 1]
    params["detectors"]["npr"]["overrides"] = {"tiny": {"train": {"epochs": 0}}}
    with pytest.raises(ProtocolError, match="detectors.npr.overrides.tiny.train.epochs"):
        resolve(load_params(_write(tmp_path, params)), "npr")


def test_protocol_hash_changes_with_any_value(tmp_path, tiny_tree):
    base = resolve(load_params(_write(tmp_path, tiny_params(tiny_tree))), "npr").protocol_hash()
    other = resolve(load_params(_write(tmp_path, tiny_params(tiny_tree, epochs=3))), "npr").protocol_hash()
    assert base != other


def test_unknown_detector_block(tmp_path, tiny_tree):
    with pytest.raises(ProtocolError, match="no block detectors.sep; defined: npr"):
        resolve(load_params(_write(tmp_path, tiny_params(tiny_tree))), "sep")


def test_deep_merge_does_not_mutate():
    a = {"x": {"y": 1, "z": 2}}
    out = deep_merge(a, {"x": {"y": 3}})
    assert out == {"x": {"y": 3, "z": 2}} and a == {"x": {"y": 1, "z": 2}}


def test_every_dvc_parameter_exists_in_params_yaml_for_every_profile_and_detector():
    """DVC fails a stage whose listed parameter is absent from params.yaml (schema defaults do not count)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage in dvc["stages"].values():
        for key in stage.get("params", []):
            for profile in params["profiles"]:
                # a released entry's stages exist only for defined entries: check with the documented example too
                entries = [*params.get("released", {}), "example"]
                for det, entry in ((d, e) for d in params["detectors"] for e in entries):
                    if "${item.entry}" in key and entry not in params.get("released", {}):
                        continue
                    for budget in params["budgets"]:  # every budget `-S budget=<name>` can select, full included
                        dotted = key.replace("${profile}", profile).replace("${item.detector}", det)
                        dotted = dotted.replace("${item.entry}", entry).replace("${budget}", budget)
                        node = params
                        for part in dotted.split("."):
                            assert isinstance(node, dict) and part in node, f"{dotted} missing from params.yaml"
                            node = node[part]
