"""Which stages a cluster submission runs, what each waits for, and how they group into job arrays.

Everything comes from DVC's public CLI: ``dvc dag --dot`` (the pipeline's edges) and ``dvc status --json`` (the
stages that are out of date). A stage runs when DVC reports it, or when a stage it depends on runs: ``dvc status``
(like ``dvc repro --dry``) judges a downstream stage by the files on disk, which its upstream job has not written
yet. This is a superset of what ``dvc repro`` would run; a job whose inputs turn out unchanged finds its stage up
to date and returns in seconds, exactly as ``dvc repro`` skips it. Data sources (``*.dvc`` files) are not stages.

A job waits (``afterok``) for the nearest running stages upstream of it. Stages of one kind (``train@...``) with
the same waits form one job array; a kind whose every stage waits for exactly one task of one array of the same
size (``evaluate@d-s`` after ``train@d-s``) becomes an array paired task by task (``aftercorr``).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DvcError", "Graph", "JobGroup", "read_graph", "out_of_date", "stages_to_run", "group_jobs", "plan"]

_EDGE = re.compile(r'^\s*"([^"]+)"\s*->\s*"([^"]+)"\s*;?\s*$')
_NODE = re.compile(r'^\s*"([^"]+)"\s*;?\s*$')


class DvcError(RuntimeError):
    pass


def _dvc(args: list[str], cwd: Path, dvc: str = "dvc") -> str:
    res = subprocess.run([dvc, *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise DvcError(f"`dvc {' '.join(args)}` failed in {cwd}: {' / '.join(tail) or f'exit {res.returncode}'}")
    return res.stdout


@dataclass(frozen=True)
class Graph:
    stages: tuple[str, ...]                    # pipeline stages, in `dvc dag` order (data sources left out)
    upstream: dict[str, frozenset[str]]        # stage -> the stages whose outputs it reads


def parse_dot(text: str) -> Graph:
    """`dvc dag --dot` output -> Graph. An edge "a" -> "b" means b reads a's outputs."""
    nodes: list[str] = []
    up: dict[str, set[str]] = {}
    for line in text.splitlines():
        if m := _EDGE.match(line):
            a, b = m.groups()
            up.setdefault(b, set()).add(a)
            for n in (a, b):
                if n not in nodes:
                    nodes.append(n)
        elif m := _NODE.match(line):
            if m.group(1) not in nodes:
                nodes.append(m.group(1))
    stages = tuple(n for n in nodes if not n.endswith(".dvc"))
    return Graph(stages, {s: frozenset(u for u in up.get(s, ()) if not u.endswith(".dvc")) for s in stages})


def read_graph(root: Path, dvc: str = "dvc") -> Graph:
    return parse_dot(_dvc(["dag", "--dot"], root, dvc))


