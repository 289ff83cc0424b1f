"""Turn any image a user has into correct 8-bit RGB, and say exactly why a bad one is bad.

Rules (one place, used by every source and by the transforms):

* EXIF orientation is applied first (a phone photo stored sideways is trained upright, the way
  `transformers.pipeline` and every image viewer show it).
* Alpha (``LA``, ``RGBA``, ``PA``, ``P`` with a transparency key) is composited onto a **white**
  background: transparent pixels become white, not the garbage colour stored under them. White is
  how transparent product photos, icons and scans are displayed on a page.
* 16-bit images (``I;16``, ``I;16B``, ``I;16L``, ...) are scaled by their full range,
  ``v * 255 / 65535`` (so 16-bit mid-grey 32768 becomes 128), never clamped at 255.
  32-bit ``I`` images with values inside 0..65535 are treated as 16-bit data (that is how Pillow
  opens 16-bit PNG/TIFF files); outside that range they are stretched min..max to 0..255.
* Float ``F`` images: values in [0, 1] are scaled by 255, values in [0, 255] kept, anything else
  stretched min..max.
* ``1`` (bilevel), ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` use Pillow's conversions.
* Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) stays on: a bomb is reported
  as a bad image with the reason, never decoded.

Example:
    >>> from PIL import Image
    >>> grey16 = Image.new("I;16", (4, 4), 32768)
    >>> to_rgb(grey16).getpixel((0, 0))
    (128, 128, 128)
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from tl_hub.errors import DataError

ImageLike = Union[str, os.PathLike, bytes, dict, Image.Image, np.ndarray]

#: Names that are never images or classes: OS/editor/archive droppings.
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "__pycache__"})


class BadImageError(DataError):
    """An image file/row that cannot be decoded; ``.reason`` is a short human-readable cause.

    Example:
        >>> err = BadImageError("cat/1.jpg", "truncated image (image file is truncated)")
        >>> err.reason
        'truncated image (image file is truncated)'
    """

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}; fix or remove this image (or pass on_bad_image='skip')")
        self.where = where
        self.reason = reason


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions Pillow can open (``.jpg``, ``.png``, ``.webp``, ``.tif``, ...).

    Example:
        >>> ".png" in image_extensions()
        True
    """
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def is_hidden(name: str) -> bool:
    """True for names that must never become a class or an image (``.DS_Store``, ``__MACOSX``, ...).

    Example:
        >>> is_hidden(".ipynb_checkpoints"), is_hidden("__MACOSX"), is_hidden("cat")
        (True, True, False)
    """
    return name.startswith(".") or name.startswith("._") or name in IGNORED_NAMES


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


