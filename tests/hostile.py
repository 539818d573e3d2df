"""A hostile-image corpus, generated on the fly (no committed binaries), with the expected outcome of each file.

`write_corpus(folder)` writes every entry into one folder and returns the entries; each entry says what the
harness must do with it:

- ``processed``: decoded to RGB uint8 by the documented rule (`rule`), then given to the detector's view;
- ``skipped``: refused by `decode_image` with the skip reason `reason` (counted, logged, never fatal);
- ``not_listed``: never listed by the dataset readers (links that dangle, loop or leave the root).

The same table is in docs/robustness.md.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

__all__ = ["Hostile", "write_corpus", "png_bytes", "deny_read", "CORPUS_NAMES"]


@dataclass(frozen=True)
class Hostile:
    name: str  # file name in the corpus folder
    what: str  # human description (docs table)
    outcome: str  # processed | skipped | not_listed
    detail: str  # the rule (processed) or the skip reason (skipped) or why it is not listed
    predict: str = ""  # outcome of `sep-bench predict` on the folder when it differs: "ok" or a reason

    @property
    def reason(self) -> str | None:
        return self.detail if self.outcome == "skipped" else None


# ---- PNG written by hand: 16-bit RGB (PIL cannot write it) and a header-only decompression bomb -----------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, bit_depth: int, color_type: int, raw: bytes | None) -> bytes:
    """A PNG file; `raw` is the filtered scanline data (None: a tiny IDAT that is never reached)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(raw if raw is not None else b"\x00")
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _rgb16_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    row = b"\x00" + struct.pack(">HHH", *rgb) * width  # filter type 0, big-endian 16-bit samples
    return png_bytes(width, height, bit_depth=16, color_type=2, raw=row * height)


#: A PNG whose IHDR claims 30000 x 30000 RGB (2.7 GB decoded) in a file of about 60 bytes.
BOMB_SIDE = 30000
GRAY16 = 0xABCD
RGB16 = (0x1234, 0xABCD, 0xFF00)


