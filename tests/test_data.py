"""The data layer: the With Sense tables read with their real quirks, and every problem as one clear line.

The tiny data set from conftest has, in file order:
- train_dataset.csv: header on line 1, then for each caption in CAPTIONS, one row per image in TRAIN_IMAGES
  (36 rows, lines 2-37);
- ExpertAnnotations.tsv / CrowdAnnotations.tsv: no header, the same 36 (image, query_id) pairs on lines 1-36;
- test_queries.csv: header '|query_id|query_text|image' on line 1, TEST_CAPTIONS on lines 2-5;
- test_images.csv: header 'image' on line 1, TEST_IMAGES on lines 2-4.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import CAPTIONS, TEST_CAPTIONS, TEST_IMAGES, TRAIN_IMAGES, camera_file, make_dataset
from wsense.data import (
    CROWD_ANNOTATIONS,
    EXPERT_ANNOTATIONS,
    TEST_QUERIES,
    TRAIN_DATASET,
    demo_catalog,
    validate_image_file,
    load_data,
    load_image,
    make_target,
)
from wsense.data import TEST_IMAGES as TEST_IMAGES_CSV
from wsense.errors import WsenseError

ALL_TABLES = [TRAIN_DATASET, EXPERT_ANNOTATIONS, CROWD_ANNOTATIONS, TEST_QUERIES, TEST_IMAGES_CSV]
N_PAIRS = len(CAPTIONS) * len(TRAIN_IMAGES)
FIRST_QID = list(CAPTIONS)[0]


# ----------------------------------------------------------------------------------------------- helpers

def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def set_field(path: Path, line_no: int, column: int, value: str, sep: str) -> None:
    """Replace one field of one (1-based) line; only for lines without quoted separators."""
    lines = lines_of(path)
    fields = lines[line_no - 1].split(sep)
    fields[column] = value
    lines[line_no - 1] = sep.join(fields)
    write_lines(path, lines)


def set_train_text(path: Path, line_no: int, text: str) -> None:
    """Replace the (quoted) caption of one line of train_dataset.csv."""
    lines = lines_of(path)
    image, query_id, _ = lines[line_no - 1].split(",", 2)
    lines[line_no - 1] = f"{image},{query_id},{text}"
    write_lines(path, lines)


def one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def load_fails(root: Path, *patterns: str, **kwargs) -> str:
    """load_data raises a one-line WsenseError matching every pattern; returns the message."""
    with pytest.raises(WsenseError, match=patterns[0]) as err:
        load_data(root, **kwargs)
    message = one_line_error(err)
    for pattern in patterns[1:]:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    return message


def jpeg_bytes(size=(64, 48), mode="RGB") -> bytes:
    import io

    rng = np.random.default_rng(7)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buffer = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode=mode).save(buffer, format="JPEG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- valid data

def test_valid_set_loads_with_expected_shapes(tiny_data):
    data = load_data(tiny_data)
    assert data.root == tiny_data
    assert data.pairs.shape == (N_PAIRS, 9)
    assert list(data.pairs.columns) == ["image", "query_id", "query_text", "expert1", "expert2", "expert3",
                                        "expert_mean", "expert_target", "crowd_share"]
    assert data.crowd.shape == (N_PAIRS, 6)
    assert list(data.crowd.columns) == ["image", "query_id", "query_text", "crowd_share", "n_yes", "n_no"]
    assert data.captions.shape == (len(CAPTIONS), 3)
    assert list(data.captions.columns) == ["query_id", "query_text", "image"]
    assert data.test_queries.shape == (len(TEST_CAPTIONS), 3)
    assert data.test_images == TEST_IMAGES
    assert data.train_images == sorted(TRAIN_IMAGES)
    assert data.train_image_dir == tiny_data / "train_images"
    assert data.test_image_dir == tiny_data / "test_images"
    assert not data.pairs["query_text"].isna().any()


def test_quoted_caption_with_embedded_quotes_reads_back_exactly(tiny_data):
    data = load_data(tiny_data)
    texts = dict(zip(data.captions["query_id"], data.captions["query_text"]))
    assert texts == CAPTIONS
    assert texts[FIRST_QID] == 'A black dog runs on the "green" grass .'
    in_pairs = data.pairs.loc[data.pairs["query_id"] == FIRST_QID, "query_text"]
    assert len(in_pairs) == len(TRAIN_IMAGES)
    assert (in_pairs == 'A black dog runs on the "green" grass .').all()
    in_crowd = data.crowd.loc[data.crowd["query_id"] == FIRST_QID, "query_text"]
    assert (in_crowd == 'A black dog runs on the "green" grass .').all()


def test_pipe_file_index_column_is_not_data(tiny_data):
    queries = load_data(tiny_data).test_queries
    assert list(queries.columns) == ["query_id", "query_text", "image"]
    assert queries["query_id"].tolist() == list(TEST_CAPTIONS)
    assert queries["query_text"].tolist() == list(TEST_CAPTIONS.values())
    assert queries["image"].tolist() == [qid.split("#")[0] for qid in TEST_CAPTIONS]
    # The unnamed index values (0, 1, 2, 3) appear nowhere as data.
    assert not queries.isin([str(i) for i in range(len(TEST_CAPTIONS))]).any().any()
    assert list(queries.index) == list(range(len(TEST_CAPTIONS)))


def test_expert_scores_and_target_are_exact(tiny_data):
    data = load_data(tiny_data)
    pairs = data.pairs
    raw = [line.split("\t") for line in lines_of(tiny_data / EXPERT_ANNOTATIONS)]
    assert pairs[["image", "query_id"]].values.tolist() == [row[:2] for row in raw]
    assert pairs[["expert1", "expert2", "expert3"]].values.tolist() == [[int(v) for v in row[2:]] for row in raw]
    mean = pairs[["expert1", "expert2", "expert3"]].mean(axis=1)
    assert (pairs["expert_mean"] == mean).all()
    assert (pairs["expert_target"] == (mean - 1) / 3).all()
    assert pairs["expert_target"].between(0, 1).all()
    own = pairs[pairs["image"] == pairs["query_id"].str.split("#").str[0]]
    assert len(own) == len(CAPTIONS)
    assert (own["expert_target"] == (11 / 3 - 1) / 3).all()  # scores 4, 4, 3


def test_crowd_share_is_joined_onto_pairs(tiny_data):
    data = load_data(tiny_data)
    raw = {(row[0], row[1]): float(row[2]) for row in
           (line.split("\t") for line in lines_of(tiny_data / CROWD_ANNOTATIONS))}
    joined = {(image, qid): share for image, qid, share in
              data.pairs[["image", "query_id", "crowd_share"]].itertuples(index=False)}
    assert joined == raw
    assert data.crowd["n_yes"].tolist() == [int(line.split("\t")[3]) for line in
                                            lines_of(tiny_data / CROWD_ANNOTATIONS)]
    assert ((data.crowd["n_yes"] + data.crowd["n_no"]) == 3).all()


def test_true_pairs_give_each_caption_with_its_own_image(tiny_data):
    data = load_data(tiny_data)
    positives = data.true_pairs()
    assert list(positives.columns) == ["query_id", "query_text", "image"]
    assert len(positives) == len(CAPTIONS)
    assert sorted(positives["query_id"]) == sorted(CAPTIONS)
    for query_id, text, image in positives.itertuples(index=False):
        assert image == query_id.split("#")[0]
        assert text == CAPTIONS[query_id]
    positives.loc[:, "image"] = "changed"  # a copy: the data set itself is untouched
    assert (data.captions["image"] != "changed").all()


def test_the_demo_catalog_is_the_test_photos_with_their_captions(tiny_data):
    data = load_data(tiny_data)
    folder, descriptions = demo_catalog(tiny_data)
    assert folder == data.test_image_dir
    assert descriptions == list(data.test_queries[["image", "query_text"]].itertuples(index=False, name=None))
    with pytest.raises(WsenseError, match="data directory not found"):
        demo_catalog(tiny_data / "nowhere")


@pytest.fixture
def data_without_one_crowd_row(tiny_data):
    """The tiny set with the crowd line of the first pair (line 1) deleted."""
    path = tiny_data / CROWD_ANNOTATIONS
    lines = lines_of(path)
    missing = tuple(lines[0].split("\t")[:2])
    write_lines(path, lines[1:])
    return load_data(tiny_data), missing


def test_make_target_expert_and_crowd(data_without_one_crowd_row):
    data, (image, query_id) = data_without_one_crowd_row
    pairs = data.pairs
    gone = (pairs["image"] == image) & (pairs["query_id"] == query_id)
    assert gone.sum() == 1
    assert len(data.crowd) == N_PAIRS - 1

    expert = make_target(pairs, "expert")
    assert expert.equals(pairs["expert_target"])
    assert (make_target(pairs) == expert).all()  # expert is the default

    crowd = make_target(pairs, "crowd")
    assert crowd[gone].isna().all()
    assert crowd[~gone].notna().all()
    assert (crowd[~gone] == pairs.loc[~gone, "crowd_share"]).all()


@pytest.mark.parametrize("weight", [0.5, 0.25, 0.0, 1.0])
def test_make_target_blend(data_without_one_crowd_row, weight):
    data, (image, query_id) = data_without_one_crowd_row
    pairs = data.pairs
    gone = (pairs["image"] == image) & (pairs["query_id"] == query_id)
    blend = make_target(pairs, "blend", expert_weight=weight)
    assert blend.notna().all()
    expected = weight * pairs["expert_target"] + (1 - weight) * pairs["crowd_share"]
    assert np.allclose(blend[~gone], expected[~gone], rtol=0, atol=1e-12)
    assert (blend[gone] == pairs.loc[gone, "expert_target"]).all()


def test_make_target_default_blend_weight_is_half(tiny_data):
    pairs = load_data(tiny_data).pairs
    expected = 0.5 * pairs["expert_target"] + 0.5 * pairs["crowd_share"]
    assert np.allclose(make_target(pairs, "blend"), expected, rtol=0, atol=1e-12)


def test_make_target_unknown_kind(tiny_data):
    pairs = load_data(tiny_data).pairs
    with pytest.raises(WsenseError, match=r"unknown target 'median'") as err:
        make_target(pairs, "median")
    one_line_error(err)


# ------------------------------------------------------------------------------------ missing or empty

def test_missing_data_directory(tmp_path):
    root = tmp_path / "nowhere"
    load_fails(root, re.escape(str(root)), r"data directory not found")


@pytest.mark.parametrize("table", ALL_TABLES)
def test_missing_table(tiny_data, table):
    (tiny_data / table).unlink()
    load_fails(tiny_data, re.escape(table) + r": file not found")


@pytest.mark.parametrize("table", ALL_TABLES)
def test_empty_table_file(tiny_data, table):
    (tiny_data / table).write_text("")
    # pandas says "no columns" for an empty file with a header, and gives an empty frame without one.
    load_fails(tiny_data, re.escape(table) + r": (file is empty|table has no data rows)")


@pytest.mark.parametrize("table", [TRAIN_DATASET, TEST_QUERIES, TEST_IMAGES_CSV])
def test_header_only_table(tiny_data, table):
    path = tiny_data / table
    write_lines(path, lines_of(path)[:1])
    load_fails(tiny_data, re.escape(table) + r": table has no data rows")


@pytest.mark.parametrize("table, old, new, column", [
    (TRAIN_DATASET, "image,query_id,query_text", "image,query_id,caption", "query_text"),
    (TEST_QUERIES, "|query_id|query_text|image", "|query_id|query_text|img", "image"),
    (TEST_IMAGES_CSV, "image", "picture", "image"),
])
def test_header_with_missing_column(tiny_data, table, old, new, column):
    path = tiny_data / table
    lines = lines_of(path)
    assert lines[0] == old
    write_lines(path, [new] + lines[1:])
    load_fails(tiny_data, re.escape(table) + r": missing column\(s\) " + column + r"\b", r"found: ")


# ------------------------------------------------------------------------------------------ bad rows

@pytest.mark.parametrize("table, line_no, extra, fields", [
    (TRAIN_DATASET, 6, ",extra", 3),
    (EXPERT_ANNOTATIONS, 5, "\t9", 5),
    (CROWD_ANNOTATIONS, 7, "\t9", 5),
    (TEST_QUERIES, 3, "|extra", 4),
])
def test_row_with_too_many_fields(tiny_data, table, line_no, extra, fields):
    path = tiny_data / table
    lines = lines_of(path)
    lines[line_no - 1] += extra
    write_lines(path, lines)
    load_fails(tiny_data, re.escape(table) + rf": row {line_no}: expected {fields} fields separated by "
                          rf"'{re.escape(lines[0][0] if table == TEST_QUERIES else '')}.*found {fields + 1}")


def test_too_many_fields_on_first_data_row(tiny_data):
    path = tiny_data / TRAIN_DATASET
    lines = lines_of(path)
    lines[1] += ",extra"
    write_lines(path, lines)
    message = load_fails(tiny_data, re.escape(TRAIN_DATASET))
    assert re.search(r"\b(row|line) 2\b", message), message
    assert "empty or missing" not in message


@pytest.mark.parametrize("table, line_no, column, name, sep", [
    (TRAIN_DATASET, 5, 2, "query_text", ","),
    (TRAIN_DATASET, 9, 0, "image", ","),
    (EXPERT_ANNOTATIONS, 3, 0, "image", "\t"),
    (EXPERT_ANNOTATIONS, 8, 4, "expert3", "\t"),
    (CROWD_ANNOTATIONS, 11, 2, "crowd_share", "\t"),
    (TEST_QUERIES, 3, 2, "query_text", "|"),
    (TEST_IMAGES_CSV, 3, 0, "image", ","),
])
def test_row_with_an_empty_cell(tiny_data, table, line_no, column, name, sep):
    path = tiny_data / table
    if table == TRAIN_DATASET and column == 2:
        set_train_text(path, line_no, "")
    elif table == TEST_IMAGES_CSV:
        set_field(path, line_no, column, '""', sep)  # an unquoted empty line would be a blank line, skipped
    else:
        set_field(path, line_no, column, "", sep)
    load_fails(tiny_data, re.escape(table) + rf": row {line_no}: column '{name}' is empty or missing")


def test_row_with_whitespace_only_cell(tiny_data):
    set_train_text(tiny_data / TRAIN_DATASET, 4, '"   "')
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row 4: column 'query_text' is empty or missing")


def test_short_row_is_reported_with_its_field_count(tiny_data):
    path = tiny_data / EXPERT_ANNOTATIONS
    lines = lines_of(path)
    lines[5] = "\t".join(lines[5].split("\t")[:4])
    write_lines(path, lines)
    load_fails(tiny_data, re.escape(EXPERT_ANNOTATIONS) + r": row 6: expected 5 fields separated by '\t', found 4")


@pytest.mark.parametrize("score, problem", [
    ("5", r"column 'expert2' is outside \[1, 4\]"),
    ("0", r"column 'expert2' is outside \[1, 4\]"),
    ("x", r"column 'expert2' is not a number"),
    ("2.5", r"column 'expert2' is not a whole score 1-4"),
])
def test_bad_expert_score(tiny_data, score, problem):
    set_field(tiny_data / EXPERT_ANNOTATIONS, 4, 3, score, "\t")
    load_fails(tiny_data, re.escape(EXPERT_ANNOTATIONS) + r": row 4: " + problem)


@pytest.mark.parametrize("share, problem", [
    ("1.5", r"outside \[0, 1\]"),
    ("-0.1", r"outside \[0, 1\]"),
    ("yes", r"not a number"),
])
def test_bad_crowd_share(tiny_data, share, problem):
    set_field(tiny_data / CROWD_ANNOTATIONS, 7, 2, share, "\t")
    load_fails(tiny_data, re.escape(CROWD_ANNOTATIONS) + r": row 7: column 'crowd_share' is " + problem)


def test_bad_crowd_count(tiny_data):
    set_field(tiny_data / CROWD_ANNOTATIONS, 2, 4, "-1", "\t")
    load_fails(tiny_data, re.escape(CROWD_ANNOTATIONS) + r": row 2: column 'n_no' is outside \[0, inf\]")


def test_infinite_crowd_count(tiny_data):
    set_field(tiny_data / CROWD_ANNOTATIONS, 2, 3, "inf", "\t")
    load_fails(tiny_data, re.escape(CROWD_ANNOTATIONS) + r": row 2: column 'n_yes'")


@pytest.mark.parametrize("query_id", ["foo.jpg", "foo.jpg#x", "#1", "foo#1", "a/b.jpg#1"])
@pytest.mark.parametrize("table, line_no, sep", [
    (TRAIN_DATASET, 3, ","),
    (EXPERT_ANNOTATIONS, 2, "\t"),
    (CROWD_ANNOTATIONS, 5, "\t"),
    (TEST_QUERIES, 4, "|"),
])
def test_malformed_query_id(tiny_data, query_id, table, line_no, sep):
    column = 1  # in test_queries.csv the unnamed index column comes first, so query_id is field 1 there too
    set_field(tiny_data / table, line_no, column, query_id, sep)
    message = load_fails(tiny_data,
                         re.escape(table) + rf": row {line_no}: query_id is not of the form '<image>#<n>'")
    assert query_id in message


# ------------------------------------------------------------------------------------------- images

def test_referenced_train_image_missing(tiny_data):
    missing = TRAIN_IMAGES[2]
    (tiny_data / "train_images" / missing).unlink()
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row \d+: image '" + re.escape(missing) + r"' not found",
               re.escape(str(tiny_data / "train_images")))


def test_referenced_test_image_missing(tiny_data):
    missing = TEST_IMAGES[2]
    (tiny_data / "test_images" / missing).unlink()
    load_fails(tiny_data, re.escape(TEST_IMAGES_CSV) + r": row \d+: image '" + re.escape(missing) + r"' not found",
               re.escape(str(tiny_data / "test_images")))


def test_caption_own_image_missing(tiny_data):
    """The caption's own image (the prefix of its id) must exist even when no row uses it as 'image'."""
    path = tiny_data / TRAIN_DATASET
    lines = lines_of(path)
    own = "3000_own.jpg"
    lines.append(f'{TRAIN_IMAGES[0]},{own}#0,"An extra caption ."')
    write_lines(path, lines)
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row \d+: image '" + re.escape(own) + "' not found")


