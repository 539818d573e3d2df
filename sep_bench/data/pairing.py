"""How an installed dataset's real images are paired with its generators, read from the tree's manifest.

`sep-bench data get` records the pairing per generator in ``MANIFEST.sha256.json`` (`sep_bench.acquire`); the
evaluation reads it here, so evaluating depends on the manifest's format and not on the download code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

__all__ = ["MANIFEST_NAME", "PAIRING_TAG", "SHARED_REALS_CAPTION", "data_pairing"]

MANIFEST_NAME = "MANIFEST.sha256.json"
PAIRING_TAG = "sep_bench.data_pairing"
SHARED_REALS_CAPTION = ("Real images of this data carry no generator (third-party copy): they were shared out among "
                        "the generators by content hash, so per-generator numbers are not the benchmark's.")


def data_pairing(root: str | Path, generators: Iterable[str] | None = None) -> str | None:
    """How the real images of `root` (its manifest) are paired with generators, as one tag value.

    ``shared-reals`` if any of `generators` (all when None) has its reals shared out by hash (a copy without the
    pairing), else ``benchmark`` / ``recovered-from-path`` / ``real-from:<dir>`` (joined with "," when mixed);
    None when the tree has no readable manifest or the manifest predates the record (minigen, trees put there by
    hand)."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    pairing = manifest.get("data_pairing") if isinstance(manifest, dict) else None
    pairing = pairing if isinstance(pairing, dict) else {}
    if generators is not None:
        wanted = set(generators)
        pairing = {g: v for g, v in pairing.items() if g in wanted}
    values = {str(v) for v in pairing.values()}
    if not values:
        return None
    return "shared-reals" if "shared-reals" in values else ",".join(sorted(values))
