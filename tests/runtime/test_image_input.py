"""image_input.open_image: the one way a picture comes in, from a file (lcm-run, the API, batch rows)
or from an upload's bytes (the server)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcm_runtime.errors import InputError
from lcm_runtime.image_input import open_image

ROTATED_90 = 6  # EXIF orientation: the stored pixels must be turned 90 degrees clockwise to stand upright


def sideways_jpeg() -> bytes:
    """A 40x20 picture stored as 20x40 pixels with orientation 6, as phones write portrait photos."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, :20] = 255  # left half white
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 20 wide, 40 tall
    exif = Image.Exif()
    exif[0x0112] = ROTATED_90
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("as_file", [True, False], ids=["file", "upload"])
def test_a_picture_comes_in_upright_by_its_exif_orientation(tmp_path: Path, as_file: bool) -> None:
    # diffusers' load_image turns a picture by its EXIF orientation: a phone photo is edited as it is seen.
    data = sideways_jpeg()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    picture = open_image(path if as_file else data, "image")
    assert picture.size == (40, 20)
    pixels = np.asarray(picture.convert("L"), np.int16)
    assert pixels[:, :20].mean() > 200 and pixels[:, 20:].mean() < 50  # white on the left, as it was drawn


def test_an_upload_over_the_pixel_cap_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, format="PNG")
    with pytest.raises(InputError, match=r"^image is 300x200, over 50000 pixels; resize it$"):
        open_image(buffer.getvalue(), "image", max_pixels=50_000)
    assert open_image(buffer.getvalue(), "image", max_pixels=60_000).size == (300, 200)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^mask is empty; pass a PNG, JPEG or WebP image$"),
        (b"not a picture", r"^mask is not a readable image \(not a picture format Pillow reads\); pass a PNG"),
    ],
    ids=["empty", "not a picture"],
)
def test_bad_uploads_get_one_line_naming_the_argument(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as error:
        open_image(data, "mask")
    assert error.value.argument == "mask" and "\n" not in str(error.value) and "0x" not in str(error.value)


def test_bad_files_name_their_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist or is not a file"):
        open_image(tmp_path / "missing.png", "image")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match=r"^image: cannot read .*text\.png as an image \("):
        open_image(tmp_path / "text.png", "image")
