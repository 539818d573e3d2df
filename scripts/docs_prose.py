"""Numbers typed into prose: every figure in README.md and docs/*.md must sit in a rendered block (it then comes
from a results file), in code (a command, a params.yaml value, a file name), or be a constant of `ALLOWED`.

What counts as a number: a word (whitespace- and punctuation-delimited) made of digits, optionally with a unit
or a multiplier (``9.1``, ``475``, ``116x``, ``0.096 ms`` -> ``0.096``, ``3.6k``, ``64-256``, ``512x512``,
``2026-11-30``). A word with other letters is a name and never counts (``vae8``, ``ResNet-50``, ``SDv1.4``,
``ViT-L/14``, ``jpeg75``, ``H100``); nor does a year (``CVPR 2024``) or an ordered list's marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from render_docs import BLOCK

#: constants of the protocol or of the outside world that prose may state, each with why it cannot go stale
ALLOWED: dict[str, str] = {
    r"real = 0, fake = 1": "the label convention",
    r"ai = 0, nature = 1": "SEP's official label convention",
    r"\b0\.5 threshold\b|\bthreshold (?:of )?0\.5\b|\bat 0\.5\b": "the protocol's fixed decision threshold",
    r"\bCC BY(?:-NC)?(?:-SA)? \d\.\d\b": "a licence's version",
    r"\brank 0\b": "the process that logs (DDP)",
    r"\b95% (?:confidence intervals?|CIs?|bootstrap)\b": "the confidence level of the reported intervals",
}

_UNIT = r"(?:x|×|%|k|M|s|ms|min|h|px|KB|MB|GB|TB|KiB|MiB|GiB|B|th|st|nd|rd)"
_NUMBER_WORD = re.compile(rf"^[+\-±~≈]?\d[\d.,]*(?:[-–/x×:]\d[\d.,]*)*{_UNIT}?$")
_MEASURED = re.compile(r"\d\.\d|\d(?:x|×|%|k|s|ms|min|h|KB|MB|GB|KiB|MiB|GiB)$")
_MEASURED_UNITS = {"s", "ms", "seconds", "minutes", "min", "hours", "h", "kb", "mb", "gb", "kib", "mib", "gib",
                   "images/s", "img/s", "tests", "stages", "points", "%"}
_YEAR = re.compile(r"^(?:19|20)\d\d$")
_STRIP = [
    re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.S | re.M),  # fenced code
    re.compile(r"<!--.*?-->", re.S),                       # comments (the block markers)
    re.compile(r"`[^`\n]+`"),                              # code spans: commands, keys, values, paths
    re.compile(r"\]\([^)\s]*\)"),                          # link and image targets
    re.compile(r"https?://\S+"),                           # bare addresses
    re.compile(r"^\s*\d+\.\s", re.M),                      # ordered-list markers
    re.compile(r"^( {4}|\t).*$", re.M),                    # indented code
]


#: pages that describe constants of the protocol, of the benchmarks and of the code (sizes, qualities, limits,
#: test inputs): only numbers that read as measurements count there
CONSTANT_PAGES: dict[str, str] = {
    "docs/protocols.md": "each profile's images, splits, sizes and each detector's official recipe",
    "docs/robustness.md": "the hostile test inputs and the exit codes",
    "docs/downloads-security.md": "the download limits and the exit codes",
    "docs/architecture.md": "the layers and import rules",
    "docs/cluster.md": "the SLURM settings",
}

@dataclass(frozen=True)
class TypedNumber:
    line: int
    number: str
    context: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.number!r} in {self.context!r}"


def prose(text: str) -> str:
    """`text` with rendered blocks, code, link targets and allowed constants blanked (line numbers kept)."""
    def blank(match: re.Match) -> str:
        return re.sub(r"[^\n]", " ", match.group(0))

    text = BLOCK.sub(blank, text)
    for pattern in _STRIP:
        text = pattern.sub(blank, text)
    for pattern in ALLOWED:
        text = re.sub(pattern, blank, text)
    return text


def typed_numbers(text: str, measurements_only: bool = False) -> list[TypedNumber]:
    """Every number written into the prose of `text`; with `measurements_only`, those that read as a measurement:
    a decimal, a multiplier or a percentage, or a number followed by a unit of time, size, speed or a count of
    tests, stages, images or points."""
    found = []
    for i, line in enumerate(prose(text).splitlines(), 1):
        words = [w.strip(".:") for w in re.split(r"(?:[\s()\[\]{}\"'“”;!?*|<>]|,(?!\d))+", line)]
        for word, after in zip(words, [*words[1:], ""]):
            if not word or not _NUMBER_WORD.match(word) or _YEAR.match(word):
                continue
            if measurements_only and not (_MEASURED.search(word) or after.lower() in _MEASURED_UNITS):
                continue
            found.append(TypedNumber(i, word, line.strip()[:100]))
    return found
