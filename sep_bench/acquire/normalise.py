"""From whatever nesting a download has to the canonical tree the layout readers expect.

- GenImage: ``<subset>/{train,val}/{ai,nature}``. Split folders (``train``, ``val``, ``validation``) holding
  ``ai``/``nature`` are found at any depth; the generator is the nearest enclosing folder that names one
  (``stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train`` -> ``imagenet_ai_0419_sdv4``), else the archive's.
- AIGCBenchmark / progan: ``<gen>/{0_real,1_fake}`` or ``<gen>/<class>/{0_real,1_fake}``. Folders holding
  ``0_real``/``1_fake`` are found at any depth; the generator is the nearest enclosing folder that names one
  (``test/progan/car`` -> ``progan`` with class ``car``).
- Parquet shards (Hugging Face copies): one row per image with an image column (HF ``Image`` feature: bytes +
  path), a real/fake label and, in multi-generator copies, a generator column; class-label names come from the
  shard's HF feature metadata. Real images of multi-generator copies carry no generator ("Real"): when the image
  struct's ``path`` names a generator folder (``progan/car/0_real/x.png``) the original pairing is recovered from
  it; otherwise they are shared out among the copy's generators by a hash of their bytes (stable whatever subset
  is requested) and the result is marked ``shared-reals`` (`convert_parquet`'s report): per-generator numbers
  from such a tree are not the benchmark's. Copies with fake images only (one image column, no label) are read
  as fakes when the caller pairs them with real images (``fakes_only``), else refused.

Generator folder names are the catalog's canonical names (`catalog.py`), which `params.yaml` expects.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterable

from sep_bench.acquire import safepath
from sep_bench.acquire.catalog import AcquireError, Benchmark, Generator, HFRepo
from sep_bench.acquire.download import Progress
from sep_bench.data.layouts import IMAGE_SUFFIXES

__all__ = ["normalise_tree", "convert_parquet", "image_ext", "ShardError"]

log = logging.getLogger(__name__)

_SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val"}
_GENIMAGE_CLASSES = ("ai", "nature")
_AIGC_CLASSES = ("0_real", "1_fake")


def _enclosing_generator(bench: Benchmark, start: Path, top: Path) -> tuple[Generator | None, Path | None]:
    """The nearest folder from `start` up to (not including) `top` whose name denotes a generator."""
    p = start
    while p != top and top in p.parents:
        g = bench.match_in(p.name)
        if g is not None:
            return g, p
        p = p.parent
    return None, None


def _place(src: Path, dst: Path, mode: str, root: Path) -> bool:
    """Move (or hard-link/copy) one file to `dst` inside the tree `root` (no link followed on the way); False when
    an identical file is already there."""
    safepath.guard(root, dst, "write")
    if dst.exists():
        if filecmp.cmp(src, dst, shallow=False):
            return False
        raise AcquireError(f"two different files map to {dst} (one from {src}); the download holds conflicting "
                           "copies of a generator")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        os.replace(src, dst)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return True


def _images(folder: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for n in sorted(filenames):
            p = Path(dirpath) / n
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_symlink():
                yield p


def normalise_tree(src: Path, dest: Path, bench: Benchmark, wanted: set[str], *, hint: Generator | None = None,
                   mode: str = "move", classes: set[str] | None = None, splits: set[str] | None = None) -> Counter:
    """Place the images under `src` into the canonical tree `dest`; return image counts per generator folder.

    Only generators whose folder is in `wanted` are placed; `hint` is the generator an archive's name denotes,
    used when no enclosing folder names one. mode: "move" (staging data) or "link" (hard link, else copy).
    `classes` (e.g. {"nature"}) and `splits` (GenImage: {"train"}) restrict what is placed.
    """
    counts: Counter = Counter()
    skipped: Counter = Counter()
    if bench.layout == "genimage":
        units = []
        for dirpath, dirnames, _ in os.walk(src, followlinks=False):
            here = Path(dirpath)
            split = _SPLITS.get(here.name.lower())
            kids = {d.lower(): d for d in dirnames}
            if split and any(c in kids for c in _GENIMAGE_CLASSES):
                g, _ = _enclosing_generator(bench, here.parent, src.parent)
                units.append((g or hint, here, split, {c: here / kids[c] for c in _GENIMAGE_CLASSES if c in kids}))
                dirnames.clear()
            else:
                dirnames.sort()
        for g, here, split, cls_dirs in units:
            if g is None:
                raise AcquireError(f"cannot tell which GenImage generator {here} belongs to: no enclosing folder or "
                                   "archive is named after one (e.g. imagenet_ai_0419_sdv4)")
            if g.folder not in wanted or (splits is not None and split not in splits):
                skipped[g.folder] += 1
                continue
            for cls, cdir in cls_dirs.items():
                if classes is not None and cls not in classes:
                    continue
                for f in _images(cdir):
                    if _place(f, dest / g.folder / split / cls / f.relative_to(cdir), mode, dest):
                        counts[g.folder] += 1
    else:
        units = []
        unknown = set()
        for dirpath, dirnames, _ in os.walk(src, followlinks=False):
            here = Path(dirpath)
            kids = {d.lower(): d for d in dirnames}
            if any(c in kids for c in _AIGC_CLASSES):
                g, gdir = _enclosing_generator(bench, here, src.parent)
                if g is None and hint is not None:
                    g, gdir = hint, None
                if g is None:
                    unknown.add(str(here.relative_to(src)))
                else:
                    sub = "_".join(here.relative_to(gdir).parts) if gdir is not None else ""
                    units.append((g, sub, {c: here / kids[c] for c in _AIGC_CLASSES if c in kids}))
                dirnames[:] = sorted(d for d in dirnames if d.lower() not in _AIGC_CLASSES)
            else:
                dirnames.sort()
        if unknown:
            log.warning("skipped folders that name no known %s generator: %s", bench.name, ", ".join(sorted(unknown)))
        for g, sub, cls_dirs in units:
            if g.folder not in wanted:
                skipped[g.folder] += 1
                continue
            base = dest / g.folder / sub if sub else dest / g.folder
            for cls, cdir in cls_dirs.items():
                if classes is not None and cls not in classes:
                    continue
                for f in _images(cdir):
                    if _place(f, base / cls / f.relative_to(cdir), mode, dest):
                        counts[g.folder] += 1
    if skipped:
        log.info("not requested, left out: %s", ", ".join(sorted(skipped)))
    return counts


# ---- parquet shards --------------------------------------------------------------------------------------------

_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
          (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))
_REAL_NAMES = {"real", "nature", "0real", "authentic", "human", "natural"}
_FAKE_NAMES = {"fake", "ai", "1fake", "generated", "synthetic", "aigenerated"}
_IMAGE_COLS = ("image", "img", "jpg", "png", "image_bytes")
_LABEL_COLS = ("label", "labels", "is_fake", "fake", "target", "class")
_GEN_COLS = ("generator", "model", "source", "generator_name", "model_name")


def image_ext(data: bytes) -> str | None:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def _split_of(shard: str, bench: Benchmark) -> str:
    parts = re.split(r"[/\-_.]", shard.lower())
    split = next((_SPLITS[p] for p in parts if p in _SPLITS), None)
    if "train" not in bench.splits:
        return "test"
    if split is None:
        if "test" in parts:
            log.warning("%s: a test shard of %s is placed in the val split (GenImage has train and val)", shard,
                        bench.name)
            return "val"
        raise AcquireError(f"{shard}: cannot tell the split (train/validation) from the shard's name")
    return split


def _hf_features(schema) -> dict:
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        info = json.loads(meta)
    except ValueError:
        return {}
    feats = info.get("info", {}).get("features", {})
    return feats if isinstance(feats, dict) else {}


def _column(names: list[str], feats: dict, candidates: tuple[str, ...], kind: str | None = None) -> str | None:
    if kind is not None:
        for n in names:
            if isinstance(feats.get(n), dict) and feats[n].get("_type") == kind:
                return n
    low = {n.lower(): n for n in names}
    return next((low[c] for c in candidates if c in low), None)


def _class_names(feats: dict, col: str | None) -> list[str] | None:
    f = feats.get(col) if col else None
    if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list):
        return [str(n) for n in f["names"]]
    return None


def _label_of(value, names: list[str] | None, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and names is None:
        if value in (0, 1):
            return value
    name = names[value] if isinstance(value, int) and names and 0 <= value < len(names) else str(value)
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key in _REAL_NAMES:
        return 0
    if key in _FAKE_NAMES:
        return 1
    raise AcquireError(f"{where}: label {value!r} ({name}) is neither real nor fake")


def _safe_name(path: str | None, data: bytes, digest: str) -> str:
    ext = image_ext(data) or ".png"
    base = Path(path or "").name
    if base and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,150}", base):
        stem = Path(base).stem if Path(base).suffix.lower() in IMAGE_SUFFIXES else base
        return stem + (Path(base).suffix.lower() if Path(base).suffix.lower() in IMAGE_SUFFIXES else ext)
    return digest[:24] + ext


def _generator_in_path(bench: Benchmark, path: str | None) -> Generator | None:
    """The generator a row's original file path names (``progan/car/0_real/x.png`` -> progan), if any."""
    if not path:
        return None
    folders = [p for p in re.split(r"[/\\]", path) if p][:-1]
    return next((g for p in folders if (g := bench.match_in(p)) is not None), None)


