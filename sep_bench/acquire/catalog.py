"""What can be acquired: the benchmarks, their generators (canonical folder names and synonyms) and where each
benchmark is hosted. Everything here is data; the sources and the normaliser look names up in it.

Canonical folder names are the ones the layout readers and `params.yaml` expect:

- GenImage: the publisher's subset folders (``imagenet_ai_0419_sdv4``...); `params.yaml`'s
  ``generator_aliases`` turn them into the display names of the tables (``SDv1.4``...).
- AIGCBenchmark: the benchmark's own generator folders, exactly as `profiles.aigcbench.data.test_generators`
  lists them (``progan``, ``Glide``, ``stable_diffusion_v_1_4``...).
- progan: the CNNSpot ProGAN training set, one folder per LSUN class (``car``, ``cat``...).

A synonym matches after lower-casing and dropping every character that is not a letter or digit, so
``SDv1.4``, ``sd_v1_4``, ``SD14`` and ``imagenet_ai_0419_sdv4`` all name the same GenImage subset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Generator", "Benchmark", "BENCHMARKS", "get_benchmark", "norm_name", "AcquireError"]


class AcquireError(RuntimeError):
    """Acquisition failed in a way the user can act on (the message says how)."""


def norm_name(name: str) -> str:
    """The comparison key of a generator name: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class Generator:
    folder: str  # canonical folder name in the tree
    display: str  # name in tables / params aliases
    synonyms: tuple[str, ...] = ()

    def keys(self) -> set[str]:
        return {norm_name(n) for n in (self.folder, self.display, *self.synonyms)}


@dataclass(frozen=True)
class HFRepo:
    """A Hugging Face dataset repository holding parquet shards (columns image + label [+ generator])."""

    repo_id: str
    generator: str | None = None  # the one generator this repo holds, when it has no generator column
    note: str = ""
    fake_only: bool = False  # fake images only (no label, no reals): needs --real-from
    shared_reals: bool = False  # its real images carry no generator: pairing lost unless the image path has it


@dataclass(frozen=True)
class Benchmark:
    name: str
    layout: str  # a `sep_bench.data.layouts` reader
    generators: tuple[Generator, ...]
    licence: str
    default_source: str
    sources: tuple[str, ...]
    hf_repos: tuple[HFRepo, ...] = ()  # the first one is the default
    dataverse_doi: str | None = None
    modelscope_id: str | None = None
    modelscope_files: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("test",)
    manual_help: str = ""
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for g in self.generators:
            for k in g.keys():
                other = self._index.setdefault(k, g)
                if other is not g:
                    raise ValueError(f"{self.name}: synonym {k!r} names both {other.folder} and {g.folder}")

    def match(self, name: str) -> Generator | None:
        """The generator a folder/archive/column name denotes, or None."""
        return self._index.get(norm_name(name))

    def match_in(self, name: str) -> Generator | None:
        """Like `match`, also accepting an archive stem with Google Drive's ``-001`` style suffix."""
        g = self.match(name)
        if g is None:
            m = re.fullmatch(r"(.+?)-\d+", name)
            g = self.match(m.group(1)) if m else None
        return g

    def resolve(self, names: list[str] | None) -> list[Generator]:
        """The generators a user named (any synonym), all of them when `names` is empty."""
        if not names:
            return list(self.generators)
        out, unknown = [], []
        for n in names:
            g = self.match(n)
            if g is None:
                unknown.append(n)
            elif g not in out:
                out.append(g)
        if unknown:
            known = ", ".join(f"{g.display} ({g.folder})" if g.display != g.folder else g.folder
                              for g in self.generators)
            raise AcquireError(f"{self.name}: unknown generator(s) {', '.join(unknown)}; known: {known}")
        return out


def _g(folder: str, display: str | None = None, *synonyms: str) -> Generator:
    return Generator(folder, display or folder, tuple(synonyms))


