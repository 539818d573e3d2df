"""The import rules of docs/architecture.md, checked on the source (AST, every import including function-local ones):

1. no project module imports one from a higher layer (`LAYERS`, lowest first);
2. no import cycle among project modules;
3. typer (the command line) only in sep_bench/cli;
4. no detector imports another detector's private (``_name``) function;
5. pyproject.toml installs exactly the packages there are (baselines/ as sep_bench.baselines);
6. a stage command imports its own command module and stage only (lazy command groups, one job module a stage).

A failure names the offending import (file, line, imported module).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from tests.conftest import REPO

#: (layer name, module prefixes), lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("sep_bench", "sep_bench.io", "sep_bench.hostinfo", "sep_bench.stage_log", "sep_bench.protocol.syntax")),
    ("protocol", ("sep_bench.protocol", "sep_bench.paths", "sep_bench.weights", "sep_bench.hub",
                  "sep_bench.tracking", "sep_bench.fingerprint")),
    ("data", ("sep_bench.data", "sep_bench.layers", "sep_bench.acquire")),
    ("registry", ("sep_bench.detectors", "sep_bench.released", "sep_bench.recon.config")),
    ("models", ("sep_bench.baselines", "sep_bench.recon")),
    ("engine", ("sep_bench.engine",)),
    ("jobs", ("sep_bench.engine.jobs",)),
    ("report", ("sep_bench.report",)),
    ("pipeline", ("sep_bench.warm", "sep_bench.runner", "sep_bench.cluster")),
    ("cli", ("sep_bench.cli",)),
    ("main", ("sep_bench.main",)),
]

def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "baselines":
        parts = ["sep_bench", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*sorted((REPO / "sep_bench").rglob("*.py")), *sorted((REPO / "baselines").rglob("*.py"))]
    return {_module_name(f): f for f in files}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import in `path` that names a project module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            names = [a.name for a in node.names]
            # `from sep_bench import paths` imports the module sep_bench.paths
            targets = [(f"{base}.{n}", []) for n in names if f"{base}.{n}" in known] or [(base, names)]
        else:
            continue
        for target, names in targets:
            if target.startswith("baselines"):
                target = f"sep_bench.{target}"
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((node.lineno, target, names))
    return found


def _layer(module: str) -> int:
    best, level = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level >= 0, f"{module} is in no layer of tests/test_imports.py LAYERS (add it, and to docs/architecture.md)"
    return level


def _graph():
    mods = _modules()
    known = set(mods)
    return mods, {m: _imports(m, p, known) for m, p in mods.items()}


def test_no_module_imports_a_higher_layer():
    mods, graph = _graph()
    bad = []
    for m, imports in graph.items():
        for line, target, _ in imports:
            if _layer(target) > _layer(m):
                bad.append(f"{mods[m].relative_to(REPO)}:{line}: {m} ({LAYERS[_layer(m)][0]}) imports {target} "
                           f"({LAYERS[_layer(target)][0]})")
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    mods, graph = _graph()
    # a package's __init__ importing its own submodules (re-exports) is no cycle of behaviour: a submodule
    # importing its package's name only gets what __init__ defined before; count edges between distinct modules
    edges = {m: {t for _, t, _ in imports if not m.startswith(t + ".")} for m, imports in graph.items()}
    cycles = _cycles(edges)
    detail = []
    for comp in cycles:
        members = set(comp)
        for m in comp:
            detail += [f"  {mods[m].relative_to(REPO)}:{line}: {m} -> {t}" for line, t, _ in graph[m] if t in members]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_typer_only_in_the_cli():
    bad = []
    for m, path in _modules().items():
        if m.startswith("sep_bench.cli"):
            continue
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(import typer|from typer\b)", line):
                bad.append(f"{path.relative_to(REPO)}:{line_no}: {line.strip()}")
    assert not bad, "typer outside sep_bench/cli:\n" + "\n".join(bad)


def test_no_detector_imports_another_detectors_private_function():
    mods, graph = _graph()
    detectors = ("sep_bench.baselines.",)
    bad = []
    for m, imports in graph.items():
        for line, target, names in imports:
            private = [n for n in names if n.startswith("_")]
            other = target.split(".")[:3] != m.split(".")[:3]
            if m.startswith(detectors) and target.startswith(detectors) and private and other:
                bad.append(f"{mods[m].relative_to(REPO)}:{line}: {m} imports {', '.join(private)} from {target}")
    assert not bad, "\n".join(bad)


def test_pyproject_installs_every_package_and_baselines_under_sep_bench():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {_module_name(p.parent / "__init__.py") for p in (REPO / "sep_bench").rglob("__init__.py")}
    folders |= {"sep_bench.baselines"}
    assert set(cfg["packages"]) == folders
    assert cfg["package-dir"] == {"sep_bench.baselines": "baselines"}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["sep_bench.detectors"]
    assert all(v.startswith("sep_bench.") for v in entry_points.values())


def test_a_stage_command_imports_its_own_stage_only():
    """`sep-bench evaluate` (here stopped at its missing checkpoint, after the engine is imported) loads neither
    the training job, the report, the download code, the pipeline runner nor another detector's module."""
    from sep_bench.cli import imported_modules

    mods = imported_modules(["evaluate", "--detector", "npr", "--checkpoint", "no-such.safetensors", "--no-track"],
                            cwd=str(REPO))
    assert {"sep_bench.cli.evaluate", "sep_bench.engine.jobs.evaluate", "sep_bench.engine.evaluate",
            "sep_bench.baselines.npr"} <= mods
    unwanted = [m for m in mods if m.startswith(("sep_bench.report", "sep_bench.acquire", "sep_bench.runner",
                                                 "sep_bench.engine.jobs.train", "sep_bench.baselines.sep"))
                or (m.startswith(("sep_bench.cli.", "sep_bench.baselines.")) and m not in (
                    "sep_bench.cli.common", "sep_bench.cli.evaluate", "sep_bench.baselines.npr"))]
    assert not unwanted
