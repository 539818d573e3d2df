"""Evaluation-only entries: find an entry's released weights file and pin down which file it was.

An entry's ``weights`` is a local file (relative to the project root, or absolute) or a hub reference
``hf-hub:<org>/<repo>/<path in the repo>``, downloaded into the Hugging Face cache when online and read from that
cache offline. `resolve_weights` returns the local file and its sha256; when the entry pins ``sha256``, any other
file is an error (a silently swapped checkpoint never reaches a table).

`write_record` writes the small JSON that the DVC stage ``released@<name>`` produces on every run: its content
(source and sha256, no machine-specific path) changes only when the weights do, so the evaluation stages that
depend on it rerun exactly then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sep_bench import paths
from sep_bench.io import write_json
from sep_bench.protocol import ProtocolError, ReleasedEntry
from sep_bench.weights import sha256_file

__all__ = ["ResolvedWeights", "resolve_weights", "write_record", "record_path", "HUB_PREFIX"]

HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class ResolvedWeights:
    name: str
    detector: str
    source: str  # the entry's `weights` as written
    path: Path  # the local file
    sha256: str
    note: str = ""

    def record(self) -> dict:
        """What identifies the weights, for metrics JSON and the DVC record (no local path: machine-specific)."""
        return {"name": self.name, "detector": self.detector, "source": self.source, "sha256": self.sha256,
                "bytes": self.path.stat().st_size, "note": self.note}


def record_path(name: str) -> Path:
    return paths.released_record(name)


def _hub_file(ref: str) -> Path:
    parts = ref.removeprefix(HUB_PREFIX).split("/")
    if len(parts) < 3 or not all(parts):
        raise ProtocolError(f"{ref!r}: a hub reference is hf-hub:<org>/<repo>/<path of the file in the repo>")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    from sep_bench.hub import HubItem, hub_file

    try:
        return hub_file(ref, HubItem(repo_id, (filename,)))  # cache only (at once) when the hub is unreachable
    except Exception as err:  # offline without a cached copy, unknown repo/file, no network
        raise FileNotFoundError(
            f"{ref}: cannot get {filename} from the Hugging Face hub repo {repo_id} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); when offline, download it once online or give a "
            "local file path"
        ) from None


def resolve_weights(name: str, entry: ReleasedEntry, root: Path = Path(".")) -> ResolvedWeights:
    """The local file of `entry` (downloading a hub reference when online) and its sha256, checked against the pin."""
    if entry.weights.startswith(HUB_PREFIX):
        path = _hub_file(entry.weights)
    else:
        path = Path(entry.weights).expanduser()
        path = path if path.is_absolute() else Path(root) / path
        if not path.is_file():
            raise FileNotFoundError(
                f"released.{name}.weights: {entry.weights} not found (put the authors' file there, or change the path)"
            )
    digest = sha256_file(path)
    if entry.sha256 and digest != entry.sha256:
        raise ProtocolError(
            f"released.{name}: {entry.weights} has sha256 {digest}, but the entry pins {entry.sha256}; "
            "a different file than the one pinned (update sha256 only if the new file is intended)"
        )
    return ResolvedWeights(name, entry.detector, entry.weights, path, digest, entry.note)


def write_record(resolved: ResolvedWeights, out: Path | None = None) -> Path:
    out = out or record_path(resolved.name)
    write_json(out, resolved.record())
    return out
