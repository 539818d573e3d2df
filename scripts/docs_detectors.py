"""The detectors page's table: one row per detector that sep-bench itself registers (its own entry points, not
those of installed plugin packages), from the registry's specs (summary, paper, provenance, repository) and the
`mini` overrides in params.yaml."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import yaml

from sep_bench.detectors import ENTRY_POINT_GROUP, get_detector

DISTRIBUTION = "sep-bench"
MARKS = {"official": "", "official-inference": " °", "paper": " ¶"}


def own_detectors() -> list[str]:
    """Names registered by the sep-bench distribution's own entry points, sorted."""
    eps = entry_points(group=ENTRY_POINT_GROUP)
    return sorted(ep.name for ep in eps if ep.dist is not None and ep.dist.name == DISTRIBUTION)


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def mini_shrink(params: dict, name: str) -> str:
    """What the `mini` profile changes in the detector's recipe: ``block: key value, ...; block: ...``."""
    mini = params["detectors"].get(name, {}).get("overrides", {}).get("mini", {})
    if not mini:
        return "nothing (the full recipe)"
    parts = []
    for block, value in mini.items():
        items = _flatten(value) if isinstance(value, dict) else [("", value)]
        parts.append(f"**{block}** " + ", ".join(f"{k} {_value(v)}".strip() for k, v in items))
    return _cell("; ".join(parts)).replace("_", "\\_")


def _value(value: Any) -> str:
    """A params.yaml value as YAML writes it inline (true, null, [1, 2])."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _repo_link(repo: str) -> str:
    """A link named by the repository's owner/name; what follows the address stays as text."""
    if not repo.startswith("http"):
        return _cell(repo)
    url, _, rest = repo.partition(" ")
    return f"[{url.removeprefix('https://').removeprefix('github.com/')}]({url}) {_cell(rest)}".strip()


def detectors_table(params: dict) -> str:
    lines = ["| name | what it is | paper | provenance | official repository | what the `mini` recipe changes |",
             "|---|---|---|---|---|---|"]
    for name in own_detectors():
        spec = get_detector(name)
        repo = _repo_link(spec.repo)
        what = spec.summary.split(": ", 1)[-1]
        cells = [f"`{name}`{MARKS[spec.provenance]}", _cell(what), _cell(spec.paper), spec.provenance, repo,
                 mini_shrink(params, name)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