def _grey_array_to_rgb(values: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64) + (0.0 if hi <= 0 else 255.0 if hi > 255 else hi)
    return (values.astype(np.float64) - lo) * (255.0 / (hi - lo))


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of ``image`` with EXIF orientation applied (rules: module docstring).

    Example:
        >>> from PIL import Image
        >>> to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):  # malformed EXIF: keep the image
        pass
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        return _composite(image.convert("RGBA"))
    if mode == "P":
        if "transparency" in image.info or image.has_transparency_data:
            return _composite(image.convert("RGBA"))
        return image.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            return _grey_array_to_rgb(_stretch(values))
        return _grey_array_to_rgb(values * (255.0 / 65535.0))
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(values.min()), float(values.max())
        if lo >= 0.0 and hi <= 1.0:
            return _grey_array_to_rgb(values * 255.0)
        if lo >= 0.0 and hi <= 255.0:
            return _grey_array_to_rgb(values)
        return _grey_array_to_rgb(_stretch(values))
    if mode == "LAB":
        srgb = ImageCms.createProfile("sRGB")
        lab = ImageCms.createProfile("LAB")
        return ImageCms.applyTransform(image, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    return image.convert("RGB")


def array_to_pil(array: Any) -> Image.Image:
    """Convert a numpy/torch image array (HW, HWC or CHW; uint8, uint16, bool, int or float) to PIL.

    Value rules: uint8 as is; uint16 by its full range; bool as 0/255; other integers as 8-bit when
    inside 0..255, else as 16-bit when inside 0..65535, else stretched; floats as in ``to_rgb`` ``F``.

    Example:
        >>> import numpy as np
        >>> array_to_pil(np.zeros((3, 8, 8), dtype=np.float32)).size
        (8, 8)
    """
    arr = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise DataError(
            f"image array: got shape {tuple(arr.shape)}; expected (H, W), (H, W, 1|3|4) or (1|3|4, H, W)"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = np.rint(arr.astype(np.float64) * (255.0 / 65535.0))
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:
            pass
        elif lo >= 0 and hi <= 65535:
            arr = np.rint(arr.astype(np.float64) * (255.0 / 65535.0))
        else:
            arr = _stretch(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            arr = _stretch(arr)
    arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[-1] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an 8-bit image (fast, lossless; what in-memory sources are stored as).

    Example:
        >>> from PIL import Image
        >>> encode_png(Image.new("RGB", (2, 2)))[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _describe(where: str, exc: BaseException) -> BadImageError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError):
        reason = f"decompression bomb refused by Pillow's MAX_IMAGE_PIXELS limit ({text})"
    elif isinstance(exc, UnidentifiedImageError):
        reason = "not an image Pillow can identify (corrupt, or not an image file)"
    elif isinstance(exc, FileNotFoundError):
        reason = "file not found"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory, not an image file"
    elif "truncated" in text.lower():
        reason = f"truncated image ({text})"
    else:
        reason = f"corrupt image ({type(exc).__name__}: {text})"
    return BadImageError(where, reason)


def _open(source: ImageLike, where: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray) or hasattr(source, "detach"):
        return array_to_pil(source)
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        if data is not None:
            source = data
        elif path:
            source = path
        else:
            raise BadImageError(where, "row has neither image bytes nor a path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadImageError(where, "zero-byte image data")
        return Image.open(io.BytesIO(bytes(source)))
    text = os.fspath(source)
    if ("::" in text or "://" in text) and not Path(text).exists():
        # a datasets-style chained/remote path (e.g. "zip://img.jpg::/cache/archive.zip"): let datasets open it
        from datasets import Image as ImageFeature

        return ImageFeature().decode_example({"path": text, "bytes": None})
    path = Path(text)
    if path.is_file() and path.stat().st_size == 0:
        raise BadImageError(where, "zero-byte file")
    return Image.open(path)


def open_image(source: ImageLike, *, where: str | None = None, draft: tuple[int, int] | None = None) -> Image.Image:
    """Fully decode ``source`` (path, bytes, ``{"bytes","path"}`` row, PIL image or array) to RGB.

    Raises ``BadImageError`` (a ``DataError``) with the reason for zero-byte, missing, truncated,
    corrupt, non-image and decompression-bomb inputs. ``draft=(w, h)`` lets JPEG decode at a reduced
    scale no smaller than that (used only for validation, never for training pixels).

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("L", (3, 2), 7).save(buf, format="PNG")
        >>> open_image(buf.getvalue()).mode, open_image(buf.getvalue()).size
        ('RGB', (3, 2))
    """
    where = where or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(source, where)
            if draft is not None and getattr(image, "format", None) == "JPEG":
                image.draft("RGB", draft)
            image.load()
            return to_rgb(image)
    except BadImageError:
        raise
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError, Image.DecompressionBombError) as exc:
        raise _describe(where, exc) from exc


def check_image(source: ImageLike, *, where: str | None = None) -> str | None:
    """Decode ``source`` once (JPEG at reduced scale) and return ``None`` if fine, else the reason.

    Example:
        >>> check_image(b"not an image")
        'not an image Pillow can identify (corrupt, or not an image file)'
    """
    try:
        open_image(source, where=where, draft=(64, 64))
    except BadImageError as err:
        return err.reason
    return None
