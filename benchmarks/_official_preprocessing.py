"""The authors' evaluation preprocessing, one function per detector, for benchmarks/preprocessing_audit.py.

Each `Official` names the repository folder under ``--official-root`` (``<owner>+<name>``, a checkout of the
authors' repository; nothing of it is in this repository), the files its facts come from, and *anchors*: the
calls mirrored here, which must occur verbatim in those files (if the authors change them, the audit says so
instead of comparing against a stale mirror). `fn(repo_dir, img)` computes the model input(s) the authors' code
gives for the decoded RGB uint8 image `img`, named as in this harness's view (``image``, ``patch``, ...). Where an
official file is importable on its own (numpy/PIL/torch/torchvision/cv2 only) it is imported from `repo_dir` and
called; otherwise its calls are mirrored with the same library (torchvision transforms on a PIL image are PIL
resampling, as in the authors' code).

Random candidate patches (SEP, SSP, LOTA) are compared at the same candidate positions: `fn` receives them through
`positions(h, w, n)`, the draws this harness's view makes from ``np.random.default_rng(0)`` (``ys`` then ``xs``),
so the comparison covers the scoring, the choice, the resizing and the normalisation, not the random draws.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])


def positions(h: int, w: int, n: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The candidate positions the harness draws from default_rng(0) (sep_bench.layers.eps.candidate_positions)."""
    rng = np.random.default_rng(0)
    ys = rng.integers(0, h - size + 1, size=n)
    xs = rng.integers(0, w - size + 1, size=n)
    return ys, xs


def load_module(path: Path, name: str):
    """Import one official file as a module (its own imports must be installed)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img)


def _tv(*steps) -> Callable[[np.ndarray], torch.Tensor]:
    compose = T.Compose(list(steps))
    return lambda img: compose(_pil(img))


def _norm(stats) -> T.Normalize:
    return T.Normalize(mean=stats[0], std=stats[1])


@dataclass(frozen=True)
class Official:
    repo: str | None  # folder under --official-root; None: no official code
    files: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    fn: Callable[[Path, np.ndarray], dict[str, torch.Tensor]] | None = None
    needs: tuple[str, ...] = field(default_factory=tuple)  # modules the mirror imports (e.g. cv2)


# ---- whole-image views -------------------------------------------------------------------------------------------


def _centre_crop(size: int, stats):
    f = _tv(T.CenterCrop(size), T.ToTensor(), _norm(stats))
    return lambda repo, img: {"image": f(img)}


def _short_resize_crop(load: int, crop: int, stats):
    f = _tv(T.Resize(load), T.CenterCrop(crop), T.ToTensor(), _norm(stats))
    return lambda repo, img: {"image": f(img)}


def _square_resize_crop(load: int, crop: int | None, stats):
    steps = [T.Resize((load, load))] + ([T.CenterCrop(crop)] if crop else []) + [T.ToTensor(), _norm(stats)]
    f = _tv(*steps)
    return lambda repo, img: {"image": f(img)}


def _safe(repo, img):
    return {"image": _tv(T.CenterCrop([256, 256]), T.ToTensor())(img)}


def _drct(repo, img):
    """albumentations PadIfNeeded(224) -> CenterCrop(224) -> PadIfNeeded -> Normalize (x / 255 - mean) / std."""
    size = 224
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2  # A.CenterCrop: floor offsets
    crop = img[y : y + size, x : x + size].astype(np.float32) / 255.0
    mean, std = (np.array(s, dtype=np.float32) for s in IMAGENET)
    return {"image": torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).copy())}


def _effort(repo, img):
    import cv2

    squash = cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)  # abstract_dataset.load_rgb (RGB here)
    return {"image": _norm(CLIP)(T.ToTensor()(_pil(squash)))}


def _gramnet(repo, img):
    """stylegan-ffhq/test.py: the image as cv2.imread reads it (BGR), copied channel by channel into a float array
    allocated as (1, 3, h, h), no resize, no normalisation (a non-square image does not fit: numpy raises)."""
    im = np.ascontiguousarray(img[:, :, ::-1])
    h = im.shape[0]
    ims = np.zeros((1, 3, h, h))
    for c in range(3):
        ims[0, c, :, :] = im[:, :, c]
    return {"image": torch.tensor(ims).float()[0]}


def _fredect(repo, img):
    """The port's DCT input: Resize(256) (short side) -> CenterCrop(224) -> the uint8 pixels (DCT in the model)."""
    crop = T.CenterCrop(224)(T.Resize(256)(_pil(img)))
    return {"image": torch.from_numpy(np.asarray(crop).transpose(2, 0, 1).astype(np.float32))}


