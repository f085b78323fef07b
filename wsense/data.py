"""The With Sense data set: five tables and two image folders, read with their real quirks and validated.

Every problem is reported as one line naming the file, the row (1-based line number in the file) and
what is wrong. Row numbers count the header line where the file has one.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsense.errors import WsenseError

if TYPE_CHECKING:
    # pandas (75 MB, 0.4 s to import) only where a table is read: a server over its index never needs it
    import pandas as pd

TRAIN_DATASET = "train_dataset.csv"
EXPERT_ANNOTATIONS = "ExpertAnnotations.tsv"
CROWD_ANNOTATIONS = "CrowdAnnotations.tsv"
TEST_QUERIES = "test_queries.csv"
TEST_IMAGES = "test_images.csv"
TRAIN_IMAGE_DIR = "train_images"
TEST_IMAGE_DIR = "test_images"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# A query id names the caption's own image and the caption's number: "1056338697_4f7d7ce270.jpg#2".
QUERY_ID = re.compile(r"^(?P<image>[^#/\\]+\.(?:jpg|jpeg|png|webp))#(?P<n>\d+)$", re.IGNORECASE)


def caption_image(query_id: str) -> str:
    """The image a caption was written for: the prefix of its query id."""
    return query_id.split("#", 1)[0]


def _read_table(path: Path, *, sep: str, names: list[str], header: bool, index_column: bool = False) -> pd.DataFrame:
    """Read a delimited table as strings, with each row's 1-based line number in the file in column `_line`.

    Blank lines are skipped; any other line must have exactly as many fields as the header (or `names`).
    """
    import pandas as pd

    columns, rows, lines = _read_rows(path, sep=sep, names=names, header=header, index_column=index_column)
    frame = pd.DataFrame(rows, columns=columns)[names]
    for column in names:
        empty = frame[column].str.strip() == ""
        if empty.any():
            raise WsenseError(f"{path}: row {lines[int(np.flatnonzero(empty.to_numpy())[0])]}: "
                              f"column '{column}' is empty or missing")
    frame["_line"] = lines
    return frame


def _read_rows(path: Path, *, sep: str, names: list[str], header: bool, index_column: bool = False
               ) -> tuple[list[str], list[list[str]], list[int]]:
    """A delimited table's columns, its rows of strings, and each row's line number (see _read_table)."""
    if not path.is_file():
        raise WsenseError(f"{path}: file not found")
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=sep, quotechar='"', strict=True)
            columns = names
            if header:
                head = next(reader, None)
                if head is None:
                    raise WsenseError(f"{path}: file is empty")
                columns = [c.strip() for c in (head[1:] if index_column else head)]
                missing = [name for name in names if name not in columns]
                if missing:
                    raise WsenseError(
                        f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)})"
                    )
            for fields in reader:
                # A blank or whitespace-only line is skipped; a quoted empty field ("") is an empty cell.
                if not fields or (len(fields) == 1 and fields[0] != "" and not fields[0].strip()):
                    continue
                if index_column:
                    fields = fields[1:]
                if len(fields) != len(columns):
                    raise WsenseError(
                        f"{path}: row {reader.line_num}: expected {len(columns) + index_column} fields "
                        f"separated by '{sep}', found {len(fields) + index_column}"
                    )
                rows.append(fields)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise WsenseError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise WsenseError(f"{path}: cannot parse table ({exc})") from None
    if not rows:
        raise WsenseError(f"{path}: file is empty" if not header else f"{path}: table has no data rows")
    return columns, rows, lines


def _fail_at(path: Path, frame: pd.DataFrame, bad: pd.Series, message: str) -> None:
    if bad.any():
        position = int(np.flatnonzero(np.asarray(bad))[0])
        row = frame.iloc[position]
        values = {k: v for k, v in row.items() if k != "_line"}
        raise WsenseError(f"{path}: row {row['_line']}: {message} (row: {values})")


def _check_unique_pairs(path: Path, frame: pd.DataFrame) -> None:
    duplicated = frame.duplicated(["image", "query_id"])
    if duplicated.any():
        position = int(np.flatnonzero(duplicated.to_numpy())[0])
        first = frame[(frame["image"] == frame["image"].iloc[position])
                      & (frame["query_id"] == frame["query_id"].iloc[position])]["_line"].iloc[0]
        _fail_at(path, frame, duplicated, f"duplicate of the (image, query_id) pair at row {first}")


def _check_query_ids(path: Path, frame: pd.DataFrame) -> None:
    _fail_at(path, frame, ~frame["query_id"].str.match(QUERY_ID), "query_id is not of the form '<image>#<n>'")


def _numeric(path: Path, frame: pd.DataFrame, column: str, low: float, high: float) -> pd.Series:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    _fail_at(path, frame, values.isna(), f"column '{column}' is not a number")
    _fail_at(path, frame, np.isinf(values), f"column '{column}' is not a finite number")
    _fail_at(path, frame, (values < low) | (values > high), f"column '{column}' is outside [{low:g}, {high:g}]")
    return values


def read_train_dataset(path: Path) -> pd.DataFrame:
    """train_dataset.csv: image, query_id, query_text (comma CSV, quoted captions)."""
    frame = _read_table(path, sep=",", names=["image", "query_id", "query_text"], header=True)
    _check_query_ids(path, frame)
    _check_unique_pairs(path, frame)
    first_text = frame.groupby("query_id")["query_text"].transform("first")
    _fail_at(path, frame, frame["query_text"] != first_text, "query_id has a different text on an earlier row")
    return frame


def read_expert_annotations(path: Path) -> pd.DataFrame:
    """ExpertAnnotations.tsv (no header): image, query_id, expert1..3 with scores 1-4."""
    frame = _read_table(path, sep="\t", names=["image", "query_id", "expert1", "expert2", "expert3"], header=False)
    _check_query_ids(path, frame)
    for column in ("expert1", "expert2", "expert3"):
        values = _numeric(path, frame, column, 1, 4)
        _fail_at(path, frame, values != values.round(), f"column '{column}' is not a whole score 1-4")
        frame[column] = values.astype(int)
    _check_unique_pairs(path, frame)
    return frame


def read_crowd_annotations(path: Path) -> pd.DataFrame:
    """CrowdAnnotations.tsv (no header): image, query_id, share of "yes", number of yes, number of no."""
    frame = _read_table(path, sep="\t", names=["image", "query_id", "crowd_share", "n_yes", "n_no"], header=False)
    _check_query_ids(path, frame)
    frame["crowd_share"] = _numeric(path, frame, "crowd_share", 0, 1)
    for column in ("n_yes", "n_no"):
        values = _numeric(path, frame, column, 0, np.inf)
        _fail_at(path, frame, values != values.round(), f"column '{column}' is not a whole count")
        frame[column] = values.astype(int)
    _check_unique_pairs(path, frame)
    return frame


def read_test_queries(path: Path) -> pd.DataFrame:
    """test_queries.csv: '|'-separated, header '|query_id|query_text|image' with an unnamed index column."""
    frame = _read_table(path, sep="|", names=["query_id", "query_text", "image"], header=True, index_column=True)
    _check_query_ids(path, frame)
    return frame


def demo_catalog(root: str | Path) -> tuple[Path, list[tuple[str, str]]]:
    """The demo catalog: the test photos' folder, and their captions as (image, text) descriptions for the legal
    filter; read without pandas or the other tables, for a server's start."""
    root = data_root(root)
    columns, rows, _ = _read_rows(root / TEST_QUERIES, sep="|", names=["query_id", "query_text", "image"],
                                  header=True, index_column=True)
    image, text = columns.index("image"), columns.index("query_text")
    return root / TEST_IMAGE_DIR, [(row[image], row[text]) for row in rows]


