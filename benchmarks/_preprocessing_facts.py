"""The written facts of the preprocessing audit (official train / eval geometry, interpolation, normalisation,
ours) and the renderer of docs/preprocessing.md from results/benchmarks/preprocessing_audit.json.

The facts are read from the files that benchmarks/_official_preprocessing.py names for each detector (and, for
the training side, from the detector module's docstring, which lists the files it was written from); the numbers
in the document come only from the JSON.
"""

from __future__ import annotations

FIX = "fixed (#30 item 1)"

# official_train, official_eval, interpolation (library, antialias), normalisation, ours, [status], [note]
FACTS: dict[str, dict[str, str]] = {
    "sep": dict(
        train="exposed patch: the lowest-texture of 64 random 32 px crops of the full image; DWT branch: RandomCrop "
              "256 (pad_if_needed)",
        eval="the lowest-texture of 256 random 32 px crops; DWT branch: CenterCrop 256; no resize",
        interp="none on the input (crops); images with a side < 32: Resize((256, 256)), PIL bilinear",
        norm="patch ImageNet; DWT crop [0, 1]",
        ours="the same; candidates drawn from the per-sample numpy Generator"),
    "npr": dict(
        train="Resize((256, 256)) (square, aspect not kept) -> RandomCrop 224 -> flip",
        eval="GenImage: CenterCrop 224, no resize (test.py's own sets: Resize((256, 256)) or the full image)",
        interp="PIL bilinear (torchvision Resize on a PIL image)",
        norm="ImageNet",
        ours="train: short side 256 -> random crop 224 -> flip (non-square images: short-side resize instead of "
             "the square squash); eval: centre crop 224",
        note="deviation kept so far, not part of #30: the training squash of non-square images is a short-side "
                  "resize here"),
    "univfd": dict(
        train="short side 256 -> blur/JPEG -> RandomCrop 224 -> flip", eval="CenterCrop 224, no resize",
        interp="PIL bilinear (train resize only)", norm="CLIP", ours="the same"),
    "cnnspot": dict(
        train="short side 256 -> blur/JPEG -> RandomCrop 224 -> flip", eval="CenterCrop 224, no resize "
        "(eval.py: no_resize)", interp="PIL bilinear (train resize only)", norm="ImageNet", ours="the same"),
    "ssp": dict(
        train="the lowest-texture of 64 random 32 px crops", eval="the same (64 candidates)",
        interp="in the model: the patch bilinearly up-sampled to 256 (torch, align_corners False)",
        norm="ImageNet (before the up-sampling)", ours="the same; candidates from the numpy Generator"),
    "patchcraft": dict(
        train="not published", eval="official test code on ModelScope only (not retrievable here)",
        interp="-", norm="[0, 1]",
        ours="192 random 32 px crops, the 64 poorest / richest tiled into two 256 x 256 images (re-implementation)",
        note="no official code to compare with: not measured"),
    "f3net": dict(
        train="no official code (GenImage's detector_codes/F3Net-main has the model only)", eval="-",
        interp="-", norm="-", ours="short side 299 -> random 299 crop + flip / centre crop 299; mean/std 0.5 (guess)",
        note="no official preprocessing exists: not measured"),
    "gramnet": dict(
        train="cv2 resize to a random square U{64..256} and back to 512 x 512 (face recipe)",
        eval="the full image as cv2.imread reads it (BGR, 0..255, no resize, no normalisation); test.py "
             "allocates an (h, h) array, so only square images run",
        interp="cv2 bilinear (train only)", norm="none (BGR 0..255)",
        ours="train: the same down/up-sampling with PIL bilinear; eval: the full image, BGR 0..255"),
    "dire": dict(
        train="on the DIRE map: short side 256 -> RandomCrop 224 -> flip",
        eval="on the DIRE map: short side 256 -> CenterCrop 224",
        interp="PIL bilinear (TF.resize)", norm="ImageNet",
        ours="the same (measured on the photograph standing in for a map)"),
    "freqnet": dict(
        train="Resize((256, 256)) -> RandomCrop 224 -> flip", eval="Resize((256, 256)), no crop (ForenSynths)",
        interp="PIL bilinear", norm="ImageNet", ours="the same"),
    "fatformer": dict(
        train="no training code (third-party trainer)", eval="Resize((256, 256)) -> CenterCrop 224",
        interp="PIL bilinear", norm="ImageNet (not CLIP's)", ours="the same; train (guess): random 224 crop + flip",
        status=FIX, note="the fix was the CLIP activation (QuickGELU) of the released-weights path, a model "
                         "difference; the input was not affected"),
    "drct": dict(
        train="albumentations chain (JPEG, scale, flip, noise, blur, rot90, colour, ...) -> PadIfNeeded 224 -> "
              "RandomCrop 224", eval="PadIfNeeded 224 -> CenterCrop 224 (floor offsets) -> PadIfNeeded",
        interp="none at eval (cv2 bilinear in the training RandomScale)", norm="ImageNet for both backbones",
        ours="the same (numpy/PIL re-implementation of the albumentations steps)"),
    "aide": dict(
        train="blur / JPEG (p 0.1 each) -> 32 px DCT windows, stride 16: 2 lowest + 2 highest -> each Resize 256; "
              "whole image Resize((256, 256))", eval="the same without blur / JPEG",
        interp="torchvision Resize on a tensor, bilinear; the pinned torchvision 0.12 does not antialias",
        norm="ImageNet", ours="the same (F.interpolate bilinear, antialias False)", status=FIX,
        note="the fix was the loader of the released checkpoint format; the input was not affected"),
    "c2pclip": dict(
        train="not published", eval="short side 224 (Resize(224)) -> CenterCrop 224",
        interp="PIL bilinear (data.py; CLIP's own processor would be bicubic)", norm="CLIP", ours="the same"),
    "safe": dict(
        train="RandomCrop 256 (pad_if_needed) -> flip -> RandomRotation 180 -> ColorJitter -> RandomMask",
        eval="CenterCrop 256, never a resize", interp="none", norm="none ([0, 1])",
        ours="the same; images under 256 px padded centred (torchvision pads the whole deficit on both sides)"),
    "effort": dict(
        train="cv2 resize to 224 x 224 (INTER_CUBIC, square) + albumentations augmentation",
        eval="cv2 resize of the whole image to 224 x 224 (INTER_CUBIC, aspect not kept)",
        interp="OpenCV bicubic", norm="CLIP",
        ours="the same (geometry: cv2_cubic_squash, the default; short_side_crop keeps the earlier view as an axis)",
        status=FIX, note="was: short side 224 (PIL bilinear) -> centre crop 224"),
    "fconv": dict(
        train="blur (p 0.3) / JPEG (p 0.3) -> CenterCrop 224; transformed view: hflip + ColorJitter + blur",
        eval="CenterCrop 224, no resize; transformed view: hflip + ColorJitter + GaussianBlur",
        interp="none", norm="ImageNet", ours="the same (the random transformed view is not compared)",
        status=FIX, note="the fix was DINOv2's position-embedding interpolation, a model difference; the input "
                         "was not affected"),
    "lgrad": dict(
        train="gradient image (from Resize((256, 256)) -> [-1, 1]) -> RandomCrop 224 + flip",
        eval="gradient image at 256, no crop; discriminator input: Resize((256, 256)) -> Normalize(0.5, 0.5)",
        interp="PIL bilinear", norm="discriminator [-1, 1]; classifier ImageNet",
        ours="the same (the crop is applied in the model); compared: the discriminator's input"),
    "fredect": dict(
        train="port: short side 256 -> CenterCrop 224 (no random crop, no flip)", eval="the same",
        interp="PIL bilinear", norm="log-DCT standardised by training statistics (in the model)",
        ours="the same; compared: the pixels entering the DCT"),
    "lota": dict(
        train="noise x & 7 x 36 -> 64 random 32 px crops, a random one -> cv2.resize to 256",
        eval="the highest-scoring of the 64 -> cv2.resize to 256 (bilinear)",
        interp="OpenCV INTER_LINEAR (fixed point)", norm="ImageNet",
        ours="cv2.resize (INTER_LINEAR) of the patch, in the view (OpenCV is a dependency)", status=FIX,
        note="was: F.interpolate bilinear + round half up, in the model"),
    "formatonly": dict(
        train="sep-bench's own control: top-left crop of the JPEG luma", eval="the same", interp="none",
        norm="none", ours="-", note="no official code (the harness's own detector)"),
}


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.3g}"


