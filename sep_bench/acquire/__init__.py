"""Dataset acquisition: fetch GenImage / AIGCBenchmark / the ProGAN training set, verify, extract safely and
normalise into the canonical tree the layout readers expect (``data/external/<benchmark>``).

Modules: `catalog` (benchmarks, generator names, hosting), `sources` (hf, dataverse, modelscope, manual),
`download` (resumable HTTP, byte ranges of sliced files, credentials scoped to their host), `remote` (the members
of a remote byte-sliced zip, GenImage on Dataverse, without downloading the rest), `extract` (safe zip/multi-part
zip/tar, member selection), `normalise` (archive nesting and parquet shards -> canonical tree, real/fake
pairing), `verify` (md5 lists, sha256 manifest, counts, image statistics, bad files, pairing tag), `assemble`
(staging, atomic install, completion marker), `commands` (the `sep-bench data get` command), `safepath` (every
name a service supplies checked; every write, rename and delete kept inside its folder, no link followed),
`transfer` (minimum rate, deadline, redirect and listing caps; network failures as one-line errors).
See docs/downloads-security.md for what a hostile or broken service can and cannot do.
"""

from sep_bench.acquire.catalog import BENCHMARKS, AcquireError, get_benchmark
from sep_bench.acquire.verify import MANIFEST_NAME, MARKER_NAME, VerificationError, build_manifest, verify_tree

__all__ = ["BENCHMARKS", "AcquireError", "get_benchmark", "MANIFEST_NAME", "MARKER_NAME", "VerificationError",
           "build_manifest", "verify_tree", "acquire"]


def acquire(*args, **kwargs):
    """See `sep_bench.acquire.assemble.acquire`."""
    from sep_bench.acquire.assemble import acquire as _acquire

    return _acquire(*args, **kwargs)
