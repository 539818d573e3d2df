"""What a DVC stage declares and what its command really imports, for the dependency tests.

`declared(kind, ...)` reads `dvc.yaml` and substitutes the three variables the stage templates use (`${profile}`,
`${item.detector}`, `${item.seed}`); `traced_imports(argv, cwd)` runs a `sep-bench` command in a new interpreter
and returns the repository files of every module it imported (`sys.modules` at exit, so imports inside functions
count too); `compare` names what is imported but not declared, and what is declared but never imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

CODE_ROOTS = ("sep_bench", "baselines")

_TRACER = """
import atexit, json, sys
out = sys.argv.pop(1)

def _dump():
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    with open(out, "w") as fh:
        json.dump(sorted({f for f in files if f}), fh)

atexit.register(_dump)
sys.argv[0] = "sep-bench"
from sep_bench.main import run_local
run_local()
"""


def _substitute(value: str, variables: dict[str, str]) -> str:
    for name, sub in variables.items():
        value = value.replace("${" + name + "}", sub)
    assert "${" not in value, f"unresolved variable in {value!r}"
    return value


def stage_definition(kind: str, dvc_yaml: Path = REPO / "dvc.yaml") -> dict:
    return yaml.safe_load(dvc_yaml.read_text())["stages"][kind]


def declared(kind: str, *, profile: str, detector: str = "", seed: int = 0, dvc_yaml: Path = REPO / "dvc.yaml",
             field: str = "deps") -> list[str]:
    """The paths of one stage instance's `deps` (or `outs`/`metrics`), variables substituted."""
    variables = {"profile": profile, "item.detector": detector, "item.seed": str(seed)}
    entries = stage_definition(kind, dvc_yaml).get(field) or []
    paths = [next(iter(e)) if isinstance(e, dict) else e for e in entries]
    return [_substitute(str(p), variables) for p in paths]


def code_paths(paths: list[str]) -> list[str]:
    """The declared paths that are project code (under sep_bench/ or baselines/)."""
    return [p.rstrip("/") for p in paths if p.split("/", 1)[0] in CODE_ROOTS]


def traced_imports(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> set[str]:
    """Repository-relative paths of the project files imported by `sep-bench <argv>` run in `cwd`."""
    out = cwd / ".imports.json"
    env = {**os.environ, **(env or {})}
    env.pop("SEP_BENCH_WARM", None)
    res = subprocess.run([sys.executable, "-c", _TRACER, str(out), *argv], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"sep-bench {' '.join(argv)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    files = json.loads(out.read_text())
    out.unlink()
    roots = {str(r.resolve()) + os.sep for r in (REPO, cwd)}  # `python -c` puts cwd first on sys.path
    rel = {f[len(r):] for f in map(os.path.realpath, files) for r in roots if f.startswith(r)}
    return {f for f in rel if f.split("/", 1)[0] in CODE_ROOTS}


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def compare(imported: set[str], declared_code: list[str]) -> tuple[list[str], list[str]]:
    """(imported files no declared path covers, declared paths under which nothing was imported)."""
    undeclared = sorted(f for f in imported if not any(_under(f, d) for d in declared_code))
    unused = sorted(d for d in declared_code if not any(_under(f, d) for f in imported))
    return undeclared, unused


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def copy_worktree(dest: Path) -> None:
    """Copy the files git would commit (tracked + untracked-not-ignored) into `dest`."""
    import shutil

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def shrink_mini(params: dict, detectors: list[str]) -> dict:
    """The mini profile with fewer, smaller images and one short epoch (not the pinned build: no digest)."""
    params["run"].update(detectors=detectors, selection=[])
    mini = params["profiles"]["mini"]
    mini["data"]["minigen"] = {"seed": 0, "image_size": 48, "n_train_real": 24, "n_val_real": 8, "n_test_real": 8}
    mini["train"].update(epochs=1, batch_size=16)
    return params
