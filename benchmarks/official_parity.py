"""Parity with the authors' code: FatFormer, AIDE, Effort, F-ConV and LOTA, before and after the fixes of issue 30.

Not a test: it needs the authors' repositories, which this project never ships (several have no licence). Clone
them into one folder and point ``--official-root`` at it::

    <root>/FatFormer                   github.com/Michel-liu/FatFormer
    <root>/AIDE                        github.com/shilinyan99/AIDE
    <root>/Effort-AIGI-Detection       github.com/YZY-stack/Effort-AIGI-Detection
    <root>/dinov2                      github.com/facebookresearch/dinov2
    <root>/LOTA                        github.com/hongsong-wang/LOTA

    .venv/bin/python benchmarks/official_parity.py --official-root /tmp/scratch-b

For each detector the authors' model code is built at full size with random weights (CPU, float32), the
parameters are perturbed so that every branch matters, the model is saved in the authors' checkpoint format and
loaded with this project's ``SPEC.load_official`` (through ``load_model(official=True)``, as ``sep-bench
predict`` does), and both run on the same input. Preprocessing is compared on two photographs (skimage's
astronaut, 512x512, and its top 397 rows, 512x397 W x H), stored as PNG so every decoder reads the same pixels.
"before" is the behaviour the fixes replaced, rebuilt explicitly (e.g. FatFormer with ``quick_gelu: false``, what
the null default gave without a pretrained tag); "after" is the current code. Each detector runs in its own
process (the repositories' top-level package names collide: ``models``). Writes
``results/benchmarks/official_parity.json``. Needs about 8 GB of memory (AIDE's ConvNeXt-XXL twice over).
AIDE's ``models/AIDE.py`` imports OpenAI's ``clip`` package without using it: install ``openai-clip`` outside the
project's environment (``pip install --target <dir> --no-deps openai-clip==1.0.1``, then ``PYTHONPATH=<dir>``).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_report  # noqa: E402

CHECKS = ("fatformer", "aide", "effort", "fconv", "lota")
REPOS = {"fatformer": "FatFormer", "aide": "AIDE", "effort": "Effort-AIGI-Detection", "fconv": "dinov2",
         "lota": "LOTA"}
UPSTREAM = {"FatFormer": "Michel-liu/FatFormer", "AIDE": "shilinyan99/AIDE",
            "Effort-AIGI-Detection": "YZY-stack/Effort-AIGI-Detection", "dinov2": "facebookresearch/dinov2",
            "LOTA": "hongsong-wang/LOTA"}


# ---- shared helpers ---------------------------------------------------------------------------------------------


def maxabs(a, b) -> float:
    import torch

    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def photos(work: Path) -> dict[str, Path]:
    """The two test photographs as PNG files: ``512x397`` (W x H) and ``512x512``."""
    from PIL import Image
    from skimage import data

    img = data.astronaut()
    out = {}
    for name, arr in (("512x397", img[:397]), ("512x512", img)):
        out[name] = work / f"astronaut_{name}.png"
        Image.fromarray(np.ascontiguousarray(arr)).save(out[name])
    return out


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def perturb(model, seed: int, std: float = 0.02) -> None:
    """Add N(0, std) noise to every floating-point parameter (so zero-initialised branches matter too)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(std * torch.randn(p.shape, generator=gen))


def recipe(model: dict | None = None, pretrained: bool | str = False):
    from sep_bench.protocol import Recipe

    return Recipe(model=model or {}, pretrained=pretrained, train={}, eval={})


def eval_input(detector: str, model_cfg: dict, path: Path, key: str = "image"):
    """This project's evaluation view of `detector` on the image at `path` (batch of one)."""
    from sep_bench.detectors import get_detector

    spec = get_detector(detector)
    view = spec.views(spec.make_config(model_cfg), False, False)
    return view(read_rgb(path), np.random.default_rng(0))[key][None]


