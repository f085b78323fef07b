"""The search engine on a Milvus Lite first stage (a server process of its own) gives the answers of the engine in
memory: filters, paging, an example, a photo kept out, a deleted photo. The first stage's own tests are
tests/serving/test_milvus_store.py."""
import pandas as pd
import pytest

pytest.importorskip("pymilvus", reason="pip install 'wsense[milvus]'")

from conftest import settings, write_image  # noqa: E402
from wsense.serving.metadata import MetadataFilter  # noqa: E402
from wsense.serving.search import SearchEngine  # noqa: E402


def test_the_engine_on_milvus_gives_the_results_of_the_engine_in_memory(exported_checkpoint_copy, shared_data,
                                                                         tmp_path, monkeypatch):
    monkeypatch.setenv("WSENSE_DATA_DIR", str(shared_data))  # the query bank's captions (built in the private copy)
    checkpoint = exported_checkpoint_copy
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(8):
        write_image(photos / ("sub" if i % 2 else ".") / f"photo{i}.jpg", 60 + i, size=(64, 48))
    described = pd.DataFrame({"image": ["photo2.jpg"], "text": ["A little girl on a swing ."]})
    common = {"search__ranking": "qb_cosine", "search__candidates": 4}
    memory = SearchEngine(checkpoint, photos, described, index_dir=tmp_path / "ix", settings=settings(**common))
    on_milvus = SearchEngine(checkpoint, photos, described, index_dir=tmp_path / "ix", settings=settings(
        search__first_stage="milvus", search__milvus_uri=str(tmp_path / "m.db"), **common))
    assert on_milvus.catalog.first_stage.method == "milvus"
    for options in ({}, {"filters": MetadataFilter.parse(folder="sub")}, {"offset": 2}, {"like": "sub/photo3.jpg"}):
        assert (on_milvus.search("a dog on the grass", 3, **options).to_dict()
                == memory.search("a dog on the grass", 3, **options).to_dict()), options
    assert "photo2.jpg" not in [item["image"] for item in on_milvus.search("a dog", 8).results]
    (photos / "photo4.jpg").unlink()
    on_milvus.refresh()
    assert on_milvus.catalog.first_stage.deleted == 1 and on_milvus.search("a dog", 8).total == 6
