"""Writes the image files in tests/bad_inputs/fixtures that the Rust `image` crate cannot
write itself: a CMYK JPEG and a JPEG stored sideways with an EXIF orientation tag.

Run once with the reference venv (scripts/setup-reference.sh): .venv/bin/python scripts/make-fixtures.py
The outputs are committed; the tests do not need Python.
"""

from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "bad_inputs" / "fixtures"
OUT.mkdir(parents=True, exist_ok=True)

# CMYK: one flat colour whose RGB value the test knows.
Image.new("RGB", (16, 16), (200, 100, 50)).convert("CMYK").save(OUT / "cmyk.jpg", quality=95)

# Stored 64 wide × 32 high, left half red, right half blue, tagged orientation 6 ("rotate 90°
# clockwise to display"). Shown upright it is 32 wide × 64 high: red on top, blue below.
stored = Image.new("RGB", (64, 32), (0, 0, 255))
stored.paste((255, 0, 0), (0, 0, 32, 32))
exif = Image.Exif()
exif[0x0112] = 6
stored.save(OUT / "exif-rotated.jpg", quality=95, exif=exif.tobytes())