def parse_status(text: str, graph: Graph) -> set[str]:
    """`dvc status --json` output -> the pipeline stages it reports (anything else, e.g. data.dvc, is left out)."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise DvcError(f"`dvc status --json` printed something that is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise DvcError("`dvc status --json` printed JSON that is not an object")
    return {name.split(":")[-1] for name in data} & set(graph.stages)


def out_of_date(root: Path, graph: Graph, dvc: str = "dvc") -> set[str]:
    return parse_status(_dvc(["status", "--json"], root, dvc), graph)


def stages_to_run(graph: Graph, changed: set[str]) -> list[str]:
    """`changed` and everything downstream of it, in `dvc dag` order."""
    run = set(changed)
    grew = True
    while grew:
        grew = False
        for s in graph.stages:
            if s not in run and graph.upstream[s] & run:
                run.add(s)
                grew = True
    return [s for s in graph.stages if s in run]


def ancestors(graph: Graph, stage: str) -> set[str]:
    found, todo = set(), list(graph.upstream.get(stage, ()))
    while todo:
        u = todo.pop()
        if u not in found:
            found.add(u)
            todo.extend(graph.upstream.get(u, ()))
    return found


def waits(graph: Graph, scheduled: list[str]) -> dict[str, frozenset[str]]:
    """stage -> the scheduled stages it must wait for, reduced: the nearest ones upstream (through stages that do
    not run), without those that another of them already waits for (evaluate@x waits for train@x, not also for
    the data stage that train@x waits for)."""
    chosen = set(scheduled)
    anc = {s: ancestors(graph, s) for s in scheduled}
    out = {}
    for s in scheduled:
        upstream = anc[s] & chosen
        out[s] = frozenset(u for u in upstream if not any(u in anc[v] for v in upstream if v != u))
    return out


def kind_of(stage: str) -> str:
    return stage.split("@", 1)[0]


@dataclass
class JobGroup:
    """One sbatch submission: a single stage, or an array of stages of one kind (task i runs stages[i])."""

    kind: str
    stages: list[str]
    after: list[str] = field(default_factory=list)   # stages of other groups this group waits for
    # True: `after` are the stages of one array, in task order, and task i waits only for that array's task i
    paired: bool = False

    @property
    def is_array(self) -> bool:
        return len(self.stages) > 1 or self.paired


def topo_order(graph: Graph, scheduled: list[str]) -> list[str]:
    """`scheduled` with every stage after the scheduled stages it waits for (stable otherwise)."""
    wait = waits(graph, scheduled)
    done: list[str] = []
    left = list(scheduled)
    while left:
        ready = [s for s in left if wait[s] <= set(done)]
        if not ready:
            raise DvcError(f"the pipeline graph has a cycle among {left}")
        done.extend(ready)
        left = [s for s in left if s not in ready]
    return done


def group_jobs(graph: Graph, scheduled: list[str], shape=lambda stage: None) -> list[JobGroup]:
    """The job groups of `scheduled`, in an order where every group comes after the groups it waits for.

    Stages group when their kind, their waits and `shape(stage)` (e.g. the resources) agree; see the module
    docstring for paired arrays.
    """
    order = topo_order(graph, scheduled)
    wait = waits(graph, order)
    keyed: dict[tuple, JobGroup] = {}
    for s in order:
        key = (kind_of(s), wait[s], shape(s))
        keyed.setdefault(key, JobGroup(kind_of(s), [], sorted(wait[s]))).stages.append(s)
    groups = list(keyed.values())
    groups = _pair(groups, shape)
    return _sorted_groups(groups)


def _pair(groups: list[JobGroup], shape) -> list[JobGroup]:
    """Merge a kind's single-stage groups into one array paired task by task with the array they each wait for."""
    by_kind: dict[str, list[JobGroup]] = {}
    for g in groups:
        by_kind.setdefault(g.kind, []).append(g)
    out = list(groups)
    for kind, members in by_kind.items():
        if len(members) < 2 or any(len(g.stages) != 1 or len(g.after) != 1 for g in members):
            continue
        targets = {g.after[0] for g in members}
        (owner, *more) = [h for h in out if targets & set(h.stages)] or [None]
        if (owner is None or more or set(owner.stages) != targets or len(owner.stages) != len(members)
                or len({shape(g.stages[0]) for g in members}) != 1):
            continue
        by_target = {g.after[0]: g.stages[0] for g in members}
        paired = JobGroup(kind, [by_target[t] for t in owner.stages], list(owner.stages), paired=True)
        out = [g for g in out if g not in members] + [paired]
    return out


def _sorted_groups(groups: list[JobGroup]) -> list[JobGroup]:
    done: list[JobGroup] = []
    placed: set[str] = set()
    left = list(groups)
    while left:
        ready = [g for g in left if set(g.after) <= placed]
        if not ready:
            raise DvcError("the job groups wait for each other in a cycle")
        for g in ready:
            done.append(g)
            placed.update(g.stages)
        left = [g for g in left if g not in ready]
    return done


def plan(root: Path, dvc: str = "dvc", shape=lambda stage: None) -> tuple[list[str], list[JobGroup]]:
    """(stages to run, job groups) for the workspace at `root`."""
    graph = read_graph(root, dvc)
    scheduled = stages_to_run(graph, out_of_date(root, graph, dvc))
    return scheduled, group_jobs(graph, scheduled, shape)
