"""The `wsense` commands (wsense/cli/), run in process: check-query, check-image, index, search (batch, like/not/
min-score/offset) and one-line errors. Training the missing search checkpoint on first use: e2e/test_cli.py."""
from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import TEST_IMAGES, photo_folder, settings, write_config, write_image
from wsense.cli import main


def test_check_query_prints_one_json_line_per_query_and_echoes_it(capsys):
    queries = ["Two  BOYS on a beach", "black dog leaping over a log", "Ребёнок с мячом", "kidney beans"]
    assert main(["check-query", *queries]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == queries
    assert [line["refused"] for line in lines] == [True, False, True, False]
    assert lines[0]["reason"] and lines[1]["reason"] is None


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["evaluate", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsense: error:") and "data directory not found" in err and "\n" not in err


def test_check_image_prints_one_json_line_per_photo(tmp_path, capsys, config_file):
    write_image(tmp_path / "a.jpg", 1, (120, 90))
    (tmp_path / "b.jpg").write_bytes(b"broken")
    code = main(["check-image", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "--config", str(config_file)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2  # one photo could not be checked
    assert lines[0]["image"].endswith("a.jpg") and lines[0]["child"] is False and lines[0]["faces"] == []
    assert set(lines[0]) >= {"image", "child", "reason", "faces", "score"}
    assert lines[1]["child"] is None and "not a readable image" in lines[1]["error"]


def test_review_records_what_a_person_saw_by_the_photos_content(tmp_path, capsys, config_file):
    from wsense.io import file_sha256
    from wsense.safety.reviews import read_reviews

    write_image(tmp_path / "a.jpg", 1, (120, 90))
    reviews = tmp_path / "reviews.csv"
    code = main(["review", str(tmp_path / "a.jpg"), "--no-child", "--reviewer", "Ana", "--note", "kickboxers",
                 "--reviews", str(reviews), "--config", str(config_file)])
    captured = capsys.readouterr()
    assert code == 0 and "`wsense index` reads no reviews file (safety.reviews): name this file there" in captured.err
    line = json.loads(captured.out)
    assert line["verdict"] == "no_child" and line["sha256"] == file_sha256(tmp_path / "a.jpg")
    review = read_reviews(reviews)[line["sha256"]]
    assert (review.reviewer, review.note, review.shows_child) == ("Ana", "kickboxers", False)

    code = main(["review", str(tmp_path / "gone.jpg"), "--child", "--reviewer", "Ana", "--reviews", str(reviews),
                 "--config", str(config_file)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("gone.jpg: no such photo file") and "\n" not in err
    code = main(["review", str(tmp_path / "a.jpg"), "--child", "--reviewer", "Ana", "--config", str(config_file)])
    assert code == 2 and "safety.reviews is null; pass --reviews FILE" in capsys.readouterr().err
    assert len(read_reviews(reviews)) == 1
    configured = tmp_path / "configured.yaml"
    configured.write_text(config_file.read_text(encoding="utf-8").replace("reviews: null", f"reviews: {reviews}"),
                          encoding="utf-8")
    assert main(["review", str(tmp_path / "a.jpg"), "--child", "--reviewer", "Ben", "--config", str(configured)]) == 0
    assert "`wsense index FOLDER` applies them" in capsys.readouterr().err and read_reviews(reviews)
    assert next(iter(read_reviews(reviews).values())).reviewer == "Ben"


def indexed_paths(index_dir: Path) -> list[dict]:
    from wsense.serving.index import CatalogIndex

    return CatalogIndex.load(index_dir).entries


def test_index_command_indexes_a_folder_and_names_the_searchable_photos(checkpoint, tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", 3)
    index_dir = tmp_path / "ix"
    code = main(["index", str(photos), "--checkpoint", str(checkpoint), "--index-dir", str(index_dir),
                 "--config", str(write_config(tmp_path / "config.yaml"))])
    out = capsys.readouterr().out
    assert code == 0
    assert (index_dir / "index.sqlite").is_file()
    entries = indexed_paths(index_dir)
    assert sorted(e["path"] for e in entries) == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
    match = re.search(r"(\d+) searchable photos", out)
    assert match, out
    assert int(match.group(1)) == sum(1 for e in entries if not e["excluded"])


def test_symlinks_leading_out_of_the_catalog_are_not_indexed(checkpoint, tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", 1)
    outside = photo_folder(tmp_path / "outside", 1, seed=600)
    (photos / "link_out.jpg").symlink_to(outside / "photo0.jpg")
    (photos / "link_in.jpg").symlink_to(photos / "photo0.jpg")
    (photos / "linked_dir").symlink_to(outside, target_is_directory=True)
    index_dir = tmp_path / "ix"
    code = main(["index", str(photos), "--checkpoint", str(checkpoint), "--index-dir", str(index_dir),
                 "--config", str(write_config(tmp_path / "config.yaml"))])
    assert code == 0, capsys.readouterr().err
    assert sorted(e["path"] for e in indexed_paths(index_dir)) == ["link_in.jpg", "photo0.jpg"]


def test_a_missing_search_checkpoint_not_named_best_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "wsense.yaml"
    path.write_text(f"search:\n  checkpoint: {tmp_path / 'my-model'}\n", encoding="utf-8")
    assert main(["search", "--config", str(path), "a dog"]) == 2
    err = capsys.readouterr().err
    assert "my-model: search checkpoint not found" in err and "--output-dir DIR" in err and "\n" not in err.strip()


def test_cli_batch_prints_one_json_line_per_query_in_order(tiny_data, checkpoint, config_file, tmp_path, capsys):
    batch = tmp_path / "queries.txt"
    batch.write_text("a man on a mountain\ntwo girls dancing\n\nчёрная собака\n", encoding="utf-8")
    assert main(["search", "--checkpoint", str(checkpoint), "--config", str(config_file), "--data-dir", str(tiny_data),
                 "--batch", str(batch),
                 "--top-k", "2", "--index-dir", str(tmp_path / "index")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == ["a man on a mountain", "two girls dancing", "чёрная собака"]
    assert [line["refused"] for line in lines] == [False, True, False]
    assert lines[1]["results"] == [] and len(lines[0]["results"]) == 2
    # The test catalog's own captions keep the photo described as showing boys out of every result.
    assert all(item["image"] != TEST_IMAGES[1] for line in lines for item in line["results"])


QUERY = "a dog swimming in a lake"


def test_cli_like_not_min_score_and_offset(features_engine, features_photos, checkpoint, tmp_path, capsys):
    config = tmp_path / "wsense.yaml"
    config.write_text("search:\n  multilingual: none\n  text_runtime: torch\n  ranking: cosine\n"
                      "  duplicate_threshold: null\n"
                      f"  candidates: 4\nsafety:\n  check: {settings().safety.check}\n", encoding="utf-8")
    common = ["--checkpoint", str(checkpoint), "--index-dir", str(features_engine.index_dir), "--config", str(config),
              "--json"]
    assert main(["search", "--like", str(features_photos / "sub" / "photo3.jpg"), "--top-k", "3", "--offset", "1",
                 *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == features_engine.search(like="sub/photo3.jpg", top_k=3, offset=1).to_dict()
    assert main(["search", QUERY, "--not", "snow", "--min-score", "0.2", "--top-k", "8", *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == features_engine.search(QUERY, 8, negatives=["snow"], min_score=0.2).to_dict()
    outside = tmp_path / "mine.jpg"
    write_image(outside, 31, size=(96, 72))
    assert main(["search", "--like", str(outside), "--top-k", "2", *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["like"] == str(outside) and len(line["results"]) == 2 and not line["refused"]
    assert main(["search", "--like", "missing.jpg", *common]) == 2
    assert "not a photo of this catalog" in capsys.readouterr().err
