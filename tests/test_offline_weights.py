"""Offline runs of the full recipes: the profile switch ``pretrained: false``, hub weights failing fast (or loading
from the cache) without a hub, DIRE/DRCT's diffusion models (one-line error; random at full size), and
``sep-bench weights list|prefetch`` on a fake local Hugging Face cache."""

from __future__ import annotations

import time

import pytest
import torch
from typer.testing import CliRunner

from sep_bench import hub
from sep_bench.detectors import get_detector
from sep_bench.protocol import load_params, resolve
from sep_bench.recon.config import ReconConfig
from sep_bench.weights import PretrainedUnavailableError
from tests.conftest import REPO
from tests.hubcache import cache_file as _cache_file, use_cache

@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own (what try_to_load_from_cache and from_pretrained read)."""
    return use_cache(tmp_path, monkeypatch)


def _unreachable(monkeypatch, port: int) -> None:
    """No HF_HUB_OFFLINE, and a hub endpoint that refuses connections (port `port` on this machine)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)


def test_profile_switch_makes_every_weight_random_and_keeps_other_hashes():
    params = load_params(REPO / "params.yaml")
    before = {p: resolve(params, "sep", p).protocol_hash() for p in ("mini", "genimage")}
    off = load_params(REPO / "params.yaml", {"profiles.genimage.pretrained": False})
    assert {p: resolve(off, "sep", p).protocol_hash() for p in ("mini", "genimage")} != before  # recorded
    assert resolve(off, "sep", "mini").protocol_hash() == before["mini"]  # other profiles untouched
    for name in off.run.detectors:
        spec = resolve(off, name, "genimage")
        assert spec.recipe.pretrained is False, name
        cfg = get_detector(name).config_for(spec)
        assert getattr(cfg, "discriminator", None) is None, name
        recon = getattr(cfg, "reconstruct", None)
        assert recon is None or recon.random_weights, name
    # without the switch, DIRE keeps its real reconstructor and LGrad its discriminator file
    assert get_detector("dire").config_for(resolve(params, "dire", "genimage")).reconstruct.random_init is False
    assert get_detector("lgrad").config_for(resolve(params, "lgrad", "genimage")).discriminator


def test_random_init_is_recorded_and_keyed_only_when_set():
    real = ReconConfig(method="sd-inpaint", arch="sd-inpaint", weights="runwayml/stable-diffusion-inpainting",
                       use="augment")
    rand = real.randomised()
    assert "random_init" not in real.record() and rand.record()["random_init"] is True
    assert rand.key() != real.key() and rand.random_weights and not real.random_weights
    assert ReconConfig(arch="adm-256-uncond", random_init=True).weights is None  # no weights needed
    with pytest.raises(ValueError, match="needs weights"):
        ReconConfig(arch="adm-256-uncond")


@pytest.mark.parametrize("arch, params", [
    ("sd-inpaint", {"unet": 859_535_364, "vae": 83_653_863, "text_encoder": 123_060_480}),
    ("sd-v1", {"unet": 859_520_964, "vae": 83_653_863}),
    ("adm-256-uncond", {"unet": 552_814_086}),
])
def test_random_reconstructors_have_the_real_architectures(arch, params):
    from sep_bench.recon.models import build_model

    method = "sd-inpaint" if arch == "sd-inpaint" else "ddim-inversion"
    cfg = ReconConfig(method=method, arch=arch, use="augment" if method == "sd-inpaint" else "replace",
                      random_init=True)
    with torch.device("meta"):  # shapes only: the full-size models without their memory
        model = build_model(cfg)
    parts = {"unet": model.unet, "vae": model.vae} if model.pipe is None else {
        "unet": model.pipe.unet, "vae": model.pipe.vae, "text_encoder": model.pipe.text_encoder}
    counts = {k: sum(p.numel() for p in parts[k].parameters()) for k in params}
    assert counts == params


def test_missing_diffusion_weights_are_one_line_naming_them(fake_cache):
    from sep_bench.recon.models import build_model

    cfg = ReconConfig(method="sd-inpaint", arch="sd-inpaint", weights="runwayml/stable-diffusion-inpainting",
                      use="augment")
    with pytest.raises(PretrainedUnavailableError) as err:
        build_model(cfg)
    text = str(err.value)
    assert "\n" not in text and "runwayml/stable-diffusion-inpainting" in text
    assert "weights prefetch" in text and "pretrained: false" in text


def test_unreachable_hub_fails_at_once_and_reads_the_cache(fake_cache, monkeypatch, unused_tcp_port):
    import timm

    from sep_bench.weights import timm_state_dict

    _unreachable(monkeypatch, unused_tcp_port)
    t0 = time.perf_counter()
    with pytest.raises(PretrainedUnavailableError, match="unreachable.*weights prefetch"):
        timm_state_dict("timm:resnet50.tv_in1k", "resnet50")
    assert time.perf_counter() - t0 < 1.0  # was 50 s of huggingface_hub retries
    # a cached copy loads without the hub
    sd = {k: v.clone() for k, v in timm.create_model("resnet18", pretrained=False).state_dict().items()}
    _cache_file(fake_cache, "timm/resnet18.tv_in1k", "model.safetensors", sd)
    got = timm_state_dict("timm:resnet18.tv_in1k", "resnet18")
    assert all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.fixture
def unused_tcp_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connecting to it is refused


def test_weights_list_and_prefetch_on_a_fake_cache(fake_cache):
    from sep_bench.cli import app

    _cache_file(fake_cache, "timm/resnet50.tv_in1k", "model.safetensors",
                {"fc.bias": torch.zeros(1000)})  # presence is all `list` checks (no load)
    runner = CliRunner()
    res = runner.invoke(app, ["weights", "list", "--profile", "genimage", "-d", "sep", "-d", "npr", "-d", "lgrad"])
    lines = res.output.splitlines()
    assert res.exit_code == 1, res.output
    assert any(l.startswith("sep") and "present" in l for l in lines)
    assert any(l.startswith("npr") and "random" in l for l in lines)
    assert any(l.startswith("lgrad") and "discriminator" in l and "missing" in l for l in lines)
    assert "1 missing of 3 needed" in res.output  # sep's and lgrad's ResNet-50 (cached), the discriminator file
    t0 = time.perf_counter()
    res = runner.invoke(app, ["weights", "prefetch", "--profile", "genimage", "-d", "sep", "-d", "univfd"])
    assert time.perf_counter() - t0 < 5.0 and res.exit_code == 1
    lines = res.output.splitlines()
    assert any(l.startswith("univfd") and "missing" in l and "HF_HUB_OFFLINE is set" in l for l in lines)
    assert any(l.startswith("sep") and "fetched" in l for l in res.output.splitlines())  # already in the cache


def test_the_doc_quotes_the_committed_offline_measurement():
    """docs/weights-and-gpu.md's offline timing is the block benchmarks/offline_hub.py wrote from its JSON."""
    import json

    from benchmarks import offline_hub

    report = json.loads((REPO / "results" / "benchmarks" / "offline_hub.json").read_text())
    text = (REPO / "docs" / "weights-and-gpu.md").read_text()
    block = text.split("<!-- offline-hub:start -->", 1)[1].split("<!-- offline-hub:end -->", 1)[0].strip()
    assert block == offline_hub.doc_block(report)
    assert report["results"]["sep_bench"]["seconds"] < 1.0 < report["results"]["library"]["seconds"]
    assert all(r["outcome"].startswith("PretrainedUnavailableError") for k, r in report["results"].items()
               if k.startswith("sep_bench"))
