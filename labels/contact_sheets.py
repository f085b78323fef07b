"""Contact sheets for labelling photos by looking: 4 x 4 photos a sheet, each with its number and file name.

    python labels/contact_sheets.py DATA_DIR OUT_DIR

writes OUT_DIR/sheet_NNN.png and OUT_DIR/sheet_NNN.txt (position, split, file name), test photos first, then the
training photos, each in name order. Only Pillow is needed. labels/README.md says how the sheets were read.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLUMNS, ROWS, TILE, CAPTION = 4, 4, 380, 26


def photos(data_dir: Path) -> list[tuple[str, Path]]:
    return [(split, path) for split in ("test", "train")
            for path in sorted((data_dir / f"{split}_images").glob("*.jpg"))]


def sheet(items: list[tuple[str, Path]], font) -> Image.Image:
    canvas = Image.new("RGB", (COLUMNS * TILE, ROWS * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    for position, (split, path) in enumerate(items):
        x, y = (position % COLUMNS) * TILE, (position // COLUMNS) * (TILE + CAPTION)
        with Image.open(path) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((TILE - 6, TILE - 6))
            canvas.paste(photo, (x + (TILE - photo.width) // 2, y + (TILE - photo.height) // 2))
        draw.text((x + 4, y + TILE), f"{position + 1}  {path.name}", fill="black", font=font)
    return canvas


def main(data_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    font = ImageFont.truetype("DejaVuSans.ttf", 18)
    items = photos(Path(data_dir))
    per_sheet = COLUMNS * ROWS
    for number, start in enumerate(range(0, len(items), per_sheet), 1):
        chunk = items[start:start + per_sheet]
        sheet(chunk, font).save(out / f"sheet_{number:03d}.png")
        (out / f"sheet_{number:03d}.txt").write_text(
            "".join(f"{i + 1}\t{split}\t{path.name}\n" for i, (split, path) in enumerate(chunk)))
    print(f"{len(items)} photos on {number} sheets in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