def official_function(file: Path, cls: str, name: str, namespace: dict):
    """One method of the authors' file, compiled alone (its module imports heavy packages it does not need)."""
    tree = ast.parse(file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == name:
                    code = compile(ast.Module(body=[fn], type_ignores=[]), str(file), "exec")
                    exec(code, namespace)  # noqa: S102 - the user's own checkout of the authors' code
                    return namespace[name]
    raise LookupError(f"{file}: no {cls}.{name}")


# ---- FatFormer --------------------------------------------------------------------------------------------------


def _save_jit_archive(clip, path: Path) -> None:
    """The released ``ViT-L-14.pt`` is a TorchScript archive whose ``state_dict()`` ``clip.load`` rebuilds from (its
    state-dict fallback reads a file handle ``torch.jit.load`` has already consumed). A traced holder of the same
    modules and parameters gives such an archive with OpenAI's key names."""
    import torch
    from torch import nn

    class Holder(nn.Module):
        def forward(self, x):
            return x * self.logit_scale

    holder = Holder()
    for name, child in clip.named_children():
        holder.add_module(name, child)
    for name, p in clip.named_parameters(recurse=False):
        holder.register_parameter(name, p)
    torch.jit.save(torch.jit.trace(holder, torch.ones(1)), str(path))


def _fatformer_official(repo: Path, work: Path):
    """The authors' ``CLIPModel`` (``models/clip_models.py``) on an OpenAI-format ViT-L/14 state dict (QuickGELU),
    README settings ``--num_vit_adapter 3 --num_context_embedding 8``."""
    import open_clip
    import torch

    torch.manual_seed(0)
    clip = open_clip.CLIP(**open_clip.get_model_config("ViT-L-14"), quick_gelu=True)
    _save_jit_archive(clip, work / "ViT-L-14.pt")
    del clip
    sys.path.insert(0, str(repo))
    from models.clip_models import CLIPModel

    args = argparse.Namespace(num_vit_adapter=3, num_context_embedding=8, init_context_embedding="", num_classes=2)
    model = CLIPModel(str(work / "ViT-L-14.pt"), args)
    perturb(model, 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("freq_scale"):
                p.fill_(0.5)  # init 0: the DWT branch would not count
    return model.eval()


def _fatformer_official_input(path: Path):
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.Resize((256, 256)), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])  # utils/dataset.py (test)
    return tf(Image.open(path).convert("RGB"))[None]


def check_fatformer(repo: Path, work: Path) -> dict:
    import torch

    from sep_bench.engine.predict import load_model

    pics = photos(work)
    x = torch.cat([_fatformer_official_input(p) for p in pics.values()])
    pre = {name: maxabs(eval_input("fatformer", {}, p), _fatformer_official_input(p)) for name, p in pics.items()}
    official = _fatformer_official(repo, work)
    with torch.no_grad():
        want = official(x)
    ckpt = work / "fatformer.pth"
    torch.save({"model": official.state_dict()}, ckpt)  # main.py: model.load_state_dict(checkpoint['model'])
    del official
    out = {"files": ["models/clip_models.py", "models/clip/model.py", "models/clip/clip.py", "utils/dataset.py"],
           "input_max_abs_diff": pre, "official_logits_max_abs": float(want.abs().max())}
    for label, cfg in (("before", {"quick_gelu": False}), ("after", {})):
        model = load_model("fatformer", ckpt, official=True, recipe=recipe(cfg)).eval()
        with torch.no_grad():
            two = model.two_class_logits(x)
            fake = model({"image": x})
        out[label] = {"config": cfg, "two_class_logits_max_abs_diff": maxabs(two, want),
                      "fake_logit_max_abs_diff": maxabs(fake, want[:, 1] - want[:, 0])}
        del model
    out["before"]["what"] = "quick_gelu null without a pretrained tag = GELU (the default before the fix)"
    return out


# ---- AIDE -------------------------------------------------------------------------------------------------------


def _aide_official_checkpoint(repo: Path, work: Path, x):
    """The authors' ``AIDE_Model`` (random ResNets, random ConvNeXt-XXL) saved as ``utils.save_model`` does."""
    import torch

    sys.path.insert(0, str(repo))
    from models.AIDE import AIDE_Model

    torch.manual_seed(0)
    model = AIDE_Model(resnet_path=None, convnext_path=None)
    perturb(model, 2, std=0.01)
    model.eval()
    with torch.no_grad():
        want = model(x)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad][:4], lr=1e-4)
    args = argparse.Namespace(model="AIDE", blr=1e-4, batch_size=32, epochs=20, resnet_path=None,
                              convnext_path=None, output_dir=str(work), data_path="train", eval_data_path="test")
    ckpt = work / "checkpoint-best.pth"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 4,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 0}, "args": args}, ckpt)
    return ckpt, want