def _lgrad(repo, img):
    """gen_imggrad.py: Resize((256, 256)) -> ToTensor -> Normalize(0.5, 0.5): the discriminator's input."""
    return {"image": _tv(T.Resize((256, 256)), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3))(img)}


# ---- patch views -------------------------------------------------------------------------------------------------


def _sep(repo, img):
    off = load_module(repo / "data/dataset.py", "_official_sep_dataset")
    ys, xs = positions(*img.shape[:2], n=256)
    pil = _pil(img)
    crops = [pil.crop((int(x), int(y), int(x) + 32, int(y) + 32)) for y, x in zip(ys, xs)]
    crops.sort(key=lambda p: off.compute_complexity(p), reverse=False)  # select_patch_val's sort
    return {"patch": off.trans_patch(crops[0]), "img_dwt": off.transform_val_dwt(pil)}


def _ssp(repo, img):
    off = load_module(repo / "utils/patch.py", "_official_ssp_patch")
    ys, xs = positions(*img.shape[:2], n=64)
    pil = _pil(img)
    crops = [pil.crop((int(x), int(y), int(x) + 32, int(y) + 32)) for y, x in zip(ys, xs)]
    crops.sort(key=lambda p: off.compute(p), reverse=False)  # patch_img's sort
    return {"patch": T.Compose([T.ToTensor(), _norm(IMAGENET)])(crops[0])}


