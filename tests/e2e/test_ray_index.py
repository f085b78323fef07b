"""Indexing on Ray: two local workers give the single-process path's index (same entries, embeddings within 1e-5,
unreadable photos skipped), and an unreachable cluster is a one-line error."""
import numpy as np
import pytest

pytest.importorskip("ray", reason="pip install 'wsense[ray]'")

from conftest import settings, write_image  # noqa: E402
from wsense.errors import WsenseError  # noqa: E402
from wsense.serving.index import CatalogIndex  # noqa: E402
from wsense.serving.ray_index import RayPhotoBatches  # noqa: E402
from wsense.serving.search import SearchEngine  # noqa: E402

# e2e: starts a local Ray (about 10 s) and two actors that load the model


def test_two_local_ray_workers_index_as_one_process(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(10):
        write_image(photos / ("sub" if i % 2 else ".") / f"photo{i}.jpg", 80 + i, size=(64, 48))
    (photos / "broken.jpg").write_bytes(b"not a photo")
    ray = RayPhotoBatches(checkpoint, settings(), workers=2, batch_size=3)
    on_ray = SearchEngine(checkpoint, photos, index_dir=tmp_path / "ray", settings=settings(), photo_batches=ray)
    alone = SearchEngine(checkpoint, photos, index_dir=tmp_path / "one", settings=settings())
    a, b = CatalogIndex.load(tmp_path / "ray"), CatalogIndex.load(tmp_path / "one")
    assert len(a.entries) == 10 and a.entries == b.entries  # broken.jpg skipped by both
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
    assert on_ray.search("a dog", 3).to_dict() == alone.search("a dog", 3).to_dict()


def test_an_unreachable_ray_cluster_is_a_clear_error(checkpoint, tmp_path):
    write_image(tmp_path / "p.jpg", 1)
    with pytest.raises(WsenseError, match="cannot reach the Ray cluster at ray://127.0.0.1:1"):
        list(RayPhotoBatches(checkpoint, settings(), address="ray://127.0.0.1:1")([tmp_path / "p.jpg"]))
    with pytest.raises(WsenseError, match="--ray-workers must be at least 1"):
        RayPhotoBatches(checkpoint, settings(), workers=0)


def test_ray_gpus_on_a_cluster_without_gpus_is_a_clear_error(checkpoint, tmp_path):
    write_image(tmp_path / "p.jpg", 2)
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(WsenseError, match="--ray-gpus: the Ray cluster has no GPU"):
        list(RayPhotoBatches(checkpoint, settings(), workers=1, gpus=True)([tmp_path / "p.jpg"]))