def read_test_images(path: Path) -> pd.DataFrame:
    """test_images.csv: one column 'image'."""
    return _read_table(path, sep=",", names=["image"], header=True)


def validate_image_file(path: Path, *, decode: bool = False) -> None:
    """Raise a one-line error when an image is missing or not a readable picture."""
    if not path.is_file():
        raise WsenseError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
            else:
                image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise WsenseError(f"{path}: not a readable image ({exc})") from None


def read_image_file(path: Path) -> bytes:
    """A photo file's bytes, with a one-line error naming the file when it is missing or cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise WsenseError(f"{path}: image file not found") from None
    except OSError as exc:
        raise WsenseError(f"{path}: not a readable image ({exc})") from None


def load_image(path: Path, data: bytes | None = None, *, shorter_side: int = 0, longer_side: int = 0
               ) -> Image.Image:
    """Decode an image to RGB, with a one-line error naming the file when it is corrupt; `data`: the file's bytes
    where the caller has read them already (read_image_file). `shorter_side`, `longer_side`: the most detail the
    caller uses; a JPEG larger than that is decoded at the smallest DCT scale (1/2, 1/4 or 1/8) whose sides are still
    at least these, a fraction of a full decode's cost for a camera file. Other formats decode at full size. The
    file's own size is kept in `image.info["full_size"]`."""
    data = read_image_file(path) if data is None else data
    try:
        with Image.open(io.BytesIO(data)) as image:
            full_size = image.size
            scale = max(shorter_side / max(1, min(full_size)), longer_side / max(1, max(full_size)))
            if image.format == "JPEG" and 0 < scale < 1:
                image.draft(None, tuple(math.ceil(side * scale) for side in full_size))
            decoded = image.convert("RGB")
    except Image.DecompressionBombError as exc:  # more pixels than a photo has: refused before it is decoded
        raise WsenseError(f"{path}: too many pixels to be a photo ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise WsenseError(f"{path}: not a readable image ({exc})") from None
    decoded.info["full_size"] = full_size
    return decoded


@dataclass
class WithSenseData:
    """The whole data set, validated. `pairs` holds one row per expert-judged (image, caption) pair."""

    root: Path
    pairs: pd.DataFrame  # image, query_id, query_text, expert1..3, expert_mean, expert_target, crowd_share
    crowd: pd.DataFrame  # image, query_id, query_text ('' when the caption is unknown), crowd_share, n_yes, n_no
    captions: pd.DataFrame  # query_id, query_text, image: every known train caption with its own image
    test_queries: pd.DataFrame  # query_id, query_text, image
    test_images: list[str]

    @property
    def train_image_dir(self) -> Path:
        return self.root / TRAIN_IMAGE_DIR

    @property
    def test_image_dir(self) -> Path:
        return self.root / TEST_IMAGE_DIR

    @property
    def train_images(self) -> list[str]:
        return sorted(set(self.pairs["image"]) | set(self.crowd["image"]) | set(self.captions["image"]))

    def true_pairs(self) -> pd.DataFrame:
        """The (caption, own image) pairs: the positives for contrastive training."""
        return self.captions[["query_id", "query_text", "image"]].copy()


def expert_target(pairs: pd.DataFrame) -> pd.Series:
    """Mean expert score mapped to [0, 1] as (mean - 1) / 3, as in the original study."""
    return (pairs[["expert1", "expert2", "expert3"]].mean(axis=1) - 1.0) / 3.0


def make_target(pairs: pd.DataFrame, kind: str = "expert", expert_weight: float = 0.5) -> pd.Series:
    """The training target for each pair: 'expert', 'crowd' (NaN where no crowd judgment) or 'blend'."""
    if kind == "expert":
        return pairs["expert_target"]
    if kind == "crowd":
        return pairs["crowd_share"]
    if kind == "blend":
        blended = expert_weight * pairs["expert_target"] + (1 - expert_weight) * pairs["crowd_share"]
        return blended.fillna(pairs["expert_target"])
    raise WsenseError(f"unknown target '{kind}' (expected expert, crowd or blend)")


def _check_images_exist(table: Path, frame: pd.DataFrame, names: pd.Series, folder: Path, *, decode: bool) -> None:
    """Every image named (`names`, one per row of `frame`) is in `folder` and opens."""
    present = {name: (folder / name).is_file() for name in names.unique()}
    missing = ~names.map(present).astype(bool)
    if missing.any():
        name = names[missing].iloc[0]
        raise WsenseError(f"{table}: row {frame['_line'][missing].iloc[0]}: image '{name}' not found in {folder}")
    for name in sorted(present):
        validate_image_file(folder / name, decode=decode)


def data_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise WsenseError(
            f"{root}: data directory not found (set data.dir in the config or the WSENSE_DATA_DIR variable)"
        )
    return root


def load_data(root: str | Path, *, check_images: bool = True, decode_images: bool = False) -> WithSenseData:
    """Read and validate the five tables; check every referenced image exists (and opens, or fully decodes)."""
    root = data_root(root)
    train = read_train_dataset(root / TRAIN_DATASET)
    experts = read_expert_annotations(root / EXPERT_ANNOTATIONS)
    crowd = read_crowd_annotations(root / CROWD_ANNOTATIONS)
    test_queries = read_test_queries(root / TEST_QUERIES)
    test_images = read_test_images(root / TEST_IMAGES)

    texts = train.drop_duplicates("query_id").set_index("query_id")["query_text"]
    pairs = experts.merge(train[["image", "query_id"]], on=["image", "query_id"], how="left", indicator=True)
    unknown = pairs["_merge"] == "left_only"
    _fail_at(root / EXPERT_ANNOTATIONS, experts, unknown, f"pair not found in {TRAIN_DATASET}")
    pairs = pairs.drop(columns="_merge")
    pairs["query_text"] = pairs["query_id"].map(texts)
    pairs["expert_mean"] = pairs[["expert1", "expert2", "expert3"]].mean(axis=1)
    pairs["expert_target"] = expert_target(pairs)
    pairs = pairs.merge(crowd[["image", "query_id", "crowd_share"]], on=["image", "query_id"], how="left")
    crowd["query_text"] = crowd["query_id"].map(texts).fillna("")

    captions = texts.reset_index()
    captions["image"] = captions["query_id"].map(caption_image)
    queries = test_queries.copy()
    own = queries["query_id"].map(caption_image)
    _fail_at(root / TEST_QUERIES, queries, own != queries["image"], "image is not the prefix of query_id")

    if check_images:
        train_dir, test_dir = root / TRAIN_IMAGE_DIR, root / TEST_IMAGE_DIR
        _check_images_exist(root / TRAIN_DATASET, train, train["image"], train_dir, decode=decode_images)
        # The caption's own image must be there too: those pairs are the positives for contrastive training.
        _check_images_exist(root / TRAIN_DATASET, train, train["query_id"].map(caption_image), train_dir,
                            decode=decode_images)
        _check_images_exist(root / CROWD_ANNOTATIONS, crowd, crowd["image"], train_dir, decode=decode_images)
        _check_images_exist(root / TEST_IMAGES, test_images, test_images["image"], test_dir, decode=decode_images)
        _check_images_exist(root / TEST_QUERIES, queries, queries["image"], test_dir, decode=decode_images)

    cols = ["image", "query_id", "query_text", "expert1", "expert2", "expert3", "expert_mean", "expert_target",
            "crowd_share"]
    return WithSenseData(
        root=root,
        pairs=pairs[cols].reset_index(drop=True),
        crowd=crowd[["image", "query_id", "query_text", "crowd_share", "n_yes", "n_no"]].reset_index(drop=True),
        captions=captions[["query_id", "query_text", "image"]],
        test_queries=queries[["query_id", "query_text", "image"]].reset_index(drop=True),
        test_images=test_images["image"].tolist(),
    )
