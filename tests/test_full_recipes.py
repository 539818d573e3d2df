"""Every full recipe runs: per detector, the stage commands of dvc.yaml (reconstruct where the recipe has one,
train, evaluate) on a synthetic tree with the real set's shape and known bad files, under the run budget ``ci``
with random weights, through `benchmarks.full_recipes.run_detector` (what the benchmark measures).

Each command must exit 0, the evaluation must write its metrics with ``budget: ci``, and the known bad files of
the test split must be recorded as skips (not a crash, not a silently shorter list).

CI runs the recipes of `benchmarks.full_recipes.ci_group`: the cheapest by the committed measurement
(results/benchmarks/full_recipes.json, docs/real-data.md), as many as `CI_CPU_BUDGET_S` holds; the others, too slow
for CI's 2 cores, carry the marker ``full_recipes`` and run with ``-m full_recipes`` (e.g. nightly); without it they
are skipped with that reason and their measured cost, never dropped.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import full_recipes as fr
from sep_bench.protocol import load_params
from tests.conftest import REPO

pytestmark = pytest.mark.slow

DETECTORS = list(load_params(REPO / "params.yaml").run.detectors)

MEASURED = json.loads((REPO / "results/benchmarks/full_recipes.json").read_text())
CI_CPU_BUDGET_S = fr.CI_CPU_BUDGET_S
CI_GROUP = fr.ci_group(MEASURED)


def _cost(profile: str, detector: str) -> str:
    run = MEASURED["runs"].get(profile, {}).get(detector)
    if run is None:
        return "not measured"
    return f"measured {run['cpu_s']:.0f} CPU s" + (f", {run['error']}" if "error" in run else "")


def _params(profile: str, names) -> list:
    return [pytest.param(profile, d, id=f"{profile}-{d}",
                         marks=() if (profile, d) in CI_GROUP else (pytest.mark.full_recipes,)) for d in names]


CASES = _params("genimage", DETECTORS) + _params("aigcbench", fr.AIGCBENCH_DETECTORS)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """profile -> Workspace, made on first use (synthetic tree + data stage) with its warm server (the commands
    run in forks of it, as `sep-bench pipeline` runs its stages), shared by the module's tests."""
    made: dict = {}

    def get(profile: str) -> fr.Workspace:
        if profile not in made:
            ws = fr.make_workspace(tmp_path_factory.mktemp(f"full-{profile}"), profile, fr.DEFAULT_BUDGET)
            made[profile] = ws
            assert ws.start_warm()["ready"], (ws.logs / "warm-server.log").read_text()
        return made[profile]

    yield get
    for ws in made.values():
        ws.close()


@pytest.fixture(autouse=True)
def _only_ci_group_unless_selected(request):
    if request.node.get_closest_marker("full_recipes") and "full_recipes" not in (request.config.option.markexpr
                                                                                 or ""):
        profile, detector = request.node.callspec.params["profile"], request.node.callspec.params["detector"]
        pytest.skip(f"beyond CI's {CI_CPU_BUDGET_S:.0f} CPU s for full recipes ({_cost(profile, detector)}; "
                    "results/benchmarks/full_recipes.json): run with -m full_recipes")


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("profile,detector", CASES)
def test_full_recipe_trains_and_evaluates(workspaces, profile, detector):
    ws = workspaces(profile)
    result = fr.run_detector(ws, detector, timeout_s=1800)
    assert "error" not in result, json.dumps(result, indent=1)
    for stage, rec in result["commands"].items():
        assert rec["exit"] == 0 and rec["cpu_s"] > 0 and rec.get("warm"), (stage, rec)
    assert set(result["commands"]) >= {"train", "evaluate"}
    assert result["budget"] == "ci" and result["n_images"] > 0
    # the known bad files of the synthetic tree's test split are skips with a reason, each of them
    assert result["skipped_files"] == ws.bad_test_files
    assert result["skipped"]["count"] == len(ws.bad_test_files) == sum(result["skipped"]["by_reason"].values())
    if profile == "genimage":
        assert len(ws.bad_test_files) == 3  # ADM's and GLIDE's zero-byte PNGs, SD v1.5's truncated JPEG
        # budgets.ci: the extra evaluations on the first test generator, one image per class
        assert set(result["variants"]) >= {"jpeg95", "blur1+jpeg75", "aligned", "preprocess-resize"}
        assert result["variant_subset"] == {"per_generator_and_class": 1, "n_images": 2, "generators": ["Midjourney"]}


def test_stage_commands_are_dvc_yaml_s():
    cmds = fr.stage_commands(REPO / "dvc.yaml", "npr", 0)
    assert cmds["train"] == ["sep-bench", "train", "--detector", "npr", "--seed", "0"]
    assert cmds["evaluate"] == ["sep-bench", "evaluate", "--detector", "npr", "--seed", "0"]
    assert cmds["reconstruct"] == ["sep-bench", "reconstruct", "--detector", "npr"]


def test_a_failing_command_is_measured_and_its_error_line_kept(tmp_path):
    import sys

    code = "import sys; print('working'); print('ValueError: bad input', file=sys.stderr); sys.exit(3)"
    rec = fr.run_measured([sys.executable, "-c", code], tmp_path, {}, tmp_path / "log", 60)
    assert rec["exit"] == 3 and rec["error"] == "ValueError: bad input" and rec["peak_rss_mib"] > 0
    rec = fr.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, {}, tmp_path / "log", 1)
    assert rec["exit"] != 0 and "timeout" in rec["error"] and rec["wall_s"] < 20


def test_the_ci_group_is_the_cheapest_measured_recipes_within_the_budget():
    runs = {"genimage": {"a": {"cpu_s": 50.0}, "b": {"cpu_s": 10.0}, "c": {"cpu_s": 30.0, "error": "evaluate: x"},
                         "d": {"cpu_s": 45.0}}, "aigcbench": {"a": {"cpu_s": 20.0}}}
    report = {"budget": {"name": fr.DEFAULT_BUDGET}, "runs": runs}
    assert fr.ci_group(report, 80.0) == {("genimage", "b"), ("aigcbench", "a"), ("genimage", "d")}
    assert fr.ci_group(report, 5.0) == set()
    assert fr.ci_group({**report, "budget": {"name": "smoke"}}, 1e9) == set()  # measured under another budget
    assert CI_GROUP and sum(MEASURED["runs"][p][d]["cpu_s"] for p, d in CI_GROUP) <= CI_CPU_BUDGET_S
