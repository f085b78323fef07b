"""Camera files: the photo path's reduced decode against a full decode, with the real backbone weights."""
from conftest import camera_file, settings
from wsense.data import load_image
from wsense.models.image import stack_pixels


def test_embeddings_of_a_reduced_decode_agree_with_a_full_decode(checkpoint, tmp_path):
    from wsense.serving.scoring import RelevanceScorer

    # No query bank, no multilingual map, no ONNX export: the photo path alone.
    scorer = RelevanceScorer.from_checkpoint(checkpoint, settings(embedding__image_runtime="torch"))
    encoder = scorer.photos
    path = camera_file(tmp_path / "big.jpg", size=(2400, 1600))
    reduced = encoder.features(stack_pixels([encoder.pixels(path)]))  # the photo path: decoded at reduced size
    assert load_image(path, shorter_side=encoder.transform.decode_side).size[1] < 1600
    full = encoder.features(stack_pixels([encoder.transform(load_image(path))]))
    cosine = scorer.embed_features(reduced) @ scorer.embed_features(full).T  # unit rows
    assert float(cosine[0, 0]) >= 0.995
