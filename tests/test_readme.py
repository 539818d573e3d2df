"""The README shows the default run's table as generated (results/tables/mini_acc.md), never a stale copy."""

import re

from tests.conftest import REPO


def test_readme_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- mini-acc-table:start -->\n(.*?)\n<!-- mini-acc-table:end -->", readme, re.S)
    assert m, "README lost its mini-acc-table markers"
    generated = (REPO / "results/tables/mini_acc.md").read_text().split("\n\n")[0].strip()
    assert m.group(1).strip() == generated, "README table differs from results/tables/mini_acc.md: copy it over"


def test_readme_has_exactly_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make pipeline", "make test"]