class ShardError(AcquireError):
    """A parquet shard cannot be read (damaged or not parquet); `path` is the shard."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def convert_parquet(shards: list[tuple[Path, str]], dest: Path, bench: Benchmark, wanted: set[str], repo: HFRepo,
                    progress: Progress | None = None, *, fakes_only: bool = False,
                    report: dict | None = None) -> Counter:
    """Write the images of parquet `shards` ((local path, name in the repo)) into the canonical tree `dest`.

    `fakes_only`: a shard without a label column holds fake images (the caller pairs them with reals).
    `report` receives ``{"reals_recovered": n, "reals_shared": n, "fakes_only": n}`` (real rows placed by the
    generator their path names, real rows shared out by hash, rows read as fakes of a fake-only copy)."""
    rep = report if report is not None else {}
    for k in ("reals_recovered", "reals_shared", "fakes_only"):
        rep.setdefault(k, 0)
    import pyarrow as pa

    counts: Counter = Counter()
    for path, shard_name in shards:
        try:
            counts += _convert_shard(path, shard_name, dest, bench, wanted, repo, progress, fakes_only, rep)
        except (pa.ArrowException, TypeError) as err:  # damaged or not parquet; cells of unexpected types
            raise ShardError(f"{repo.repo_id}/{shard_name}: not a readable parquet shard "
                             f"({type(err).__name__}: {str(err)[:200]})", Path(path)) from None
    return counts


def _convert_shard(path: Path, shard_name: str, dest: Path, bench: Benchmark, wanted: set[str], repo: HFRepo,
                   progress: Progress | None, fakes_only: bool, rep: dict) -> Counter:
    """`convert_parquet` for one shard."""
    import pyarrow.parquet as pq

    counts: Counter = Counter()
    fixed = bench.match(repo.generator) if repo.generator else None
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    names = schema.names
    feats = _hf_features(schema)
    img_col = _column(names, feats, _IMAGE_COLS, "Image")
    lab_col = _column(names, feats, _LABEL_COLS)
    gen_col = next((n for n in names if n.lower() in _GEN_COLS and n != lab_col), None)
    if img_col is None:
        raise AcquireError(f"{repo.repo_id}/{shard_name}: no image column; found columns {', '.join(names)}")
    if lab_col is None and not (fakes_only or repo.fake_only):
        raise AcquireError(f"{repo.repo_id}/{shard_name}: no real/fake label column (columns: {', '.join(names)}): "
                           "the copy holds fake images only; pair it with real images with --real-from DIR")
    lab_names = _class_names(feats, lab_col)
    gen_names = _class_names(feats, gen_col)
    if gen_col is None:
        g = fixed or (bench.match(next(iter(wanted))) if len(wanted) == 1 else None)
        if g is None:
            raise AcquireError(f"{repo.repo_id} has no generator column; name the one generator it holds with "
                               "--generators")
        pool = [g]
    else:  # real images are shared out among the copy's own generators (all of them, not only the wanted)
        declared = [bench.match(n) for n in gen_names] if gen_names else []
        pool = sorted({g for g in declared if g is not None}, key=lambda g: g.folder) or None
    split = _split_of(shard_name, bench)
    total = pf.metadata.num_rows
    done = 0
    unknown = Counter()
    for batch in pf.iter_batches(batch_size=128, columns=[c for c in (img_col, lab_col, gen_col) if c]):
        cols = batch.to_pydict()
        for i in range(batch.num_rows):
            cell = cols[img_col][i]
            data, ipath = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
            if not data:
                raise AcquireError(f"{repo.repo_id}/{shard_name}: row {done + i} has no image bytes")
            if lab_col is None:
                label = 1
                rep["fakes_only"] += 1
            else:
                label = _label_of(cols[lab_col][i], lab_names, f"{repo.repo_id}/{shard_name} row {done + i}")
            digest = hashlib.sha256(data).hexdigest()
            if gen_col is None:
                g = pool[0]
            else:
                raw = cols[gen_col][i]
                gname = gen_names[raw] if isinstance(raw, int) and gen_names and 0 <= raw < len(gen_names) else str(raw)
                g = bench.match(gname)
                if g is None:
                    if label == 1 or re.sub(r"[^a-z0-9]", "", gname.lower()) not in _REAL_NAMES:
                        unknown[gname] += 1
                        continue
                    g = _generator_in_path(bench, ipath)
                    if g is not None:  # the original pairing, from the file's path
                        rep["reals_recovered"] += g.folder in wanted
                    else:
                        if pool is None:  # no class-label names: share among the generators requested
                            pool = sorted((bench.match(w) for w in wanted), key=lambda g: g.folder)
                        g = pool[int(digest[:15], 16) % len(pool)]
                        rep["reals_shared"] += g.folder in wanted
            if g.folder not in wanted:
                continue
            cls = ("ai", "nature") if bench.layout == "genimage" else ("1_fake", "0_real")
            folder = (dest / g.folder / split / cls[1 - label]) if bench.layout == "genimage" else (
                dest / g.folder / cls[1 - label])
            safepath.mkdir(dest, folder)
            target = folder / _safe_name(ipath, data, digest)
            if target.exists():
                if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
                    continue
                target = target.with_name(f"{target.stem}_{digest[:8]}{target.suffix}")
            with safepath.open_write(dest, target, "wb") as f:
                f.write(data)
            counts[g.folder] += 1
        done += batch.num_rows
        if progress is not None:
            progress(f"converting {Path(shard_name).name}", done, total)
    if unknown:
        log.warning("%s/%s: rows of generators unknown to %s were skipped: %s", repo.repo_id, shard_name,
                    bench.name, ", ".join(f"{k} ({v})" for k, v in sorted(unknown.items())))
    return counts
