"""``data/stamps/<profile>.json``: what the DVC data stage of an external profile depends on instead of the data.

A stamp holds the sha256 of each of the profile's dataset manifests (``MANIFEST.sha256.json`` at `root` and, when
set, `train_root`), so it changes exactly when the data change (a new acquisition, a re-stamped tree), and the
pipeline never hashes ``data/external`` itself (hundreds of GB for GenImage). It is written by `sep-bench data get`
after a download and by `sep-bench data prepare` after it has verified a tree (a tree put there by hand gets its
manifest and its stamp by one ``sep-bench data prepare --profile <name>``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sep_bench.data.pairing import MANIFEST_NAME
from sep_bench.io import read_json, write_json

__all__ = ["STAMPS_DIR", "stamp_path", "stamp_content", "write_stamp"]

STAMPS_DIR = Path("data/stamps")  # one small file per external profile, for the DVC data stage to depend on


def stamp_path(profile: str, stamps_dir: Path = STAMPS_DIR) -> Path:
    return Path(stamps_dir) / f"{profile}.json"


def stamp_content(profile: str, data) -> dict:
    """The stamp of profile `profile` whose `data` is a `protocol.DataSpec` with ``source: external``."""
    entry = {}
    for root in (r for r in (data.root, data.train_root) if r):
        manifest = Path(root) / MANIFEST_NAME
        entry[root] = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    return {"profile": profile, "manifests_sha256": entry}


def write_stamp(profile: str, data, stamps_dir: Path = STAMPS_DIR) -> Path | None:
    """Write the profile's stamp when its content changed (an unchanged stamp keeps its bytes and its mtime);
    returns the path when it was written, else None."""
    path = stamp_path(profile, stamps_dir)
    content = stamp_content(profile, data)
    try:
        if read_json(path) == content:
            return None
    except (OSError, ValueError):
        pass
    write_json(path, content)
    return path
