"""A tiny tree with GenImage's real shape, for tests: the 8 subsets' folder names, ``<subset>/{train,val}/{ai,nature}``,
JPEG reals (one grayscale, ImageNet-like sizes) and PNG fakes, a few images each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: GenImage's subset folders (params.yaml profiles.genimage.data.generator_aliases)
SUBSETS = ["imagenet_midjourney", "imagenet_ai_0419_sdv4", "imagenet_ai_0424_sdv5", "imagenet_ai_0508_adm",
           "imagenet_glide", "imagenet_ai_0424_wukong", "imagenet_ai_0419_vqdm", "imagenet_ai_0419_biggan"]
TRAIN_SUBSET = "imagenet_ai_0419_sdv4"


def make_genimage_tree(root: Path, *, n_train: int = 8, n_val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write the tree under `root` (n_train images per class in the SD v1.4 train split, n_val per class in every
    subset's val split); returns `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for subset in SUBSETS:
        for split, n in (("train", n_train if subset == TRAIN_SUBSET else 0), ("val", n_val)):
            for cls in ("nature", "ai"):
                folder = root / subset / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    pixels = rng.integers(0, 256, (size + 8 * (i % 3), size, 3), dtype=np.uint8)
                    if cls == "ai":  # fakes: PNG, smooth (upsampled), so a detector has something to learn
                        small = Image.fromarray(pixels[::4, ::4])
                        small.resize((size, size), Image.BILINEAR).save(folder / f"{subset}_{i:03d}.png")
                    elif i == 0:  # ImageNet has grayscale JPEGs
                        Image.fromarray(pixels[..., 0], "L").save(folder / f"ILSVRC_{split}_{i:05d}.JPEG",
                                                                  quality=90)
                    else:
                        Image.fromarray(pixels).save(folder / f"ILSVRC_{split}_{i:05d}.JPEG", quality=90)
    return root
