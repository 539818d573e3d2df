"""Property-style tests of `acquire.safepath` on generated hostile names (a seeded generator: the same 6,000 names
on every run), and of its write-time guard against links planted in a folder."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from sep_bench.acquire import safepath
from sep_bench.acquire.safepath import UnsafePathError

# pieces a hostile listing combines: traversal, separators, control characters, drive letters, look-alikes
_ATOMS = ["..", ".", "", "a", "b.zip", "GenImage", "test_set.zip", "ü", "名前", " ", "...", "\\", "/", "\x00", "\n",
          "\r", "\x1b[2J", "\x7f", "C:", "c:\\", "~", "%2e%2e", "..\\", "\u2215", "\uff0e\uff0e", "a" * 300, "-",
          "$HOME", "*", "?", ":", "CON", "x y"]
_SEPARATORS = ["/", "/", "/", "\\", "", "//"]
_SAFE_ATOMS = ["a", "b.zip", "GenImage", "ü", "名前", "x y", "...", "-", "%2e%2e", "\u2215", "\uff0e\uff0e", "~"]


def _hostile_names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(_ATOMS) for _ in range(rng.randint(1, 6))]
        seps = [rng.choice(_SEPARATORS) for _ in parts[1:]]
        name = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:]))
        if rng.random() < 0.15:
            name = rng.choice(["/", "\\", "C:/", "//"]) + name
        out.append(name)
    return out


def _safe_names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["/".join(rng.choice(_SAFE_ATOMS) for _ in range(rng.randint(1, 5))) for _ in range(n)]


def _inside(root: Path, path: Path) -> bool:
    r, p = os.path.normpath(root), os.path.normpath(path)
    return p.startswith(r + os.sep)


def test_every_accepted_relative_path_stays_inside_and_every_hostile_one_is_refused(tmp_path):
    names = _hostile_names(6000, seed=25)
    accepted = refused = 0
    for name in names:
        try:
            rel = safepath.check_relpath(name, what="entry", service="test")
        except UnsafePathError as err:  # never another exception type, and the name is in the message
            assert repr(name)[:60] in str(err) or "longer than" in str(err), (name, str(err))
            refused += 1
            continue
        accepted += 1
        parts = rel.split("/")
        assert not rel.startswith("/") and "\\" not in rel, name
        assert not any(re.match(r"^[A-Za-z]:", p) for p in parts), name  # no drive letter
        assert all(p not in ("", ".", "..") for p in parts), name
        assert not any(ord(c) < 32 or ord(c) == 127 for c in rel), name
        assert _inside(tmp_path, tmp_path / rel), name
        assert _inside(tmp_path, safepath.inside(tmp_path, rel, what="entry", service="test")), name
        assert os.path.realpath(tmp_path / rel).startswith(os.path.realpath(tmp_path) + os.sep), name
    # the generator does produce both kinds, so the checks above were exercised
    assert accepted > 300 and refused > 3000, (accepted, refused)
    # whatever contains a traversal, an absolute start, a NUL or a backslash is always refused
    for name in names:
        parts = name.split("/")
        if ".." in parts or name.startswith(("/", "\\")) or "\x00" in name or "\\" in name or "" in parts[1:-1]:
            with pytest.raises(UnsafePathError):
                safepath.check_relpath(name, what="entry", service="test")


def test_ordinary_names_are_accepted(tmp_path):
    """The validator refuses nothing a real listing holds (so the property above cannot pass by refusing all)."""
    for name in _safe_names(2000, seed=7) + ["AIGCDetectionBenchMark/test_set.zip", "GenImage.z000",
                                              "data/train-00000-of-00001.parquet", "GenImage_metadata.csv"]:
        assert safepath.check_relpath(name, what="entry", service="test") == name
        assert safepath.inside(tmp_path, name, what="entry", service="test") == tmp_path.joinpath(*name.split("/"))


def test_single_names_never_hold_a_separator_or_a_traversal(tmp_path):
    accepted = 0
    for name in _hostile_names(3000, seed=11):
        try:
            safepath.check_name(name, what="file name", service="test")
        except UnsafePathError:
            continue
        accepted += 1
        assert "/" not in name and "\\" not in name and name not in ("", ".", "..") and "\x00" not in name
        assert (tmp_path / name).parent == tmp_path
    assert accepted > 100
    for bad in (None, 7, b"a", ["a"], {"a": 1}):  # JSON gives any type: still a clear refusal
        with pytest.raises(UnsafePathError):
            safepath.check_name(bad, what="file name", service="test")
        with pytest.raises(UnsafePathError):
            safepath.check_relpath(bad, what="path", service="test")


@pytest.fixture
def planted(tmp_path):
    """A root holding a folder, a link to a folder outside and a link to a file outside; the outside files."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    os.symlink(outside, root / "sub" / "linked")
    os.symlink(outside / "victim.txt", root / "sub" / "file_link")
    (root / "sub" / "mine.part").write_bytes(b"x")
    return root, outside


def test_the_write_time_guard_refuses_links_and_paths_outside_the_root(planted):
    root, outside = planted
    for path in (root / "sub" / "linked" / "victim.txt", root / "sub" / "linked" / "new.bin"):
        for op in (lambda p: safepath.unlink(root, p), lambda p: safepath.open_write(root, p, "ab"),
                   lambda p: safepath.replace(root, root / "sub" / "mine.part", p),
                   lambda p: safepath.mkdir(root, p / "deeper")):
            with pytest.raises(UnsafePathError, match="symbolic link"):
                op(path)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safepath.open_write(root, root / "sub" / "file_link", "wb")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safepath.unlink(root, root / "sub" / "file_link")
    for path in (outside / "victim.txt", root / ".." / "outside" / "victim.txt", root):
        with pytest.raises(UnsafePathError, match="not inside"):
            safepath.unlink(root, path)
    assert (outside / "victim.txt").read_text() == "keep me" and sorted(os.listdir(outside)) == ["victim.txt"]
    assert (root / "sub" / "mine.part").exists()
    # ordinary operations inside the root work
    with safepath.open_write(root, root / "sub" / "mine.part", "ab") as f:
        f.write(b"y")
    safepath.replace(root, root / "sub" / "mine.part", root / "sub" / "mine")
    assert (root / "sub" / "mine").read_bytes() == b"xy"
    safepath.unlink(root, root / "sub" / "mine")
    assert not (root / "sub" / "mine").exists()


def test_colliding_listing_entries_are_a_clear_error(tmp_path):
    """A listing naming both ``x`` (a file) and ``x/y``: the folder cannot be made, and a folder where a file
    should be is not read as a file."""
    from sep_bench.acquire.download import download

    root = tmp_path / "cache"
    (root / "x").parent.mkdir(parents=True)
    (root / "x").write_bytes(b"file")
    with pytest.raises(UnsafePathError, match="a file is in the way"):
        safepath.mkdir(root, root / "x" / "y")
    (root / "d").mkdir()
    with pytest.raises(UnsafePathError, match="exists and is not a file"):
        download("http://127.0.0.1:9/never", root / "d", root=root, retries=0)
