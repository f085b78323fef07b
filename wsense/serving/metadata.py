"""What a photographer filters by: each photo's subfolder, size, orientation and EXIF date taken, camera and lens,
read from the file header (no decoding) when the photo is indexed, and the filters over them."""
from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from wsense.errors import WsenseError

ORIENTATIONS = ("landscape", "portrait", "square")
EXIF_IFD, MAKE, MODEL, DATETIME, ORIENTATION = 0x8769, 0x010F, 0x0110, 0x0132, 0x0112
DATETIME_ORIGINAL, LENS_MODEL = 0x9003, 0xA434


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value).strip().strip("\x00").strip() if value is not None else ""
    return value or None


def _date(value) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" as ISO 8601, or None when it is missing or malformed."""
    text = _text(value)
    try:
        return dt.datetime.strptime(text, "%Y:%m:%d %H:%M:%S").isoformat() if text else None
    except ValueError:
        return None


def photo_metadata(root: Path, path: str) -> dict:
    """folder, width, height, orientation (as shown, after the EXIF rotation), taken, camera, lens of one photo."""
    with Image.open(root / path) as image:
        width, height = image.size
        exif = image.getexif()
    if exif.get(ORIENTATION) in (5, 6, 7, 8):  # shown turned by 90 degrees
        width, height = height, width
    details = exif.get_ifd(EXIF_IFD) if exif else {}
    make, model = _text(exif.get(MAKE)), _text(exif.get(MODEL))
    camera = model if make and model and model.lower().startswith(make.lower()) else " ".join(
        part for part in (make, model) if part) or None
    return {"folder": posixpath.dirname(path), "width": width, "height": height,
            "orientation": "square" if width == height else "landscape" if width > height else "portrait",
            "taken": _date(details.get(DATETIME_ORIGINAL)) or _date(exif.get(DATETIME)),
            "camera": camera, "lens": _text(details.get(LENS_MODEL))}


def unknown_metadata(path: str) -> dict:
    """What is known of a photo whose header could not be read (or an index entry from before metadata): its
    folder. Every filter on another field leaves it out."""
    return {"folder": posixpath.dirname(path), "width": 0, "height": 0, "orientation": None, "taken": None,
            "camera": None, "lens": None}


@dataclass(frozen=True)
class MetadataFilter:
    """Photos a search may show: under `folder` (a subfolder of the catalog, "" for all), of an `orientation`,
    whose camera or lens name contains the given text (any case), taken on or between the given dates."""
    folder: str = ""
    orientation: str | None = None
    camera: str | None = None
    lens: str | None = None
    taken_from: dt.date | None = None
    taken_to: dt.date | None = None

    @classmethod
    def parse(cls, folder: str | None = None, orientation: str | None = None, camera: str | None = None,
              lens: str | None = None, taken_from: str | None = None, taken_to: str | None = None) -> "MetadataFilter":
        """From user input (CLI flags, API parameters); a bad value is a WsenseError naming it."""
        if orientation and orientation not in ORIENTATIONS:
            raise WsenseError(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {orientation!r}")
        dates = []
        for name, value in (("taken_from", taken_from), ("taken_to", taken_to)):
            try:
                dates.append(dt.date.fromisoformat(value) if value else None)
            except ValueError:
                raise WsenseError(f"{name} must be a date as YYYY-MM-DD, not {value!r}") from None
        folder = posixpath.normpath(folder.strip("/")) if folder and folder.strip("/") else ""
        if folder.startswith(".."):
            raise WsenseError(f"folder must be a subfolder of the catalog, not {folder!r}")
        return cls(folder if folder != "." else "", orientation or None, (camera or "").strip().lower() or None,
                   (lens or "").strip().lower() or None, *dates)

    def __bool__(self) -> bool:
        return self != MetadataFilter()

    def allows(self, meta: dict) -> bool:
        """Whether a photo's metadata passes; a photo without the field a filter asks about does not."""
        folder = meta.get("folder", "")
        if self.folder and not (folder == self.folder or folder.startswith(self.folder + "/")):
            return False
        if self.orientation and meta.get("orientation") != self.orientation:
            return False
        for wanted, have in ((self.camera, meta.get("camera")), (self.lens, meta.get("lens"))):
            if wanted and (not have or wanted not in have.lower()):
                return False
        if self.taken_from or self.taken_to:
            if not meta.get("taken"):
                return False
            taken = dt.date.fromisoformat(meta["taken"][:10])
            if (self.taken_from and taken < self.taken_from) or (self.taken_to and taken > self.taken_to):
                return False
        return True

    def to_dict(self) -> dict:
        values = {"folder": self.folder or None, "orientation": self.orientation, "camera": self.camera,
                  "lens": self.lens, "taken_from": self.taken_from and self.taken_from.isoformat(),
                  "taken_to": self.taken_to and self.taken_to.isoformat()}
        return {name: value for name, value in values.items() if value}


FILTER_NAMES = ("folder", "orientation", "camera", "lens", "taken_from", "taken_to")