def check_aide(repo: Path, work: Path) -> dict:
    import torch

    from sep_bench.engine.predict import load_model
    from sep_bench.weights import WeightsFileError, load_state_dict

    gen = torch.Generator().manual_seed(3)
    patches, image = torch.randn(1, 4, 3, 256, 256, generator=gen), torch.randn(1, 3, 256, 256, generator=gen)
    ckpt, want = _aide_official_checkpoint(repo, work, torch.cat([patches, image[:, None]], dim=1))
    out = {"files": ["models/AIDE.py", "utils.py (save_model)"], "official_logits_max_abs": float(want.abs().max())}
    try:  # the loader before the fix: the weights-only unpickler without the Namespace allowance
        load_state_dict(ckpt)
        out["before"] = {"loads": True}
    except WeightsFileError as err:
        out["before"] = {"loads": False, "error": str(err)}
    model = load_model("aide", ckpt, official=True, recipe=recipe()).eval()
    with torch.no_grad():
        fake = model({"patches": patches, "image": image})
    out["after"] = {"loads": True, "fake_logit_max_abs_diff": maxabs(fake, want[:, 1] - want[:, 0])}
    return out


# ---- Effort -----------------------------------------------------------------------------------------------------


def _effort_official_input(repo: Path, path: Path):
    """DeepfakeBench ``load_rgb`` (``training/dataset/abstract_dataset.py``, run as written, resolution 224) ->
    ``T.ToTensor`` -> ``T.Normalize`` with effort.yaml's CLIP mean/std."""
    import os
    import types

    import cv2
    import torchvision.transforms as T
    from PIL import Image

    file = repo / "DeepfakeBench/training/dataset/abstract_dataset.py"
    load_rgb = official_function(file, "DeepfakeAbstractBaseDataset", "load_rgb",
                                 {"cv2": cv2, "np": np, "Image": Image, "os": os})
    img = load_rgb(types.SimpleNamespace(config={"resolution": 224}, lmdb=False), str(path))
    norm = T.Normalize(mean=[0.48145466, 0.4578275, 0.40821073], std=[0.26862954, 0.26130258, 0.27577711])
    return norm(T.ToTensor()(img))[None]


def check_effort(repo: Path, work: Path) -> dict:
    """Preprocessing (the fix), and its effect on the logit of one full-size model (this project's Effort, random
    CLIP ViT-L/14 weights; the official module needs DeepfakeBench's registries, tensorboard and loralib)."""
    import torch

    from sep_bench.layers.clip import create_hf_clip

    pics = photos(work)
    torch.manual_seed(0)
    tower = create_hf_clip("openai/clip-vit-large-patch14", "vision").eval()
    head = torch.nn.Linear(1024, 2)
    perturb(head, 4, std=0.5)

    def model(views):  # Effort at init: the SVD split reconstructs each weight, so the function is the tower's
        logits = head(tower(pixel_values=views["image"]).pooler_output)
        return logits[:, 1] - logits[:, 0]

    out = {"files": ["DeepfakeBench/training/dataset/abstract_dataset.py (load_rgb, to_tensor, normalize)",
                     "DeepfakeBench/training/config/detector/effort.yaml (resolution, mean, std)"],
           "model": "HF CLIP ViT-L/14 vision tower (random) + Linear(1024, 2), Effort's function at init (its SVD "
                    "split reconstructs the weights): the logit change from the input alone"}
    before_cfg = {"geometry": "short_side_crop", "eval_resize": 224}
    for label, cfg in (("before", before_cfg), ("after", {})):
        res = {"config": cfg}
        for name, path in pics.items():
            ref, ours = _effort_official_input(repo, path), eval_input("effort", cfg, path)
            with torch.no_grad():
                logits = model({"image": torch.cat([ref, ours])})
            res[name] = {"input_max_abs_diff": maxabs(ours, ref),
                         "input_mean_abs_diff": float((ours - ref).abs().mean()),
                         "fake_logit_abs_diff": abs(float(logits[1] - logits[0]))}
        out[label] = res
    out["before"]["what"] = "short side to 224 (PIL bilinear) then centre crop 224 (the view before the fix)"
    out["jpeg_decoder"] = _effort_jpeg_decoder(repo, work, pics)
    return out


