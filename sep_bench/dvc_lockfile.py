"""``dvc repro`` with a fast lockfile update, for `sep-bench pipeline`.

DVC rewrites the whole ``dvc.lock`` after every stage it runs, reading and writing it with ruamel.yaml's
round-trip parser and emitter, which are pure Python. The default run's lockfile is about 280 KB (every stage
records the parameters it depends on), so each update costs about a second and a half on two cores, over a minute
of a 46-stage run (``python benchmarks/dvc_lockfile.py`` measures it on this checkout's lockfile).

``python -m sep_bench.dvc_lockfile repro ...`` runs DVC in this process with one change: while a stage's entry is
written, ``dvc.lock`` is read with the C-accelerated safe loader and written with libyaml's emitter (the same
data; other line wrapping and null spelling). Every other file (dvc.yaml, .dvc files) goes through DVC's own
functions. `canonicalize` then rewrites the lockfile once with DVC's own dumper, so the file a run leaves is byte
for byte what plain ``dvc repro`` writes; an interrupted run leaves valid YAML in the fast spelling, which DVC
reads as the same data and the next complete run canonicalizes. ``sep-bench pipeline --plain-dvc`` runs DVC as is.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["LOCKFILE", "install", "canonicalize", "main"]

LOCKFILE = "dvc.lock"


def _plain(obj: Any) -> Any:
    """Plain dicts and lists (DVC's serializer may hand over OrderedDicts, which the safe representer refuses)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _fast_yaml():
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=False)   # libyaml's parser and emitter when ruamel.yaml.clib is installed
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False   # keep DVC's key order
    yaml.width = 4096
    yaml.allow_unicode = True
    return yaml


def _fast_parse(text: str, path: Any) -> dict:
    from ruamel.yaml import YAMLError

    from dvc.utils.serialize._yaml import YAMLFileCorruptedError

    try:
        return _fast_yaml().load(text) or {}
    except YAMLError as exc:
        raise YAMLFileCorruptedError(path) from exc


def _fast_dump(data: Any, stream) -> None:
    _fast_yaml().dump(_plain(data), stream)


def install() -> None:
    """Route DVC's lockfile updates through the fast reader and writer (this process only)."""
    import dvc.dvcfile
    from dvc.utils.serialize import _common, modify_yaml

    if getattr(dvc.dvcfile.modify_yaml, "_sep_bench_fast", False):
        return

    @contextmanager
    def fast_modify_yaml(path, fs=None) -> Iterator[dict]:
        if os.path.basename(os.fspath(path)) != LOCKFILE:
            with modify_yaml(path, fs=fs) as data:
                yield data
            return
        with _common._modify_data(path, _fast_parse, _fast_dump, fs=fs) as data:
            yield data

    fast_modify_yaml._sep_bench_fast = True
    dvc.dvcfile.modify_yaml = fast_modify_yaml


def canonicalize(path: Path = Path(LOCKFILE)) -> bool:
    """Rewrite `path` with DVC's own dumper if its text differs from it (same data); True if rewritten."""
    from dvc.utils.serialize._yaml import _dump

    path = Path(path)
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    out = io.StringIO()
    _dump(_fast_parse(text, path), out)
    if out.getvalue() == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    from dvc.cli import main as dvc_main

    install()
    return dvc_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
