"""The multilingual map fitted on the label prompts and captions (a thousand texts through USE and the text
tower): kept, and refitted when its settings or its format change."""
import pytest

from conftest import tiny_map_settings
from wsense.errors import WsenseError


def test_multilingual_map_is_kept_and_refitted_when_its_settings_or_format_change(exported_checkpoint_copy,
                                                                                  shared_data, tmp_path, monkeypatch):
    import numpy as np

    from wsense.serving.scoring import TEXT_MAP_FILE, RelevanceScorer

    folder = exported_checkpoint_copy
    use_map = tiny_map_settings(folder, shared_data, tmp_path, monkeypatch)
    scorer = RelevanceScorer.from_checkpoint(folder, use_map)
    written = (folder / TEXT_MAP_FILE).stat().st_mtime_ns
    # A fitting text maps onto its teacher embedding (kernel ridge interpolates its own fitting points).
    english = "a photo of a goldfish"  # a label prompt: one of the map's fitting texts
    assert float(scorer.text_map([english])[0] @ scorer.embed_english([english])[0]) > 0.9
    assert (folder / TEXT_MAP_FILE).stat().st_mtime_ns == written
    RelevanceScorer.from_checkpoint(folder, use_map)
    assert (folder / TEXT_MAP_FILE).stat().st_mtime_ns == written  # reused

    use_map.search.multilingual_gamma = 2.0
    assert RelevanceScorer.from_checkpoint(folder, use_map).text_map.gamma == 2.0
    with np.load(folder / TEXT_MAP_FILE) as stored:
        assert float(stored["gamma"]) == 2.0

    np.savez(folder / TEXT_MAP_FILE, weight=np.zeros((512, 384)), bias=np.zeros(384))  # an older linear map
    assert RelevanceScorer.from_checkpoint(folder, use_map).text_map.sources.shape[1] == 512
    (folder / TEXT_MAP_FILE).write_bytes(b"not a map")
    with pytest.raises(WsenseError, match="damaged multilingual map"):
        RelevanceScorer.from_checkpoint(folder, use_map)
