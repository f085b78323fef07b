import pandas as pd

from wsense.data import load_data
from wsense.safety.filters import child_images, filter_training_pairs


def test_training_filter_drops_child_images_and_child_captions(tiny_data, capsys):
    data = load_data(tiny_data)
    kept, summary = filter_training_pairs(data.pairs, data.captions)
    # Image 2 has the caption "A little girl ..." written for it: every pair with it goes, and so does
    # every pair with that caption.
    girl_image = "1002_a2.jpg"
    assert girl_image not in set(kept["image"])
    assert not kept["query_text"].str.contains("girl").any()
    assert summary.pairs_before == 36
    assert summary.pairs_child_image == 6 and summary.pairs_child_caption == 6
    assert summary.pairs_removed == 11  # the girl's own pair counts once
    assert summary.images_removed == 1
    assert len(kept) == 25
    assert "removed 11 of 36 pairs" in str(summary)


def test_child_images_use_only_the_images_own_descriptions():
    descriptions = pd.DataFrame({"image": ["a.jpg", "b.jpg", "b.jpg"],
                                 "text": ["a dog", "a kid with a kite", "a man"]})
    assert child_images(descriptions) == {"b.jpg"}


def test_catalog_keeps_described_child_photos_out():
    descriptions = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "text": ["Ребёнок на пляже", "a lighthouse"]})
    assert child_images(descriptions) == {"a.jpg"}


def test_training_filter_drops_photos_seen_to_show_a_child_whatever_their_captions(tiny_data, tmp_path):
    from wsense.safety.filters import children_seen

    labels = tmp_path / "labels.csv"
    labels.write_text("image,split,label,note,reviewers\n1000_a0.jpg,train,child,boy on a bike,H1\n"
                      "1001_a1.jpg,train,unsure,far figure,H1\n1003_a3.jpg,train,adult,man,H1\n", encoding="utf-8")
    data = load_data(tiny_data)
    seen = children_seen(labels)
    assert seen == {"1000_a0.jpg"}
    kept, summary = filter_training_pairs(data.pairs, data.captions, seen)
    assert not {"1000_a0.jpg", "1002_a2.jpg"} & set(kept["image"])
    assert "1001_a1.jpg" in set(kept["image"]) and summary.images_removed == 2
