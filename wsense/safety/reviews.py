"""Verdicts people made by looking at catalog photos (`wsense review`), which overrule the image check in the legal
filter: a photo reviewed as showing no child is shown even where the check keeps it out, one reviewed as showing a
child is kept out even where the check lets it through. The check is right about 95% of child photos and hides
adults' photos too; a person's look is how an operator puts either mistake right.

Reviews are kept by the photo's content (sha256), so they follow a photo that is renamed or moved and lapse when
its pixels change. The file is a log: a new review of a photo is a new row, the latest one counts, and nothing is
ever rewritten away."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from wsense.errors import WsenseError
from wsense.io import atomic_write_text

VERDICTS = ("child", "no_child")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Review:
    sha256: str  # the photo file's content hash
    verdict: str  # one of VERDICTS
    reviewer: str
    reviewed_at: str  # ISO 8601, UTC
    photo: str  # the photo's path when it was reviewed (for people reading the file; the hash is what counts)
    note: str = ""

    @property
    def shows_child(self) -> bool:
        return self.verdict == "child"

    def reason(self) -> str:
        what = "a child" if self.shows_child else "no child"
        return f"reviewed by {self.reviewer} on {self.reviewed_at[:10]}: {what}"


COLUMNS = tuple(f.name for f in fields(Review))


def read_reviews(path: str | Path | None) -> dict[str, Review]:
    """The latest review of each photo, by sha256; none where `path` is None or not there yet."""
    if path is None or not Path(path).is_file():
        return {}
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise WsenseError(f"{path}: not a reviews file: no column {', '.join(missing)} "
                                  f"(expected {','.join(COLUMNS)})")
            latest: dict[str, Review] = {}
            for line, row in enumerate(reader, start=2):
                review = Review(*(row[c] or "" for c in COLUMNS))
                if not _SHA256.fullmatch(review.sha256):
                    raise WsenseError(f"{path}:{line}: sha256 must be 64 hex digits, got {review.sha256!r}")
                if review.verdict not in VERDICTS:
                    raise WsenseError(f"{path}:{line}: verdict must be one of {', '.join(VERDICTS)}, got "
                                      f"{review.verdict!r}")
                if not review.reviewer.strip():
                    raise WsenseError(f"{path}:{line}: a review names its reviewer")
                latest[review.sha256] = review
    except UnicodeDecodeError:
        raise WsenseError(f"{path}: not a reviews file (not UTF-8 text)") from None
    except csv.Error as exc:
        raise WsenseError(f"{path}: cannot parse the reviews CSV ({exc})") from None
    return latest


def new_reviews(photos: Sequence[tuple[str, str]], verdict: str, reviewer: str, note: str = "") -> list[Review]:
    """Reviews of (path, sha256) photos made now."""
    if verdict not in VERDICTS:
        raise WsenseError(f"a review's verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    if not reviewer.strip():
        raise WsenseError("a review names its reviewer (--reviewer)")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [Review(sha256, verdict, reviewer.strip(), now, str(path), note) for path, sha256 in photos]


def record_reviews(path: str | Path, reviews: Sequence[Review]) -> None:
    """Add reviews to the file (made if missing), atomically: a crash leaves it as it was or with all of them. Two
    reviewers recording at once both keep their rows (a lock file beside it: `<file>.lock`)."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        read_reviews(path)  # a damaged file is named, not appended to
        before = path.read_text(encoding="utf-8") if path.is_file() else ""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if not before:
            writer.writerow(COLUMNS)
        elif not before.endswith("\n"):
            out.write("\n")
        writer.writerows(astuple(review) for review in reviews)
        atomic_write_text(path, before + out.getvalue())