def _noise(size: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _exif_rotated_jpeg() -> bytes:
    """40 wide x 20 high, left half red, right half blue, EXIF orientation 6 (shown rotated 90 degrees clockwise)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **kw)


def _palette() -> bytes:
    return _save(Image.new("RGB", (24, 24), (200, 100, 50)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")


def _palette_transparent() -> bytes:
    img = Image.new("RGB", (24, 24), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    return _save(img, "PNG", transparency=0)


def _files() -> list[tuple[Hostile, bytes]]:
    jpeg = _save(_noise(64), "JPEG", quality=90)
    png = _save(_noise(64, 1), "PNG")
    out = [
        (Hostile("truncated.jpg", "truncated JPEG (60% of the file)", "skipped", "corrupt"), jpeg[: len(jpeg) * 6 // 10]),
        (Hostile("truncated.png", "truncated PNG (half of the file)", "skipped", "corrupt"), png[: len(png) // 2]),
        (Hostile("empty.jpg", "zero-byte file", "skipped", "not_an_image"), b""),
        (Hostile("text.jpg", "text file named .jpg", "skipped", "not_an_image"), b"this is not a jpeg\n" * 20),
        (
            Hostile("bomb.png", f"PNG header claiming {BOMB_SIDE}x{BOMB_SIDE} (60-byte file; decompression bomb)",
                    "skipped", "too_large"),
            png_bytes(BOMB_SIDE, BOMB_SIDE, bit_depth=8, color_type=2, raw=None),
        ),
        (Hostile("cmyk.jpg", "CMYK JPEG", "processed", "converted to RGB (PIL convert)"),
         _save(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG", quality=95)),
        (Hostile("gray16.png", "16-bit grayscale PNG", "processed", "high byte of each 16-bit sample, gray to RGB"),
         _save(Image.fromarray(np.full((24, 24), GRAY16, np.uint16)), "PNG")),
        (Hostile("rgb16.png", "16-bit RGB PNG (48 bits per pixel)", "processed", "high byte of each 16-bit sample"),
         _rgb16_png(24, 24, RGB16)),
        (Hostile("rgba.png", "RGBA PNG, fully transparent", "processed", "alpha channel dropped (colour kept)"),
         _save(Image.new("RGBA", (24, 24), (10, 20, 30, 0)), "PNG")),
        (Hostile("palette.png", "palette (P) PNG", "processed", "palette expanded to RGB"), _palette()),
        (Hostile("palette_trns.png", "palette PNG with a transparent index", "processed",
                 "palette expanded to RGB, transparency dropped"), _palette_transparent()),
        (Hostile("la.png", "grayscale + alpha (LA) PNG", "processed", "gray to RGB, alpha dropped"),
         _save(Image.new("LA", (24, 24), (77, 0)), "PNG")),
        (Hostile("tiny_1x1.png", "1x1 image", "processed",
                 "decoded as is; the view pads (centre crop) or resizes it up (train resize, SEP/SSP small-image rule)"),
         _save(Image.new("RGB", (1, 1), (250, 250, 250)), "PNG")),
        (Hostile("small_20x20.jpg", "20x20 image (below the 32 px patch and the 224 crop)", "processed",
                 "as tiny_1x1.png"), _save(_noise(20, 2), "JPEG", quality=90)),
        (Hostile("exif_rotated.jpg", "JPEG with EXIF orientation 6", "processed",
                 "EXIF orientation applied (upright, as a viewer shows it)"), _exif_rotated_jpeg()),
        (Hostile("animated.gif", "animated GIF (3 frames)", "processed", "first frame"), _animated("GIF")),
    ]
    if features.check("webp"):
        out.append((Hostile("animated.webp", "animated WebP (3 frames)", "processed", "first frame"), _animated("WEBP")))
    return out


CORPUS_NAMES = [h.name for h, _ in _files()]


def write_corpus(folder: Path, *, outside: Path | None = None) -> list[Hostile]:
    """Write the corpus into `folder`; links that leave it point into `outside` (a sibling folder by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for h, data in _files():
        (folder / h.name).write_bytes(data)
        entries.append(h)
    # not regular files / links
    os.mkfifo(folder / "fifo.png")
    entries.append(Hostile("fifo.png", "named pipe (FIFO) named .png", "skipped", "not_a_file"))
    outside = outside or folder.parent / f"{folder.name}_outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.png").write_bytes(_save(_noise(24, 3), "PNG"))
    os.symlink(outside / "secret.png", folder / "escape.png")
    entries.append(Hostile("escape.png", "symbolic link to an image outside the dataset root", "not_listed",
                           "link leaves the root: ignored with a warning", predict="ok"))
    os.symlink("loop.png", folder / "loop.png")
    entries.append(Hostile("loop.png", "symbolic link to itself (link loop)", "not_listed",
                           "link loop: ignored with a warning", predict="broken_link"))
    os.symlink("no_such_file.png", folder / "dangling.png")
    entries.append(Hostile("dangling.png", "dangling symbolic link", "not_listed",
                           "dangling link: ignored with a warning", predict="broken_link"))
    os.symlink(".", folder / "dirloop")
    entries.append(Hostile("dirloop", "folder link to its own folder (folder loop)", "not_listed",
                           "linked folders are never walked"))
    os.symlink("cmyk.jpg", folder / "inside_link.jpg")
    entries.append(Hostile("inside_link.jpg", "symbolic link to an image inside the root", "processed",
                           "followed (target inside the root)"))
    (folder / "noperm.png").write_bytes(_save(_noise(24, 4), "PNG"))
    entries.append(Hostile("noperm.png", "file without read permission", "skipped", "unreadable"))
    return entries


def deny_read(path: Path, monkeypatch) -> str:
    """Make `path` unreadable for this process: chmod 000, or, where that does not stop reads (root), make
    `os.open` raise PermissionError for it as the kernel would. Returns "chmod" or "monkeypatch"."""
    os.chmod(path, 0)
    try:
        with open(path, "rb"):
            readable = True
    except PermissionError:
        readable = False
    if not readable:
        return "chmod"
    real_open = os.open
    target = os.path.abspath(path)

    def guarded_open(p, flags, *args, **kwargs):
        if isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)) == target:
            raise PermissionError(13, "Permission denied", os.fsdecode(p))
        return real_open(p, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    return "monkeypatch"
