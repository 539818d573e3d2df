"""Without network: how long a missing hub weight takes to fail, the libraries' own path against sep-bench's.

    python benchmarks/offline_hub.py [--out results/benchmarks/offline_hub.json]

Each case runs in a fresh process with an empty Hugging Face cache, ``HF_HUB_OFFLINE`` unset and ``HF_ENDPOINT``
on a host that cannot resolve (``https://hub.invalid``: the ``.invalid`` top-level domain never resolves), i.e. a
machine without network. The clock starts after the imports and stops when the call raises:

- ``library``: ``timm.create_model("resnet50.tv_in1k", pretrained=True)``, what sep-bench called before
  (huggingface_hub retries the unreachable hub with back-off);
- ``sep_bench``: ``sep_bench.weights.timm_state_dict("timm:resnet50.tv_in1k", "resnet50")`` (one reachability
  probe, then the cache only), and the same with ``HF_HUB_OFFLINE=1``.

Writes the JSON and the figures block of docs/weights-and-gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

CASES = {
    "library": ("import timm", "timm.create_model('resnet50.tv_in1k', pretrained=True)"),
    # timm imported before the clock in every case (timm_state_dict imports it lazily)
    "sep_bench": ("import timm; from sep_bench.weights import timm_state_dict",
                  "timm_state_dict('timm:resnet50.tv_in1k', 'resnet50')"),
    "sep_bench_hf_hub_offline": ("import timm; from sep_bench.weights import timm_state_dict",
                                 "timm_state_dict('timm:resnet50.tv_in1k', 'resnet50')"),
}
_PROGRAM = """
import json, time
{imports}
t0 = time.perf_counter()
try:
    {call}
    outcome = "loaded"
except Exception as err:
    outcome = type(err).__name__ + ": " + str(err).splitlines()[0][:300]
print("@@" + json.dumps({{"seconds": round(time.perf_counter() - t0, 3), "outcome": outcome}}))
"""


def run_case(name: str, cache: Path) -> dict:
    imports, call = CASES[name]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT="https://hub.invalid", TORCH_HOME=str(cache / "torch"))
    if name.endswith("hf_hub_offline"):
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", _PROGRAM.format(imports=imports, call=call)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=C.REPO_ROOT)
    marked = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if not marked:
        raise RuntimeError(f"{name}: no result\n{proc.stderr[-2000:]}")
    return json.loads(marked[-1][2:])


def doc_block(report: dict) -> str:
    r = report["results"]
    return (f"A missing ImageNet ResNet-50 (`timm:resnet50.tv_in1k`) without network: the libraries' own path fails "
            f"after {r['library']['seconds']:.1f} s (huggingface_hub's retries), sep-bench's after "
            f"{r['sep_bench']['seconds']:.2f} s ({r['sep_bench_hf_hub_offline']['seconds']:.2f} s with "
            f"`HF_HUB_OFFLINE=1`) (`benchmarks/offline_hub.py`, {report['date'][:10]}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=C.REPO_ROOT / "results" / "benchmarks" / "offline_hub.json")
    args = parser.parse_args()
    results = {}
    for name in CASES:
        with tempfile.TemporaryDirectory(prefix="offline-hub-") as tmp:
            results[name] = run_case(name, Path(tmp))
        print(f"  {name:26s} {results[name]['seconds']:8.3f} s  {results[name]['outcome'][:100]}")
    C.write_report(args.out, "offline_hub", args, None, {
        "reference": "library: timm.create_model(pretrained=True) in the same conditions",
        "conditions": "empty HF cache, HF_HUB_OFFLINE unset (except the last case), HF_ENDPOINT=https://hub.invalid",
        "results": results})
    C.render_docs()  # docs/weights-and-gpu.md's block (scripts/docs_figures.py: offline_hub -> doc_block)


if __name__ == "__main__":
    main()