def test_missing_image_row_number_counts_header(tiny_data):
    (tiny_data / "train_images" / TRAIN_IMAGES[2]).unlink()  # first used on line 4 (header, then rows 0, 1, 2)
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row 4: image '" + re.escape(TRAIN_IMAGES[2]) + "'")


def test_missing_test_image_row_number_counts_header(tiny_data):
    (tiny_data / "test_images" / TEST_IMAGES[1]).unlink()  # line 3 of test_images.csv
    load_fails(tiny_data, re.escape(TEST_IMAGES_CSV) + r": row 3: image '" + re.escape(TEST_IMAGES[1]) + "'")


def test_check_image_corrupt(tiny_data):
    path = tiny_data / "train_images" / TRAIN_IMAGES[1]
    validate_image_file(path)
    validate_image_file(path, decode=True)
    path.write_bytes(b"not a jpeg")
    for decode in (False, True):
        with pytest.raises(WsenseError, match=re.escape(TRAIN_IMAGES[1]) + r": not a readable image") as err:
            validate_image_file(path, decode=decode)
        one_line_error(err)


def test_check_image_missing(tmp_path):
    with pytest.raises(WsenseError, match=r"nothing\.jpg: image file not found") as err:
        validate_image_file(tmp_path / "nothing.jpg")
    one_line_error(err)


