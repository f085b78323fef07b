"""Reviews by looking (wsense/safety/reviews.py): an append-only log, the latest review of a photo counts, and a
damaged file is a one-line error naming its line, never appended to."""
import pytest

from wsense.errors import WsenseError
from wsense.safety.reviews import COLUMNS, new_reviews, read_reviews, record_reviews

A, B = "a" * 64, "b" * 64


def test_reviews_are_added_to_the_log_and_the_latest_one_of_a_photo_counts(tmp_path):
    path = tmp_path / "reviews" / "photos.csv"
    assert read_reviews(path) == {} and read_reviews(None) == {}
    record_reviews(path, new_reviews([("x/kickboxers.jpg", A), ("swing.jpg", B)], "no_child", " Ana "))
    record_reviews(path, new_reviews([("kickboxers.jpg", A)], "child", "Ben", note="a boy in the crowd"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 4  # one header, every review kept
    reviews = read_reviews(path)
    assert reviews[A].shows_child and reviews[A].reviewer == "Ben" and reviews[A].note == "a boy in the crowd"
    assert not reviews[B].shows_child and reviews[B].reviewer == "Ana" and reviews[B].photo == "swing.jpg"
    assert reviews[A].reason().startswith("reviewed by Ben on 20") and reviews[A].reason().endswith(": a child")


@pytest.mark.parametrize("row, message", [
    ("zz,child,Ana,2026-12-07T00:00:00+00:00,p.jpg,", "reviews.csv:3: sha256 must be 64 hex digits"),
    (f"{B},maybe,Ana,2026-12-07T00:00:00+00:00,p.jpg,", "reviews.csv:3: verdict must be one of child, no_child"),
    (f"{B},child, ,2026-12-07T00:00:00+00:00,p.jpg,", "reviews.csv:3: a review names its reviewer"),
])
def test_a_damaged_reviews_file_names_its_line_and_is_not_appended_to(tmp_path, row, message):
    path = tmp_path / "reviews.csv"
    record_reviews(path, new_reviews([("p.jpg", A)], "child", "Ana"))
    path.write_text(path.read_text(encoding="utf-8") + row + "\n", encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(WsenseError, match=message):
        read_reviews(path)
    with pytest.raises(WsenseError, match=message):
        record_reviews(path, new_reviews([("q.jpg", B)], "child", "X"))
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_reviews_file_is_named(tmp_path):
    (tmp_path / "other.csv").write_text("image,text\nx.jpg,a dog\n", encoding="utf-8")
    with pytest.raises(WsenseError, match="other.csv: not a reviews file: no column sha256, verdict"):
        read_reviews(tmp_path / "other.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(WsenseError, match="binary.csv: not a reviews file"):
        read_reviews(tmp_path / "binary.csv")


def test_a_review_needs_a_verdict_and_a_reviewer():
    with pytest.raises(WsenseError, match="verdict must be one of child, no_child"):
        new_reviews([("p.jpg", A)], "adult", "Ana")
    with pytest.raises(WsenseError, match="names its reviewer"):
        new_reviews([("p.jpg", A)], "child", "  ")


def _record_many(path: str, worker: int) -> None:
    for i in range(40):
        record_reviews(path, new_reviews([(f"w{worker}-{i}.jpg", f"{worker:032x}{i:032x}")], "no_child", "Ana"))


def test_reviewers_recording_at_once_all_keep_their_rows(tmp_path):
    import multiprocessing

    path = tmp_path / "reviews.csv"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(str(path), w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert len(read_reviews(path)) == 160 and len(path.read_text(encoding="utf-8").splitlines()) == 161
