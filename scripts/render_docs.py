"""Render every marked block of README.md and docs/*.md from the results files (scripts/docs_figures.py).

    python scripts/render_docs.py           # rewrite the blocks (`make docs`)
    python scripts/render_docs.py --check   # exit 1 and name every stale block and every number typed into prose

A block is ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``; NAME must be a key of `docs_figures.BLOCKS`. The pages
of `docs_figures.PAGES` are generated whole. Numbers in prose: `docs_prose`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_figures import BLOCKS, PAGES, ROOT, Sources  # noqa: E402

BLOCK = re.compile(r"<!-- (?P<name>[a-z0-9-]+):start -->\n(?P<body>.*?)\n?<!-- (?P=name):end -->", re.S)


class UnknownBlockError(ValueError):
    pass


class FigureError(RuntimeError):
    """A block whose results file is missing or lacks what the block reads."""


def pages(repo: Path = ROOT) -> list[Path]:
    """The files whose blocks are rendered: README.md and every page under docs/."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def render_page(rel: str, text: str, src: Sources) -> str:
    """The page `rel` (relative to the repository) as rendered from `src`: generated whole, or its blocks."""
    if rel in PAGES:
        return PAGES[rel](src)
    return render_text(text, src, rel)


def render_text(text: str, src: Sources, where: str = "") -> str:
    """`text` with every block's body replaced by what its function renders from `src`."""
    cache: dict[str, str] = {}

    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise UnknownBlockError(f"{where}: unknown block {name!r}; known: {', '.join(sorted(BLOCKS))}")
        if name not in cache:
            try:
                cache[name] = BLOCKS[name](src).strip()
            except FileNotFoundError as err:
                raise FigureError(f"{where}: block {name!r}: missing file {err.filename}") from err
            except (KeyError, IndexError, StopIteration, ValueError) as err:
                raise FigureError(f"{where}: block {name!r}: its results file lacks {err!r}") from err
        return f"<!-- {name}:start -->\n{cache[name]}\n<!-- {name}:end -->"

    return BLOCK.sub(body, text)


def stale_blocks(rel: str, text: str, src: Sources) -> list[str]:
    """Names of the blocks of page `rel` whose body differs from what `src` gives ("the page" if generated whole)."""
    if rel in PAGES:
        return [] if PAGES[rel](src) == text else ["the page"]
    fresh = {m["name"]: m["body"] for m in BLOCK.finditer(render_text(text, src, rel))}
    return [m["name"] for m in BLOCK.finditer(text) if m["body"].strip() != fresh[m["name"]].strip()]


def typed_numbers_of(rel: str, text: str) -> list:
    """The numbers typed into the prose of page `rel`, as strict as the page allows."""
    from docs_prose import CONSTANT_PAGES, typed_numbers

    return [] if rel in PAGES else typed_numbers(text, measurements_only=rel in CONSTANT_PAGES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    args = parser.parse_args(argv)
    try:
        return _run(args.check)
    except (FigureError, UnknownBlockError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(check: bool) -> int:
    src, problems = Sources(), []
    for page in pages():
        text, rel = page.read_text(), str(page.relative_to(ROOT))
        problems += [f"{rel}: {number}" for number in typed_numbers_of(rel, text)]
        if check:
            problems += [f"{rel}: stale block {name} (run `make docs`)" for name in stale_blocks(rel, text, src)]
            continue
        new = render_page(rel, text, src)
        if new != text:
            page.write_text(new)
            print(f"rendered {rel}")
    if problems:
        print("numbers typed into prose (put them in a rendered block or in code) or stale blocks:\n  "
              + "\n  ".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
