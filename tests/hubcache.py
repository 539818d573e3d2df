"""A Hugging Face hub cache of a test's own: files in the cache's layout, so the real lookup
(`huggingface_hub.try_to_load_from_cache`, `from_pretrained`) finds them without any network."""

from __future__ import annotations

from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def use_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty cache under `tmp_path`, made the one huggingface_hub and torch.hub read for this test."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return cache


def cache_file(cache: Path, repo_id: str, filename: str, tensors: dict) -> None:
    """`filename` of `repo_id` in the hub cache's layout (refs/main -> snapshots/<commit>/<filename>)."""
    from safetensors.torch import save_file

    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    (root / "snapshots" / COMMIT).mkdir(parents=True)
    save_file(tensors, str(root / "snapshots" / COMMIT / filename))