def _lota(repo, img):
    import cv2

    off = load_module(repo / "bit_patch.py", "_official_lota_bit_patch")
    noise = (img & 0x07) * (255 // 7)  # bit_patch's "scaling" noise image
    noise = noise.astype(np.uint8)
    ys, xs = positions(*img.shape[:2], n=64)
    crops = [noise[y : y + 32, x : x + 32] for y, x in zip(ys, xs)]
    crops.sort(key=lambda p: off.compute(p), reverse=True)  # patch_mode "max"
    up = cv2.resize(crops[0], (256, 256))
    return {"patch_256": T.Compose([T.ToTensor(), _norm(IMAGENET)])(up)}


def _aide(repo, img):
    off = load_module(repo / "data/dct.py", "_official_aide_dct")
    x = T.ToTensor()(_pil(img))
    with torch.no_grad():
        parts = off.DCT_base_Rec_Module()(x)  # x_minmin, x_maxmax, x_minmin1, x_maxmax1
    # datasets.transform_train under the pinned torchvision 0.12: Resize on a tensor without antialias
    post = T.Compose([T.Resize([256, 256], antialias=False), _norm(IMAGENET)])
    return {"patches": torch.stack([post(p) for p in parts]), "image": post(x)}


TABLE: dict[str, Official] = {
    "sep": Official("1112348+SEP-for-AIGCDetection", ("data/dataset.py",),
                    ("num_patch = 256", "transforms.CenterCrop([256, 256])", "def compute_complexity"), _sep),
    "npr": Official("chuangchuangtan+NPR-DeepfakeDetection", ("data/datasets.py",),
                    ("transforms.CenterCrop(opt.cropSize)", "transforms.Resize((opt.loadSize, opt.loadSize))"),
                    _centre_crop(224, IMAGENET)),
    "univfd": Official("WisconsinAIVision+UniversalFakeDetect", ("validate.py",),
                       ("transforms.CenterCrop(224)",), _centre_crop(224, CLIP)),
    "cnnspot": Official("PeterWang512+CNNDetection", ("data/datasets.py", "eval.py"),
                        ("transforms.CenterCrop(opt.cropSize)", "opt.no_resize = True"), _centre_crop(224, IMAGENET)),
    "ssp": Official("bcmi+SSP-AI-Generated-Image-Detection", ("utils/patch.py", "utils/tdataloader.py"),
                    ("patch_list.sort(key=lambda x: compute(x), reverse=False)",), _ssp),
    "patchcraft": Official(None),
    "f3net": Official(None),
    "gramnet": Official("liuzhengzhe+Global_Texture_Enhancement_for_Fake_Face_Detection_in_the-Wild",
                        ("stylegan-ffhq/test.py",), ("cv2.imread",), _gramnet),
    "dire": Official("ZhendongWang6+DIRE", ("utils/datasets.py", "utils/config.py"),
                     ("TF.resize(img, cfg.loadSize", "transforms.CenterCrop(cfg.cropSize)"),
                     _short_resize_crop(256, 224, IMAGENET)),
    # the upstream repository holds only its README; its code is read from the fork named in the catalog
    "freqnet": Official("ysobella+FreqNet-DeepfakeDetection", ("data/datasets.py", "original_test.py"),
                        ("transforms.Resize((opt.loadSize, opt.loadSize))", "'no_crop'    : True"),
                        _square_resize_crop(256, None, IMAGENET)),
    "fatformer": Official("Michel-liu+FatFormer", ("utils/dataset.py",),
                          ("transforms.Resize((img_resolution, img_resolution))",
                           "transforms.CenterCrop(crop_resolution)"), _square_resize_crop(256, 224, IMAGENET)),
    "drct": Official("beibuwandeluori+DRCT", ("data/transform.py", "scripts/test_GenImage.sh"),
                     ("A.CenterCrop(height=size, width=size)", "--is_crop"), _drct),
    "aide": Official("shilinyan99+AIDE", ("data/datasets.py", "data/dct.py", "requirements.txt"),
                     ("transforms.Resize([256, 256])", "torchvision==0.12.0"), _aide),
    "c2pclip": Official("chuangchuangtan+C2P-CLIP-DeepfakeDetection", ("data.py", "inference.py"),
                        ("transforms.Resize( opt.loadSize )", "transforms.CenterCrop(opt.cropSize)"),
                        _short_resize_crop(224, 224, CLIP)),
    "safe": Official("Ouxiang-Li+SAFE", ("data/datasets.py", "scripts/eval.sh"),
                     ("transforms.CenterCrop([size, size])", "--transform_mode 'crop'"), _safe),
    "effort": Official("YZY-stack+Effort-AIGI-Detection", ("DeepfakeBench/training/dataset/abstract_dataset.py",),
                       ("cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)",), _effort, ("cv2",)),
    "fconv": Official("junz-debug+ConV", ("augmentations_fconv.py",),
                      ("crops_image = self.centercrop(image)",), _centre_crop(224, IMAGENET)),
    "lgrad": Official("chuangchuangtan+LGrad", ("img2gad_pytorch/gen_imggrad.py",),
                      ("transforms.Resize((256, 256))",), _lgrad),
    "fredect": Official("Ekko-zn+AIGCDetectBenchmark", ("data/process.py",), ("def processing_DCT",), _fredect),
    "lota": Official("hongsong-wang+LOTA", ("bit_patch.py",),
                     ("return cv2.resize(patch_np, (img_height, img_height))",), _lota, ("cv2",)),
    "formatonly": Official(None),
}


# ---- training: the deterministic resize before the random crop (uint8 images, grey levels) -----------------------


def _effort_train(repo, img):
    import cv2

    return cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)


#: detector -> (the authors' pre-crop training resize, this harness's: (cfg, img) -> uint8 image)
TRAIN_RESIZE: dict[str, tuple[Callable, Callable]] = {
    "npr": (lambda repo, img: np.asarray(T.Resize((256, 256))(_pil(img))),
            lambda cfg, img, tr: tr.resize_short(img, cfg.train_resize)),
    "univfd": (lambda repo, img: np.asarray(T.Resize(256)(_pil(img))),
               lambda cfg, img, tr: tr.resize_short(img, cfg.train_resize)),
    "cnnspot": (lambda repo, img: np.asarray(T.Resize(256)(_pil(img))),
                lambda cfg, img, tr: tr.resize_short(img, cfg.train_resize)),
    "dire": (lambda repo, img: np.asarray(T.Resize(256)(_pil(img))),
             lambda cfg, img, tr: tr.resize_short(img, cfg.train_resize)),
    "freqnet": (lambda repo, img: np.asarray(T.Resize((256, 256))(_pil(img))),
                lambda cfg, img, tr: tr.resize(img, cfg.resize, cfg.resize)),
    "effort": (_effort_train, lambda cfg, img, tr: tr.resize_short(img, cfg.train_resize)),
}
