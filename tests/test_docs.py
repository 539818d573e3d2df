"""README.md and docs/: every figure rendered from results/ (scripts/render_docs.py), no number typed into prose,
the MkDocs site builds with --strict, and its detectors page shows one row per registered detector in headless
Chromium (skipped, saying so, when Chromium is not installed). SEP_BENCH_SCREENSHOT_DIR keeps the screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from docs_detectors import own_detectors  # noqa: E402
from docs_figures import Sources  # noqa: E402
from docs_prose import typed_numbers  # noqa: E402
from render_docs import (  # noqa: E402
    FigureError, UnknownBlockError, pages, render_text, stale_blocks, typed_numbers_of)

CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
PAGES = {str(p.relative_to(REPO)): p for p in pages(REPO)}


@pytest.mark.parametrize("rel", sorted(PAGES))
def test_every_rendered_block_is_what_the_results_give(rel):
    assert stale_blocks(rel, PAGES[rel].read_text(), Sources()) == [], f"{rel}: run `make docs`"


@pytest.mark.parametrize("rel", sorted(PAGES))
def test_no_number_is_typed_into_prose(rel):
    found = typed_numbers_of(rel, PAGES[rel].read_text())
    assert not found, f"{rel}: numbers typed into prose (render them from results/ or put them in code):\n" + \
        "\n".join(map(str, found))


def _results_copy(tmp_path: Path) -> Sources:
    for sub in ("benchmarks", "tables"):
        shutil.copytree(REPO / "results" / sub, tmp_path / "results" / sub)
    return Sources(results=tmp_path / "results")


def test_one_changed_number_in_a_results_file_makes_its_block_stale(tmp_path):
    src = _results_copy(tmp_path)
    eps_file = src.results / "benchmarks" / "eps.json"
    eps = json.loads(eps_file.read_text())
    eps["results"][0]["speedup_vs_reference"]["official"] += 1.0
    eps_file.write_text(json.dumps(eps))
    page = (REPO / "docs/performance.md").read_text()
    assert stale_blocks("docs/performance.md", page, src) == ["eps-speedups"]
    assert stale_blocks("docs/performance.md", page, Sources()) == []


def test_a_new_learning_check_failure_reaches_the_readme(tmp_path):
    src = _results_copy(tmp_path)
    learning = src.results / "tables" / "mini_learning.csv"
    learning.write_text(learning.read_text().replace("npr,0.9400,0.8500,pass", "npr,0.5000,0.8500,FAIL"))
    readme = (REPO / "README.md").read_text()
    assert stale_blocks("README.md", readme, src) == ["learning-check"]
    assert "FAIL: `npr`" in render_text(readme, src)


def test_an_unknown_block_is_an_error_that_names_the_known_ones():
    with pytest.raises(UnknownBlockError, match="unknown block 'no-such-figure'.*eps-speedups"):
        render_text("<!-- no-such-figure:start -->\nx\n<!-- no-such-figure:end -->\n", Sources(), "x.md")


def test_a_missing_results_file_is_a_one_line_error(tmp_path):
    src = _results_copy(tmp_path)
    (src.results / "benchmarks" / "eps.json").unlink()
    with pytest.raises(FigureError, match=r"docs/performance.md: block 'eps-speedups': missing file .*eps.json"):
        stale_blocks("docs/performance.md", (REPO / "docs/performance.md").read_text(), src)


TYPED = """The pipeline took 9.1 minutes and a second run 2.5 s; `make test` ran 475 tests in 45 stages.
SEP fails the check (82.5); official mode is 116x the loop at 0.096 ms per image, 61-67x at 512x512.
The lockfile is 280 KB (1.5 s to parse), measured 2026-11-30; 3.6k files were unreadable.
"""
CONSTANTS = """Labels: real = 0, fake = 1; accuracy at a fixed 0.5 threshold with 95% confidence intervals.
Train SD v1.4 (CVPR 2024), test ViT-L/14, ResNet-50 and SDv1.5 on vae8 with jpeg75 and blur1+jpeg75 on an H100.
Set `train.epochs: 3` or run `dvc exp run -S 'run.seeds=[0,1,2]'`; GenImage is CC BY-NC-SA 4.0.

1. An ordered list's marker is not a figure, nor is [a link](results/plots/mini_roc.png).

```bash
sep-bench train --epochs 30   # code is not prose
```

<!-- eps-speedups:start -->
official mode 117.0x: a rendered block is not prose
<!-- eps-speedups:end -->
"""


def test_the_prose_checker_finds_typed_figures_and_lets_constants_pass():
    found = [t.number for t in typed_numbers(TYPED)]
    assert found == ["9.1", "2.5", "475", "45", "82.5", "116x", "0.096", "61-67x", "512x512", "280", "1.5",
                     "2026-11-30", "3.6k"]
    assert typed_numbers(CONSTANTS) == []
    # on pages of constants only what reads as a measurement counts
    assert [t.number for t in typed_numbers("crops of 128 x 128, quality 96; it took 9.1 minutes, 12 s, 85%",
                                            measurements_only=True)] == ["9.1", "12", "85%"]


def test_the_readme_is_short_and_has_no_changelog_wording():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    prose = re.sub(r"<!--.*?-->", "", readme, flags=re.S)
    for word in (r"\bnow\b", r"\bnot yet\b", r"\bwas\b", r"\bno longer\b"):
        assert not re.search(word, prose, re.I), word


def test_the_detectors_table_has_one_row_per_own_detector():
    page = (REPO / "docs/detectors.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9]+)`", page, re.M)
    from sep_bench.protocol import load_params

    assert rows == own_detectors() == sorted(load_params(REPO / "params.yaml").run.detectors)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_the_site_builds_strictly_with_the_api_reference_and_the_plots(site):
    api = (site / "api/index.html").read_text()
    for name in ("Detector", "DetectorSpec", "get_detector", "register"):
        assert f'id="sep_bench.detectors.{name}"' in api, name
    assert (site / "results/plots/mini_acc_heatmap.png").stat().st_size > 10_000
    assert 'src="results/plots/mini_acc_heatmap.png"' in (site / "index.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)")
def test_the_detectors_page_shows_every_detector_in_chromium(site, tmp_path):
    url = (site / "detectors/index.html").as_uri()
    shot = tmp_path / "docs-detectors.png"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--virtual-time-budget=5000", "--window-size=1400,2400"]
    dom = subprocess.run([*base, f"--user-data-dir={tmp_path / 'chrome-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    subprocess.run([*base, f"--user-data-dir={tmp_path / 'chrome-shot'}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert dom.returncode == 0
    body = re.search(r"<tbody>(.*?)</tbody>", dom.stdout, re.S)
    assert body, "no table on the detectors page"
    names = re.findall(r"<tr>\s*<td><code>([a-z0-9]+)</code>", body.group(1))
    assert names == own_detectors() and len(names) == 21
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("SEP_BENCH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