def _effort_jpeg_decoder(repo: Path, work: Path, pics: dict[str, Path]) -> dict:
    """The decoder that stays different: the authors read with ``cv2.imread``, this project with PIL. Input
    difference on the photographs saved as JPEG (quality 95, PIL's encoder)."""
    from PIL import Image

    out = {}
    for name, path in pics.items():
        jpg = work / f"{path.stem}.jpg"
        Image.open(path).save(jpg, quality=95)
        out[name] = {"input_max_abs_diff": maxabs(eval_input("effort", {}, jpg), _effort_official_input(repo, jpg))}
    return out


# ---- F-ConV (its DINOv2 backbone) -------------------------------------------------------------------------------


def _dinov2_official(repo: Path):
    """``dinov2.hub.backbones.dinov2_vitl14`` (img_size 518, patch 14, init_values 1.0, interpolate_offset 0.1,
    interpolate_antialias False) with random, perturbed weights."""
    import torch

    sys.path.insert(0, str(repo))
    from dinov2.hub.backbones import dinov2_vitl14

    torch.manual_seed(0)
    model = dinov2_vitl14(pretrained=False)
    perturb(model, 5)
    return model.eval()


def _fconv_official_input(path: Path):
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return tf(Image.open(path).convert("RGB"))[None]


def check_fconv(repo: Path, work: Path) -> dict:
    import timm
    import torch

    from sep_bench.detectors import get_detector
    from sep_bench.weights import parse_pretrained

    pics = photos(work)
    x = torch.cat([_fconv_official_input(p) for p in pics.values()])
    official = _dinov2_official(repo)
    with torch.no_grad():
        want = official(x)  # the normalised CLS token (head = Identity)
    ckpt = work / "dinov2_vitl14_pretrain.pth"
    torch.save(official.state_dict(), ckpt)  # the released file: a plain state dict
    del official
    out = {"files": ["dinov2/models/vision_transformer.py (interpolate_pos_encoding)", "dinov2/hub/backbones.py"],
           "flow": "not compared: junz-debug/ConV was not retrievable where this was measured",
           "input_max_abs_diff": {n: maxabs(eval_input("fconv", {}, p), _fconv_official_input(p))
                                  for n, p in pics.items()},
           "official_cls_max_abs": float(want.abs().max())}
    old = timm.create_model("vit_large_patch14_dinov2", pretrained=True, img_size=224, num_classes=0,
                            pretrained_cfg_overlay={"file": str(ckpt)}).eval()  # the build before the fix
    spec = get_detector("fconv")
    new = spec.build(spec.make_config({}), parse_pretrained(str(ckpt), None)).backbone.eval()
    for label, net in (("before", old), ("after", new)):
        with torch.no_grad():
            feats = net(x)
        out[label] = {"cls_feature_max_abs_diff": maxabs(feats, want)}
    out["before"]["what"] = "timm at 224 px: position embedding resampled once at load, size 16, antialiased"
    return out


# ---- LOTA -------------------------------------------------------------------------------------------------------


def _lota_official(repo: Path):
    """The authors' ``model`` (``model.py``: ``disc`` = their ResNet-50, fc Linear(2048, 1)) without the ImageNet
    download of its constructor (random weights)."""
    import torch
    from torch import nn

    sys.path.insert(0, str(repo))
    import model as official_model

    net = official_model.model.__new__(official_model.model)
    nn.Module.__init__(net)
    torch.manual_seed(0)
    net.disc = official_model.resnet50(pretrained=False)
    net.disc.fc = nn.Linear(2048, 1)
    perturb(net, 6)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.fill_(1.5)
            m.running_mean.normal_(0, 0.1)
    return net.eval()