@pytest.mark.parametrize("folder, name", [("train_images", TRAIN_IMAGES[3]), ("test_images", TEST_IMAGES[0])])
@pytest.mark.parametrize("decode", [False, True])
def test_load_data_corrupt_image(tiny_data, folder, name, decode):
    path = tiny_data / folder / name
    path.write_bytes(b"not a jpeg")
    load_fails(tiny_data, re.escape(str(path)) + r": not a readable image", decode_images=decode)


def test_truncated_jpeg(tiny_data):
    path = tiny_data / "train_images" / TRAIN_IMAGES[0]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WsenseError, match=re.escape(TRAIN_IMAGES[0]) + r": not a readable image") as err:
        validate_image_file(path, decode=True)
    one_line_error(err)
    load_fails(tiny_data, re.escape(str(path)) + r": not a readable image", decode_images=True)


def test_jpeg_truncated_in_scan_data_fails_full_decode(tmp_path):
    path = tmp_path / "half.jpg"
    data = jpeg_bytes(size=(256, 256))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WsenseError, match=r"half\.jpg: not a readable image") as err:
        validate_image_file(path, decode=True)
    one_line_error(err)


def test_load_image_png_with_alpha_is_rgb(tmp_path):
    path = tmp_path / "alpha.png"
    pixels = np.zeros((10, 12, 4), dtype=np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = 128
    Image.fromarray(pixels, mode="RGBA").save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (12, 10)


def test_load_image_grayscale_jpeg_is_rgb(tmp_path):
    path = tmp_path / "gray.jpg"
    path.write_bytes(jpeg_bytes(size=(20, 16), mode="L"))
    with Image.open(path) as original:
        assert original.mode == "L"
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (20, 16)
    red, green, blue = (np.asarray(band) for band in image.split())
    assert (red == green).all() and (green == blue).all()


def test_load_image_corrupt_and_missing(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(WsenseError, match=r"broken\.jpg: not a readable image") as err:
        load_image(path)
    one_line_error(err)
    with pytest.raises(WsenseError, match=r"absent\.jpg: image file not found") as err:
        load_image(tmp_path / "absent.jpg")
    one_line_error(err)


def test_check_images_false_skips_image_checks(tiny_data):
    (tiny_data / "train_images" / TRAIN_IMAGES[2]).unlink()
    (tiny_data / "test_images" / TEST_IMAGES[0]).unlink()
    (tiny_data / "train_images" / TRAIN_IMAGES[4]).write_bytes(b"not a jpeg")
    load_fails(tiny_data, r"not found")
    data = load_data(tiny_data, check_images=False)
    assert len(data.pairs) == N_PAIRS
    assert data.test_images == TEST_IMAGES
    data = load_data(tiny_data, check_images=False, decode_images=True)
    assert len(data.pairs) == N_PAIRS


def test_check_images_false_still_validates_tables(tiny_data):
    set_field(tiny_data / EXPERT_ANNOTATIONS, 4, 3, "5", "\t")
    load_fails(tiny_data, re.escape(EXPERT_ANNOTATIONS) + r": row 4: ", check_images=False)


# ------------------------------------------------------------------------------------ cross-table

def test_test_query_image_disagrees_with_query_id(tiny_data):
    set_field(tiny_data / TEST_QUERIES, 3, 3, TEST_IMAGES[2], "|")  # line 3: TEST_IMAGES[0]#1
    message = load_fails(tiny_data, re.escape(TEST_QUERIES) + r": row 3: image is not the prefix of query_id")
    assert list(TEST_CAPTIONS)[1] in message


@pytest.mark.parametrize("column, value", [(1, "9999_z9.jpg#0"), (0, "9999_z9.jpg")])
def test_expert_pair_not_in_train_dataset(tiny_data, column, value):
    set_field(tiny_data / EXPERT_ANNOTATIONS, 4, column, value, "\t")
    message = load_fails(tiny_data,
                         re.escape(EXPERT_ANNOTATIONS) + r": row 4: pair not found in " + re.escape(TRAIN_DATASET))
    assert value in message


def test_query_id_with_two_texts(tiny_data):
    set_train_text(tiny_data / TRAIN_DATASET, 3, '"A cat sleeps ."')  # the second row of the first caption
    message = load_fails(tiny_data,
                         re.escape(TRAIN_DATASET) + r": row 3: query_id has a different text on an earlier row")
    assert FIRST_QID in message


def test_query_id_with_two_texts_names_the_row(tiny_data):
    set_train_text(tiny_data / TRAIN_DATASET, 3, '"A cat sleeps ."')
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row 3: ")


def test_duplicate_train_row_then_unknown_expert_pair(tiny_data):
    train = tiny_data / TRAIN_DATASET
    lines = lines_of(train)
    write_lines(train, lines[:2] + lines[1:])
    experts = tiny_data / EXPERT_ANNOTATIONS
    write_lines(experts, lines_of(experts) + [f"{TRAIN_IMAGES[0]}\t9999_z9.jpg#0\t1\t1\t1"])
    # The duplicate is found first, in the train table, before any merge could go wrong.
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row 3: duplicate of the \(image, query_id\) pair at row 2")


def test_duplicate_train_row_does_not_duplicate_pairs(tiny_data):
    train = tiny_data / TRAIN_DATASET
    lines = lines_of(train)
    write_lines(train, lines[:2] + lines[1:])
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row 3: duplicate of the \(image, query_id\) pair at row 2")


def test_blank_lines_in_test_images_are_skipped(tiny_data):
    path = tiny_data / TEST_IMAGES_CSV
    lines = lines_of(path)
    write_lines(path, lines[:2] + ["", "   "] + lines[2:])
    assert load_data(tiny_data).test_images == TEST_IMAGES


def test_row_numbers_after_a_blank_line(tiny_data):
    path = tiny_data / TRAIN_DATASET
    lines = lines_of(path)
    lines.insert(2, "")  # a blank line 3; the old line 5 becomes line 6
    write_lines(path, lines)
    set_train_text(path, 6, "")
    load_fails(tiny_data, re.escape(TRAIN_DATASET) + r": row 6: column 'query_text' is empty or missing")


def test_make_dataset_helper_is_reusable(tmp_path):
    root = make_dataset(tmp_path / "other")
    assert len(load_data(root, decode_images=True).pairs) == N_PAIRS
    assert pd.api.types.is_float_dtype(load_data(root).pairs["crowd_share"])


def test_a_decompression_bomb_in_a_catalog_is_a_one_line_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # 40,000 pixels: past twice the limit, PIL refuses
    with pytest.raises(WsenseError, match="bomb.png: too many pixels"):
        load_image(path)


# Camera files decoded once at the size each step needs (JPEG DCT scaling), other formats at full size.
def test_a_large_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_need(tmp_path):
    path = camera_file(tmp_path / "big.jpg")
    views = load_image(path, shorter_side=445)
    assert views.size == (750, 500) and views.info["full_size"] == (3000, 2000)  # 1/4 covers 445; 1/8 would not
    faces = load_image(path, longer_side=1024)
    assert faces.size == (1500, 1000) and faces.info["full_size"] == (3000, 2000)
    assert load_image(path).size == (3000, 2000)  # no need given: full size


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("WEBP", ".webp")])
def test_formats_without_dct_scaling_decode_at_full_size(tmp_path, fmt, suffix):
    path = camera_file(tmp_path / f"big{suffix}", size=(1200, 800), fmt=fmt)
    image = load_image(path, shorter_side=300, longer_side=600)
    assert image.size == (1200, 800) and image.mode == "RGB" and image.info["full_size"] == (1200, 800)


def test_a_16_bit_png_decodes_without_a_crash(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray((np.random.default_rng(1).random((400, 600)) * 65535).astype(np.uint16)).save(path)
    image = load_image(path, shorter_side=300)
    assert image.mode == "RGB" and image.size == (600, 400)
