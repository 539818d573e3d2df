"""The profile's `deterministic` switch sets what torch reads when it loads, before it loads."""

import json
import os
import subprocess
import sys

import yaml

from sep_bench.engine.determinism import deterministic_env

PROBE = (
    "import json, os, sys; from pathlib import Path; from sep_bench.cli.common import load; "
    "load(Path(sys.argv[1]), None); import torch; "
    "print(json.dumps([torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR')]))"
)


def _probe(tmp_path, deterministic: bool) -> list:
    from tests.conftest import tiny_params

    params = tiny_params(tmp_path)
    params["profiles"]["tiny"]["deterministic"] = deterministic
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY")}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_deterministic_profile_pins_mkl_and_aten_before_torch_loads(tmp_path):
    capability, cbwr = _probe(tmp_path, True)
    assert cbwr == "COMPATIBLE"
    if "ATEN_CPU_CAPABILITY" in deterministic_env():  # x86 with AVX2
        assert capability == "AVX2"


def test_default_profile_leaves_torch_alone(tmp_path):
    _, cbwr = _probe(tmp_path, False)
    assert cbwr is None


def test_the_cli_reads_the_real_params_before_anything_imports_torch():
    """Every command enters `user_errors` and validates params.yaml (all profiles, every detector block) first:
    neither may import torch, or the deterministic environment would come too late."""
    code = ("import sys\nfrom pathlib import Path\nimport sep_bench.cli.train\nfrom sep_bench.cli.common import load, "
            "user_errors\nwith user_errors():\n    load(Path('params.yaml'), 'genimage')\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    assert out.strip().splitlines()[-1] == "[]"
