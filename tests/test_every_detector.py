"""Every registered detector with a params.yaml block, found by walking the registry (timm's test_models style):
its `mini` recipe builds offline, its train and eval views give finite tensors, the model returns one finite fake
logit per image, and the training objective back-propagates into trainable parameters."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sep_bench.data.transforms import sample_rng
from sep_bench.detectors import PROVENANCES, get_detector, list_detectors
from sep_bench.protocol import load_params, resolve
from sep_bench.weights import WeightsSource

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
NAMES = [n for n in list_detectors() if n in PARAMS.detectors]


def test_every_registered_detector_has_a_recipe_and_every_recipe_a_detector():
    assert set(NAMES) == set(PARAMS.detectors), set(PARAMS.detectors) ^ set(NAMES)
    assert set(PARAMS.run.detectors) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_mini_recipe_builds_and_trains_one_step(name):
    spec = get_detector(name)
    assert spec.provenance in PROVENANCES and spec.summary and spec.paper and spec.repo
    run = resolve(PARAMS, name, "mini")
    cfg = spec.make_config(run.recipe.model)
    torch.manual_seed(0)
    model = spec.build(cfg, WeightsSource.none())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 80, 3), dtype=np.uint8) for _ in range(2)]
    for train in (True, False):
        view = spec.views(cfg, train, train)
        batch = [view(img, sample_rng(0, i, 0)) for i, img in enumerate(images)]
        views = {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
        assert all(torch.isfinite(v).all() for v in views.values()), name
        if train:
            # two steps with a mode switch between them: a detector may spend its first pass fitting input
            # statistics (FreDect's DCT mean/variance), which freeze at the next train()/eval()
            for _ in range(2):
                model.eval()
                model.train()
                model.zero_grad(set_to_none=True)
                out = model.train_forward(views)
                assert out["logits"].shape == (2,), name
                loss = model.train_loss(out, torch.tensor([0, 1]))
                assert torch.isfinite(loss), name
                loss.backward()
            grads = [p.grad for p in model.trainable_parameters()]
            assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name
        else:
            model.eval()
            with torch.no_grad():
                logits = model(views)
            assert logits.shape == (2,) and torch.isfinite(logits).all(), name
