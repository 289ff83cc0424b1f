"""tl_hub.data.images: every Pillow mode becomes correct RGB, and every bad file is named with its reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_hub.errors import DataError
from tl_hub.data.images import BadImageError, array_to_pil, check_image, is_hidden, open_image, to_rgb

PILLOW_DEFAULT_BOMB_LIMIT = int(1024 * 1024 * 1024 // 4 // 3)


def _px(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def _saved(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


# -- every mode, in memory and through real files ----------------------------------------------------
def test_grey_palette_and_bilevel_modes(tmp_path):
    assert _px(to_rgb(Image.new("L", (3, 3), 77))) == (77, 77, 77)
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert _px(open_image(_saved(palette, tmp_path / "p.png"))) == (10, 200, 30)
    bilevel = Image.new("1", (3, 3), 1)
    assert _px(open_image(_saved(bilevel, tmp_path / "one.png"))) == (255, 255, 255)
    assert _px(open_image(_saved(Image.new("1", (3, 3), 0), tmp_path / "zero.bmp"))) == (0, 0, 0)


def test_alpha_is_composited_on_white_not_garbage(tmp_path):
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.putpixel((1, 0), (0, 0, 255, 128))  # half-transparent blue -> mix with white
    out = open_image(_saved(rgba, tmp_path / "rgba.png"))
    assert _px(out, (0, 0)) == (255, 255, 255)
    r, g, b = _px(out, (1, 0))
    assert 125 <= r <= 128 and 125 <= g <= 128 and b == 255
    la = Image.new("LA", (1, 1), (0, 0))
    assert _px(open_image(_saved(la, tmp_path / "la.png"))) == (255, 255, 255)
    la_opaque = Image.new("LA", (1, 1), (40, 255))
    assert _px(to_rgb(la_opaque)) == (40, 40, 40)


def test_palette_with_transparency_key(tmp_path):
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([5, 5, 5, 9, 99, 199] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # index 0 is transparent
    path = _saved(palette, tmp_path / "pt.png", transparency=0)
    out = open_image(path)
    assert _px(out, (0, 0)) == (255, 255, 255)
    assert _px(out, (1, 0)) == (9, 99, 199)
    gif = _saved(palette, tmp_path / "pt.gif", transparency=0)
    assert _px(open_image(gif), (0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_and_tiff(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    for path in (_saved(cmyk, tmp_path / "c.tif"), _saved(cmyk, tmp_path / "c.jpg", quality=95)):
        r, g, b = _px(open_image(path), (4, 4))
        assert r > 240 and g < 15 and b < 15, (path.suffix, (r, g, b))


@pytest.mark.parametrize("value,expected", [(0, 0), (32768, 128), (65535, 255), (1000, 4)])
def test_16bit_png_is_scaled_not_clamped(tmp_path, value, expected):
    image = Image.fromarray(np.full((4, 4), value, dtype=np.uint16))
    path = _saved(image, tmp_path / f"g{value}.png")
    assert Image.open(path).mode.startswith("I")
    assert _px(open_image(path)) == (expected,) * 3


def test_16bit_big_endian_and_32bit_int(tmp_path):
    big = Image.frombytes("I;16B", (4, 4), np.full((4, 4), 32768, dtype=">u2").tobytes())
    assert _px(to_rgb(big)) == (128, 128, 128)
    as_int = Image.fromarray(np.full((4, 4), 32768, dtype=np.int32))
    assert as_int.mode == "I"
    assert _px(open_image(_saved(as_int, tmp_path / "i.tif"))) == (128, 128, 128)
    stretched = Image.fromarray(np.array([[-1000, 0], [500_000, 1_000_000]], dtype=np.int32))
    out = to_rgb(stretched)
    assert _px(out, (0, 0)) == (0, 0, 0) and _px(out, (1, 1)) == (255, 255, 255)


def test_float_images(tmp_path):
    unit = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))
    assert unit.mode == "F"
    assert _px(open_image(_saved(unit, tmp_path / "f.tif"))) == (128, 128, 128)
    byte_range = Image.fromarray(np.full((2, 2), 200.0, dtype=np.float32))
    assert _px(to_rgb(byte_range)) == (200, 200, 200)
    wide = Image.fromarray(np.array([[-3.0, 7.0]], dtype=np.float32))
    assert _px(to_rgb(wide), (0, 0)) == (0, 0, 0) and _px(to_rgb(wide), (1, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)  # left half red, right half black (stored orientation)
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _saved(image, tmp_path / "rot.jpg", exif=exif, quality=95)
    out = open_image(path)
    assert out.size == (20, 40)  # width and height swapped
    top = _px(out, (10, 2))
    bottom = _px(out, (10, 37))
    assert top[0] > 200 and bottom[0] < 50  # the red left half is now on top


# -- bad inputs are named with the reason --------------------------------------------------------------
def _png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_bad_files_are_reported_with_reasons(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image")
    (tmp_path / "trunc.png").write_bytes(_png_bytes()[:400])
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (tmp_path / "folder.png").mkdir()
    reasons = {name: check_image(tmp_path / name) for name in
               ("zero.jpg", "text.jpg", "trunc.png", "trunc.jpg", "folder.png", "missing.png")}
    assert reasons["zero.jpg"] == "zero-byte file"
    assert "not an image" in reasons["text.jpg"]
    assert "truncated" in reasons["trunc.png"]
    assert "truncated" in reasons["trunc.jpg"]
    assert "directory" in reasons["folder.png"]
    assert reasons["missing.png"] == "file not found"
    with pytest.raises(BadImageError) as info:
        open_image(tmp_path / "trunc.png")
    assert str(tmp_path / "trunc.png") in str(info.value) and isinstance(info.value, DataError)
    assert check_image(_png_bytes()) is None


def test_decompression_bomb_limit_stays_on(tmp_path, monkeypatch):
    import tl_hub.data  # noqa: F401 - importing tl_hub's data modules must not disable the limit
    import tl_hub.data.transforms  # noqa: F401

    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_BOMB_LIMIT
    path = _saved(Image.new("L", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2x limit: Pillow refuses it
    reason = check_image(path)
    assert reason is not None and reason.startswith("decompression bomb")


# -- arrays and names ---------------------------------------------------------------------------------
def test_array_to_pil_value_rules():
    assert array_to_pil(np.full((2, 2), 32768, np.uint16)).getpixel((0, 0)) == 128
    assert array_to_pil(np.full((2, 2), 0.5, np.float32)).getpixel((0, 0)) == 128
    assert array_to_pil(np.ones((2, 2), bool)).getpixel((0, 0)) == 255
    assert array_to_pil(np.full((2, 2), 7, np.int64)).getpixel((0, 0)) == 7
    chw = np.zeros((3, 5, 6), np.uint8)
    chw[0] = 255
    image = array_to_pil(chw)
    assert image.size == (6, 5) and image.getpixel((0, 0)) == (255, 0, 0)
    assert array_to_pil(np.zeros((5, 6, 4), np.uint8)).mode == "RGBA"
    with pytest.raises(DataError, match="shape"):
        array_to_pil(np.zeros((2, 3, 4, 5)))


def test_hidden_names():
    for name in (".DS_Store", ".ipynb_checkpoints", "__MACOSX", "._cat.jpg", "Thumbs.db"):
        assert is_hidden(name)
    for name in ("cat", "cat.jpg", "_underscore"):
        assert not is_hidden(name)