_GENIMAGE = Benchmark(
    name="genimage",
    layout="genimage",
    generators=(
        _g("imagenet_midjourney", "Midjourney", "mj", "midjourneyv5"),
        _g("imagenet_ai_0419_sdv4", "SDv1.4", "sd14", "sdv4", "stable_diffusion_v_1_4", "stablediffusionv14"),
        _g("imagenet_ai_0424_sdv5", "SDv1.5", "sd15", "sdv5", "stable_diffusion_v_1_5", "stablediffusionv15"),
        _g("imagenet_ai_0508_adm", "ADM", "genimage_adm"),
        _g("imagenet_glide", "GLIDE", "genimage_glide"),
        _g("imagenet_ai_0424_wukong", "Wukong"),
        _g("imagenet_ai_0419_vqdm", "VQDM"),
        _g("imagenet_ai_0419_biggan", "BigGAN"),
    ),
    licence="CC BY-NC-SA 4.0 (plus the publisher's non-commercial terms)",
    default_source="dataverse",
    sources=("dataverse", "hf", "manual"),
    hf_repos=(
        HFRepo("TheKernel01/Tiny-GenImage", note="a 35,000-image subset of all 8 generators, not the full benchmark",
               shared_reals=True),
        HFRepo("bitmind/GenImage_ADM", generator="imagenet_ai_0508_adm", fake_only=True,
               note="fake images only (one image column, train split)"),
        HFRepo("bitmind/GenImage_glide", generator="imagenet_glide", fake_only=True,
               note="fake images only (one image column, train split)"),
    ),
    dataverse_doi="doi:10.7910/DVN/AKDIHF",
    splits=("train", "val"),
    manual_help=(
        "download the official archives (Google Drive or Baidu links in the GenImage repository), e.g. "
        "imagenet_ai_0419_sdv4.zip with its parts .z01, .z02, ..., into one folder, and pass it with --root"
    ),
)

_AIGCBENCH = Benchmark(
    name="aigcbench",
    layout="aigcbench",
    generators=(
        _g("progan", None, "progan_test"),
        _g("stylegan"),
        _g("biggan"),
        _g("cyclegan"),
        _g("stargan"),
        _g("gaugan"),
        _g("stylegan2"),
        _g("whichfaceisreal", None, "wfir"),
        _g("ADM"),
        _g("Glide"),
        _g("Midjourney", None, "mj"),
        _g("stable_diffusion_v_1_4", None, "sd14", "sdv14", "sdv1.4"),
        _g("stable_diffusion_v_1_5", None, "sd15", "sdv15", "sdv1.5"),
        _g("VQDM"),
        _g("wukong"),
        _g("DALLE2", None, "dalle_2", "dall-e2", "dall-e-2"),
        _g("sdxl", None, "stable_diffusion_xl"),
    ),
    licence="no licence stated by the publisher (the Hugging Face copy declares apache-2.0)",
    default_source="modelscope",
    sources=("modelscope", "hf", "manual"),
    hf_repos=(HFRepo("TheKernel01/AIGC-Detection-Benchmark", shared_reals=True,
                     note="third-party parquet copy of the test set; its real images carry no generator"),),
    modelscope_id="aemilia/AIGCDetectionBenchmark",
    modelscope_files=("test_set.zip", "test.zip"),  # names looked for in any folder, by preference
    manual_help=(
        "download the test set archive(s) (Baidu / Google Drive links in the AIGCDetectBenchmark repository) "
        "into one folder and pass it with --root"
    ),
)

_LSUN = ("airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
         "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

_PROGAN = Benchmark(
    name="progan",
    layout="aigcbench",
    generators=tuple(_g(c) for c in _LSUN),
    licence="CNNSpot training set terms (research use); see the CNNDetection repository",
    default_source="manual",
    sources=("manual", "hf"),
    manual_help=(
        "download the CNNSpot ProGAN training set (progan_train.zip or its parts, from the CNNDetection "
        "repository's instructions) into one folder and pass it with --root"
    ),
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (_GENIMAGE, _AIGCBENCH, _PROGAN)}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise AcquireError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None
