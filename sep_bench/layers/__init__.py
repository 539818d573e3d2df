"""Building blocks shared by SEP and the baselines, one idea per module (timm ``layers/`` style).

- `srm`: fixed SRM high-pass filter banks (SEP/SSP's 3 filters, the 30-filter steganalysis bank of AIDE and
  PatchCraft) and the convolution that applies them.
- `dwt`: discrete wavelet transforms (pytorch_wavelets wrappers; SEP's FPM, SAFE, FatFormer).
- `dct`: orthonormal DCT-II matrices and 2-D / block DCTs (F3Net, FreDect, AIDE).
- `eps`: exposed-patch selection, the patch of least texture (SEP, SSP; `ensure_min_size`: also AIDE, LoTA).
- `augment`: CNNDetection's seeded blur/JPEG training augmentation and crop view (CNNSpot, UnivFD, SSP, ...).
- `backbones`: the torchvision ResNet builder with a one-logit head, and checkpoint helpers (strict loading,
  negated logits, input-size checks).
- `sapm`: SEP's spatial branch, SRM-guided GBCSA attention on the patch.
- `fpm`: SEP's frequency branch, the DWT map of the crop and its grouped dilated enhancer.

Modules are imported by their full path (``from sep_bench.layers.srm import SRMConv2d``); this package imports
nothing eagerly, so a block's optional dependency only matters to the detectors that use it.
"""
