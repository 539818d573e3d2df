"""Checkpoints: safetensors for tensors, a JSON file beside it for everything else.

``<stem>.safetensors`` holds ``model.*`` (and for resumable checkpoints ``optim.*`` and ``rng.*``);
``<stem>.json`` holds the detector name, its model config, the weights source, the protocol hash and the
training position. A checkpoint alone is enough to rebuild its model (`load_detector`), and a checkpoint of
one detector is refused by another with a clear message.

Both files are written atomically (temp file + rename), the tensors first. A process killed between the two
renames would leave new tensors beside the previous save's JSON (e.g. a training position one step behind its
weights); the safetensors header therefore carries a token of the save's identity (detector, protocol hash,
position/epoch), and `load_checkpoint` refuses a pair whose tokens differ instead of resuming from it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sep_bench.detectors import Detector, get_detector
from sep_bench.io import atomic_path, read_json, write_json
from sep_bench.weights import WeightsSource

__all__ = ["save_checkpoint", "load_checkpoint", "load_detector", "CheckpointError", "meta_path"]


class CheckpointError(ValueError):
    pass


def meta_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


_HEADER_KEY = "sep_bench"
_PAIR_FIELDS = ("detector", "protocol_hash", "seed", "position", "epoch", "seen")


def _pair_token(meta: dict[str, Any]) -> str:
    """Identity of one save: equal in the tensors' header and the JSON only if both come from the same save."""
    ident = {k: meta.get(k) for k in _PAIR_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: Detector,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically write ``path`` (safetensors) and its JSON metadata; the JSON is written last."""
    path = Path(path)
    module = model.module if hasattr(model, "module") else model
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = dict(meta)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    for k, v in (rng_state or {}).items():
        tensors[f"rng.{k}"] = v.detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        # One metadata entry: safetensors writes several in a per-process random order (non-reproducible bytes).
        header = json.dumps({"detector": str(meta.get("detector", "")), "pair": _pair_token(meta)}, sort_keys=True)
        save_file(tensors, str(tmp), metadata={_HEADER_KEY: header})
    write_json(meta_path(path), meta)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file() or not meta_path(path).is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} (with its .json) not found")
    try:
        meta = read_json(meta_path(path))
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except (OSError, json.JSONDecodeError, Exception) as err:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable: {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {str(path)!r}: {meta_path(path).name} is not a JSON object")
    try:
        token = json.loads(header.get(_HEADER_KEY, "{}")).get("pair")
    except (ValueError, AttributeError):
        token = None
    if token is not None and token != _pair_token(meta):
        raise CheckpointError(
            f"checkpoint {str(path)!r} and {meta_path(path).name} come from different saves (the writing process "
            "was interrupted between the two files); train again to rewrite them"
        )
    return tensors, meta


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict | None:
    if "optimizer" not in meta:
        return None
    return _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])


def rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}


def load_detector(path: str | Path, expect: str | None = None) -> tuple[Detector, dict[str, Any]]:
    """Rebuild the detector saved at `path` (random init, then the saved weights) and return it with its meta."""
    tensors, meta = load_checkpoint(path)
    name = meta.get("detector")
    if expect is not None and name != expect:
        raise CheckpointError(
            f"{Path(path).name} is a checkpoint of detector {name!r}, not {expect!r}; pass --detector {name} "
            "or the checkpoint of the right detector"
        )
    spec = get_detector(name)
    cfg = spec.make_config(meta.get("model_config", {}))
    model = spec.build(cfg, WeightsSource.none())
    missing, unexpected = model.load_state_dict(model_state(tensors), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{Path(path).name} does not match detector {name!r} with its saved config "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
        )
    w = meta.get("weights", {})
    model.weights = WeightsSource(w.get("kind", "none"), w.get("ref", ""), w.get("sha256"))
    return model, meta
