import numpy as np
import torch

from conftest import write_image
from wsense.data import load_image
from wsense.models.embedding_cache import EmbeddingCache, embed_images, embed_texts


class CountingEncoder:
    """Stands in for PhotoEncoder: mean colour per channel of each photo file; counts the photos it reads."""

    calls = 0

    def encode(self, paths):
        CountingEncoder.calls += len(paths)
        return torch.stack([torch.from_numpy(np.asarray(load_image(p), dtype=np.float32) / 255).mean(dim=(0, 1))
                            for p in paths])


def test_image_cache_is_keyed_by_file_contents(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        write_image(paths[-1], i)
    cache_file = tmp_path / "cache" / "m.npz"
    CountingEncoder.calls = 0
    first = embed_images(paths, CountingEncoder(), EmbeddingCache(cache_file), batch_size=2)
    assert first.shape == (5, 3) and CountingEncoder.calls == 5

    again = embed_images(paths, CountingEncoder(), EmbeddingCache(cache_file), batch_size=2)
    assert CountingEncoder.calls == 5  # nothing embedded twice
    np.testing.assert_array_equal(first, again)

    write_image(paths[2], 99)  # same name, new contents
    changed = embed_images(paths, CountingEncoder(), EmbeddingCache(cache_file), batch_size=2)
    assert CountingEncoder.calls == 6
    assert not np.allclose(changed[2], first[2])
    np.testing.assert_array_equal(changed[[0, 1, 3, 4]], first[[0, 1, 3, 4]])


def test_damaged_cache_is_rebuilt(tmp_path, capsys):
    cache_file = tmp_path / "m.npz"
    cache_file.write_bytes(b"garbage")
    cache = EmbeddingCache(cache_file)
    assert len(cache) == 0
    assert "rebuilding" in capsys.readouterr().err
    cache.put(["k"], np.ones((1, 2)))
    cache.save()
    assert len(EmbeddingCache(cache_file)) == 1


def test_texts_keep_order_and_duplicates(tmp_path):
    class Encoder:
        def encode(self, texts):
            return torch.tensor([[len(t), t.count("a")] for t in texts], dtype=torch.float32)

    vectors = embed_texts(["aa", "b", "aa", "ccc"], Encoder(), EmbeddingCache(tmp_path / "t.npz"))
    assert vectors.tolist() == [[2, 2], [1, 0], [2, 2], [3, 0]]


def test_a_save_writes_only_what_was_added_and_shards_are_merged_past_a_limit(tmp_path, monkeypatch):
    legacy = tmp_path / "m.npz"  # the earlier layout: one file holding every vector
    np.savez(legacy, keys=np.array(["old"], dtype="U64"), vectors=np.ones((1, 4), np.float32))
    cache = EmbeddingCache(legacy)
    assert "old" in cache and len(cache) == 1
    cache.put(["a"], np.full((1, 4), 2.0))
    cache.save()
    cache.save()  # nothing new: no shard
    [shard] = sorted((tmp_path / "m").glob("*.npz"))
    with np.load(shard) as stored:
        assert stored["keys"].tolist() == ["a"]  # the new vector alone, not the cache again
    other = EmbeddingCache(legacy)  # another process, which adds its own
    other.put(["theirs"], np.full((1, 4), 3.0))
    other.save()
    monkeypatch.setattr(EmbeddingCache, "MAX_SHARDS", 3)
    cache.put(["k0"], np.full((1, 4), 10.0))
    cache.save()  # a fourth shard: past the limit of three
    assert len(list((tmp_path / "m").glob("*.npz"))) == 1 and not legacy.exists()  # merged into one
    cache.put(["k1"], np.full((1, 4), 11.0))
    cache.save()
    reopened = EmbeddingCache(legacy)
    assert sorted(reopened._vectors) == ["a", "k0", "k1", "old", "theirs"]
    assert reopened.get(["theirs", "k1"]).tolist() == [[3.0] * 4, [11.0] * 4]