def _lota_patches(repo: Path, path: Path, seed: int):
    """(official ``bit_patch`` output, the same 64 crop positions scored and up-sampled by this project's code
    after and before the fix)."""
    import random

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from sep_bench.baselines.lota import candidate_scores, noise_image
    from sep_bench.data.transforms import resize_cv2

    sys.path.insert(0, str(repo))
    from bit_patch import bit_patch

    img = Image.open(path).convert("RGB")
    torch.manual_seed(seed)
    random.seed(seed)
    official = bit_patch(img, 256, "scaling", 32, "max")   # test.py: --patch_mode max
    torch.manual_seed(seed)  # torchvision RandomCrop.get_params: i then j, one torch.randint each, 64 times
    w, h = img.size
    pos = [(torch.randint(0, h - 31, (1,)).item(), torch.randint(0, w - 31, (1,)).item()) for _ in range(64)]
    noise = noise_image(np.array(img))
    ys, xs = np.array([p[0] for p in pos]), np.array([p[1] for p in pos])
    k = int(np.argmax(candidate_scores(noise, ys, xs, 32)))
    patch = noise[ys[k]:ys[k] + 32, xs[k]:xs[k] + 32]
    after = resize_cv2(patch, 256, 256, "linear")
    t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float()
    before = torch.floor(F.interpolate(t, size=(256, 256), mode="bilinear", align_corners=False) + 0.5).clamp(0, 255)
    before = before[0].permute(1, 2, 0).to(torch.uint8).numpy()  # the model's up-sampling before the fix
    return official, after, before


def check_lota(repo: Path, work: Path) -> dict:
    import torch
    import torchvision.transforms as T

    from sep_bench.engine.predict import load_model

    pics = photos(work)
    net = _lota_official(repo)
    ckpt = work / "Network_best.pth"
    torch.save(net.state_dict(), ckpt)
    model = load_model("lota", ckpt, official=True, recipe=recipe()).eval()
    tf = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])  # loader.py
    out = {"files": ["bit_patch.py", "loader.py", "model.py"], "before": {}, "after": {}}
    for name, path in pics.items():
        official, after, before = _lota_patches(repo, path, seed=7)
        with torch.no_grad():
            want = net(tf(official)[None])[:, 0]
            for label, arr in (("before", before), ("after", after)):
                fake = model({"patch": torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0})
                diff = np.abs(arr.astype(int) - official.astype(int))
                out[label][name] = {"grey_levels_max_diff": int(diff.max()),
                                    "values_differing_fraction": float((diff > 0).mean()),
                                    "input_max_abs_diff": maxabs(tf(arr), tf(official)),
                                    "logit_max_abs_diff": maxabs(fake, -want)}
    out["before"]["what"] = "F.interpolate(bilinear) + round half up in the model (the up-sampling before the fix)"
    return out


# ---- driver -----------------------------------------------------------------------------------------------------


def repo_commit(repo: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_one(name: str, root: Path, part: Path) -> None:
    """Child process: one detector's comparison, written to `part` as JSON."""
    import torch

    torch.set_grad_enabled(False)
    repo = root / REPOS[name]
    with tempfile.TemporaryDirectory(prefix=f"parity-{name}-") as tmp:
        result = globals()[f"check_{name}"](repo, Path(tmp))
    part.write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-root", type=Path, required=True, help="folder holding the authors' repositories")
    parser.add_argument("--detectors", default=",".join(CHECKS), help=f"comma-separated, from {', '.join(CHECKS)}")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmarks" / "official_parity.json")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.official_root, args.part)
        return
    names = [n for n in args.detectors.split(",") if n]
    unknown = [n for n in names if n not in CHECKS]
    missing = [REPOS[n] for n in names if n in CHECKS and not (args.official_root / REPOS[n]).is_dir()]
    if unknown or missing:
        sys.exit(f"official_parity: unknown detectors {unknown}; missing repositories under "
                 f"{args.official_root}: {missing}")
    results = {}
    if args.out.exists():  # detectors not named this time keep their earlier measurement (each entry is dated)
        results = json.loads(args.out.read_text()).get("detectors", {})
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        for name in names:
            part = Path(tmp) / f"{name}.json"
            print(f"{name} ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--official-root", str(args.official_root),
                                   "--one", name, "--part", str(part)], cwd=REPO_ROOT)
            repo = args.official_root / REPOS[name]
            entry = {"repository": UPSTREAM[REPOS[name]], "commit": repo_commit(repo),
                     "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            entry.update(json.loads(part.read_text()) if proc.returncode == 0 and part.exists()
                         else {"error": f"exit status {proc.returncode}"})
            results[name] = entry
            print(json.dumps(entry, indent=1)[:2000], flush=True)
    write_report(args.out, "official_parity", args, None, {"detectors": results})


if __name__ == "__main__":
    main()
