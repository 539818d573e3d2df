"""Robust image decoding: any readable file becomes an RGB uint8 array (H, W, 3), or a `DecodeError` with a reason.

Rules (documented so that every detector sees the same pixels):
- EXIF orientation is applied (the image is shown upright, as a viewer shows it).
- Animated images (GIF, WebP, APNG): the first frame.
- Grayscale, palette, CMYK, LA/RGBA: converted to RGB; the alpha channel is dropped (as PIL's ``convert("RGB")``,
  which the official SEP/NPR/UnivFD loaders use).
- 16-bit images are scaled to 8 bits by taking the high byte (PIL's own conversion would clip them to 255).
- Images with more than `max_pixels` pixels (header check, before decoding) are refused as decompression bombs.
- Truncated files are refused (PIL's LOAD_TRUNCATED_IMAGES stays off), so a half-written file never becomes
  a half-grey training image.
- Only regular files are read: a FIFO, socket, device or directory with an image suffix is refused
  (``not_a_file``) without blocking (it is opened with O_NONBLOCK and checked with fstat before any read); a
  dangling link or a link loop is ``broken_link``; a file the process may not read is ``unreadable``.

Skip reasons (`DecodeError.reason`): ``missing``, ``broken_link``, ``not_a_file``, ``unreadable``,
``not_an_image`` (empty file, text, unknown format), ``too_large`` (decompression-bomb header), ``empty``
(0-pixel header), ``corrupt`` (truncated or damaged data).
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DecodeError", "decode_image", "DEFAULT_MAX_PIXELS"]

DEFAULT_MAX_PIXELS = 89_478_485


class DecodeError(Exception):
    """An image that cannot be used; `reason` is a short category for skip counts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.int64)
        # I;16 is 16-bit by definition; plain "I" (32-bit) only when its values exceed 8 bits.
        if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr >> 8
        return np.repeat(arr.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        arr = np.clip(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _open_regular(path: str | Path):
    """A binary file object for `path` if it is a regular file; never blocks (FIFOs, devices) or reads a directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.ENOENT and os.path.islink(path)):
            raise DecodeError("broken_link", f"{path}: dangling symbolic link or link loop") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("not_a_file", f"{path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def decode_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `path` into a contiguous (H, W, 3) uint8 RGB array, or raise DecodeError."""
    try:
        with _open_regular(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `max_pixels` decides
            try:
                img = Image.open(fh)
            except Image.DecompressionBombError as err:  # PIL's hard limit (2x its default)
                raise DecodeError("too_large", str(err)) from None
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError("too_large", f"{w}x{h} exceeds max_image_pixels={max_pixels}")
            if w < 1 or h < 1:
                raise DecodeError("empty", f"{w}x{h}")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            arr = _to_rgb(img)
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("missing", str(path)) from None
    except PermissionError:
        raise DecodeError("unreadable", "permission denied") from None
    except IsADirectoryError:
        raise DecodeError("not_a_file", str(path)) from None
    except UnidentifiedImageError:
        raise DecodeError("not_an_image", "unrecognised format") from None
    except MemoryError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated / corrupt data
        raise DecodeError("corrupt", str(err)) from None
    except Exception as err:  # any other decoder failure on hostile data (e.g. malformed EXIF): skip, with its type
        raise DecodeError("corrupt", f"{type(err).__name__}: {err}") from None
    return np.ascontiguousarray(arr)