def _cell(measured: dict | None, label: str) -> str:
    if not measured or label not in measured:
        return "not measured"
    m = measured[label]
    if "official_error" in m:
        return f"official code fails: {m['official_error']}"
    parts = []
    for key, r in m.items():
        if r.get("max_abs") is None:
            parts.append(f"{key}: shape {tuple(r['official_shape'])} vs ours {tuple(r['ours_shape'] or ())}")
        else:
            parts.append(f"{key}: max {_num(r['max_abs'])}, mean {_num(r['mean_abs'])}")
    return "; ".join(parts)


def _train_cell(tr: dict | None) -> str:
    if not tr:
        return ""
    parts = []
    for label, r in tr.items():
        if r.get("max_abs") is None:
            parts.append(f"{label} {tuple(r['official_shape'][:2])} vs ours {tuple(r['ours_shape'][:2])}")
        else:
            parts.append(f"{label} max {r['max_abs']} grey levels, mean {_num(r['mean_abs'])}")
    return "training resize before the crop: " + "; ".join(parts)


def _source(row: dict) -> str:
    off = row.get("official")
    if not off:
        return "-"
    commit = off["commit"][:12] if off.get("commit") else "index file version (see note)"
    return f"{off['repo']}@{commit}: " + ", ".join(f"`{f['path']}`" for f in off["files"])


def render(report: dict) -> str:
    photos = report["photographs"]
    lines = [
        "# Preprocessing audit: the authors' input vs ours",
        "",
        "Generated by `" + report["command"] + "` from `results/benchmarks/preprocessing_audit.json` "
        f"({report['date']}; torch {report['versions']['torch']}, torchvision {report['versions']['torchvision']}, "
        f"Pillow {report['versions']['pillow']}, OpenCV {report['versions']['opencv']}). Do not edit by hand.",
        "",
        "For each detector: the official training and evaluation geometry, the interpolation and its library, the "
        "normalisation, and this harness's evaluation view beside it (the `genimage` recipe, the official "
        "configuration). **Measured**: the max and mean absolute difference between the model input the authors' "
        "preprocessing gives (their files imported from a checkout, or their calls mirrored with the same "
        "library: benchmarks/_official_preprocessing.py) and ours, on a non-square photograph "
        f"({photos['nonsquare']['shape'][0]} x {photos['nonsquare']['shape'][1]}, {photos['nonsquare']['source']}) "
        f"and a square one ({photos['square']['source']}). Units are those of the model input (normalised values "
        "for normalised inputs). Patch detectors are compared at the same random candidate positions. The "
        "authors' code is compared at the commit and files in the last column (checkouts outside this repository).",
        "",
        "| detector | official train | official eval | interpolation (library) | normalisation | ours | "
        "measured, non-square | measured, square | status / note | compared with |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        f = row["facts"]
        status = "; ".join(x for x in (f.get("status", ""), f.get("note", ""), row.get("error", ""),
                                       _train_cell(row.get("train_resize"))) if x) or "-"
        cells = [f"`{row['detector']}`", f["train"], f["eval"], f["interp"], f["norm"], f["ours"],
                 _cell(row.get("measured"), "nonsquare"), _cell(row.get("measured"), "square"), status,
                 _source(row)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    notes = [r for r in report["rows"] if r.get("official") and r["official"].get("source_note")]
    if notes:
        lines += ["", "Sources read without a repository snapshot: " + "; ".join(
            f"{r['official']['repo']}: {r['official']['source_note']}" for r in notes) + "."]
    lines += ["", "Decoding is not compared: both sides start from the same decoded RGB array (the photographs are "
              "PNG-equivalent arrays). Official code that decodes with OpenCV (Effort, GramNet) can differ from "
              "Pillow on JPEG files by a few grey levels (different IDCT implementations)."]
    return "\n".join(lines) + "\n"
