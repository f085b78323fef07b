"""The image-side legal check: face analysis, the rule around it, the fitted classifier and its thresholds, the
check's file, and `wsense check-image` / `wsense fit-check`, on generated photos and hand-made faces."""
import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import make_check, settings, write_image
from wsense.cli import main
from wsense.errors import WsenseError
from wsense.safety import child_classifier as ic
from wsense.safety.screener import PhotoScreener
from wsense.safety.faces import ANALYZER_VERSION, Face, FaceAnalyzer, FaceCache, PhotoFaces, analyze_photos


def face(age, box=(10, 10, 60, 70), score=0.99, gender="male"):
    return Face(list(box), score, age, 80, gender, 90)


ADULT = PhotoFaces(400, 300, [face(35), face(41, (100, 10, 150, 70), gender="female")])
CHILD_BESIDE_ADULT = PhotoFaces(400, 300, [face(38), face(7, (100, 40, 130, 75))])
BACKS_ONLY = PhotoFaces(400, 300, [], [([10, 10, 80, 200], 1.2)])  # a person, no face
TINY_FACE = PhotoFaces(400, 300, [face(30, (10, 10, 18, 19))])  # a face too small to read
EMPTY = PhotoFaces(400, 300)


def test_a_young_face_keeps_the_photo_out_and_names_the_face():
    check = make_check()
    verdict = check.decide(CHILD_BESIDE_ADULT, 0.01)
    assert verdict.child and verdict.reason == "face 2 of 2: estimated age 7 (confidence 80), under 16"
    assert not check.decide(ADULT, 0.01).child
    assert check.with_policy("strict", child_age=40).decide(ADULT, 0.01).child  # another age limit


@pytest.mark.parametrize("photo", [BACKS_ONLY, TINY_FACE])
def test_uncertain_photos_follow_the_policy(photo):
    check = make_check(thresholds={"photo": 0.5, "uncertain": 0.2})
    assert ic.is_uncertain(photo) and not ic.is_uncertain(ADULT) and not ic.is_uncertain(EMPTY)
    assert check.with_policy("exclude").decide(photo, 0.0).child  # every uncertain photo out
    strict = check.with_policy("strict")
    assert not strict.decide(photo, 0.1).child and strict.decide(photo, 0.25).child  # its own, lower threshold
    assert "no face the age model can read" in strict.decide(photo, 0.25).reason
    classifier = check.with_policy("classifier")
    assert not classifier.decide(photo, 0.25).child and classifier.decide(photo, 0.5).child
    assert not strict.decide(EMPTY, 0.25).child  # nobody in it: only the photo threshold applies


def test_policies_and_age_limits_are_versions_of_the_check():
    check = make_check()
    versions = {check.with_policy(p).version for p in ic.UNCERTAIN_POLICIES} | {check.with_policy("strict", 12).version}
    assert len(versions) == 4
    assert make_check(intercept=-7.0).version != check.version


def test_face_features_summarise_faces_and_people():
    names = dict(zip(ic.FACE_FEATURES, ic.face_features(CHILD_BESIDE_ADULT, 16)))
    assert names["has_face"] == 1 and names["youngest_age"] == pytest.approx(7 / 80) and names["young_share"] == 0.5
    assert names["smallest_to_largest_face"] == pytest.approx(35 / 60)
    empty = dict(zip(ic.FACE_FEATURES, ic.face_features(BACKS_ONLY, 16)))
    assert empty["has_face"] == 0 and empty["people_without_faces"] == 1 and empty["youngest_age"] == 1.0
    assert len(ic.face_features(EMPTY, 16)) == len(ic.FACE_FEATURES)


def test_threshold_reaches_the_target_recall_with_the_fewest_false_positives():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(100, int), np.zeros(300, int)]
    scores = np.clip(np.r_[rng.normal(0.6, 0.2, 100), rng.normal(0.3, 0.2, 300)], 0, 1)
    young = np.zeros(400, bool)
    young[:20] = True  # the face rule already catches 20 children
    uncertain = rng.random(400) < 0.2
    for policy in ic.UNCERTAIN_POLICIES:
        thresholds = ic.policy_thresholds(scores, labels, young, uncertain, policy, 0.9)
        got = ic.rates(ic.policy_exclusions(scores, young, uncertain, policy, thresholds), labels)
        assert got["recall"] >= 0.9
        higher = dict(thresholds, photo=thresholds["photo"] + 1e-6)  # any stricter cut misses the target
        assert ic.rates(ic.policy_exclusions(scores, young, uncertain, policy, higher), labels)["recall"] < 0.9
    fpr = {p: ic.rates(ic.policy_exclusions(scores, young, uncertain, p, ic.policy_thresholds(
        scores, labels, young, uncertain, p, 0.9)), labels)["fpr"] for p in ic.UNCERTAIN_POLICIES}
    assert fpr["strict"] <= fpr["classifier"] and fpr["strict"] <= fpr["exclude"]


def test_fitted_check_separates_what_it_learned_and_survives_saving(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(40, int), np.zeros(60, int)]
    features = rng.standard_normal((100, 16)) + labels[:, None] * 1.5
    faces = [CHILD_BESIDE_ADULT if i % 7 == 0 else ADULT if i % 3 else BACKS_ONLY for i in range(100)]
    check, oof = ic.fit_child_classifier(features, faces, labels, "fp", {"name": "x"}, child_age=16, c=1.0,
                                    target_recall=0.9)
    from sklearn.metrics import roc_auc_score

    assert oof.shape == (2, 100) and min(roc_auc_score(labels, s) for s in oof) > 0.9
    assert set(check.thresholds) == set(ic.UNCERTAIN_POLICIES) and "uncertain" in check.thresholds["strict"]
    check.save(tmp_path)
    loaded = ic.ChildClassifier.load(tmp_path, "classifier")
    assert loaded.policy == "classifier" and np.allclose(loaded.scores(features, faces), check.scores(features, faces))
    assert loaded.with_policy("strict").version == check.version
    with pytest.raises(WsenseError, match="at least 5 photos with children"):
        ic.fit_child_classifier(features[:10], faces[:10], np.r_[np.ones(2, int), np.zeros(8, int)], "fp", {},
                           child_age=16, c=1.0, target_recall=0.9)


def test_damaged_missing_or_foreign_check_files_are_clear_errors(tmp_path):
    with pytest.raises(WsenseError, match="image check not found.*wsense fit-check"):
        ic.ChildClassifier.load(tmp_path)
    path = tmp_path / ic.CHECK_FILE
    path.write_text("{broken")
    with pytest.raises(WsenseError, match="damaged image check"):
        ic.ChildClassifier.load(tmp_path)
    make_check().save(tmp_path)
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "analyzer": "faces-0"}))
    with pytest.raises(WsenseError, match="another face analysis"):
        ic.ChildClassifier.load(tmp_path)
    path.write_text(json.dumps({**stored, "coef": [1.0, 2.0]}))
    with pytest.raises(WsenseError, match="feature lengths differ"):
        ic.ChildClassifier.load(tmp_path)


def test_labels_come_from_matching_captions(shared_data):
    from wsense.data import load_data

    data = load_data(shared_data)
    labels = ic.child_photo_labels(data)
    assert labels[labels == 1].index.tolist() == ["1002_a2.jpg"]  # "A little girl in a pink dress ."
    assert ic.own_caption_labels(data).tolist() == [0, 1, 0]  # "Two boys play football ."


def test_face_analysis_of_a_generated_photo_is_cached_by_content(tmp_path):
    write_image(tmp_path / "noise.jpg", 0, (160, 200))
    cache = FaceCache(tmp_path / "cache")
    [(path, faces, why)] = analyze_photos([tmp_path / "noise.jpg"], cache, progress=False)
    assert why is None and (faces.width, faces.height) == (160, 200) and faces.faces == []
    reopened = FaceCache(tmp_path / "cache")
    assert json.loads(reopened.path.read_text())["version"] == ANALYZER_VERSION
    # Cached: no analyzer is needed (one that fails would be noticed).
    [(_, again, _)] = analyze_photos([tmp_path / "noise.jpg"], reopened, analyzer=object(), progress=False)
    assert again == faces


def test_unreadable_and_too_small_photos_are_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (20, 300)).save(tmp_path / "thin.png")
    cache = FaceCache(tmp_path / "cache")
    results = list(analyze_photos([tmp_path / "broken.jpg", tmp_path / "thin.png"], cache, skip_unreadable=True,
                                  progress=False))
    assert results[0][1] is None and "not a readable image" in results[0][2]
    assert results[1][1] is None and "photo too small to check (20x300 px" in results[1][2]
    with pytest.raises(WsenseError, match="thin.png: photo too small"):
        list(analyze_photos([tmp_path / "thin.png"], cache, progress=False))


def test_a_missing_face_detector_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # as if not installed
    with pytest.raises(WsenseError, match="pip install --no-deps facenet-pytorch==2.6.0"):
        FaceAnalyzer()


def test_missing_face_detector_weights_are_a_clear_error(monkeypatch, tmp_path):
    import facenet_pytorch

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pnet.pt").write_bytes(b"")
    monkeypatch.setattr(facenet_pytorch, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(WsenseError, match=r"face detector weights missing \(rnet.pt, onet.pt\).*--force-reinstall"):
        FaceAnalyzer()


def test_check_image_prints_one_json_line_per_photo(tmp_path, capsys, config_file):
    write_image(tmp_path / "a.jpg", 1, (120, 90))
    (tmp_path / "b.jpg").write_bytes(b"broken")
    code = main(["check-image", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "--config", str(config_file)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2  # one photo could not be checked
    assert lines[0]["image"].endswith("a.jpg") and lines[0]["child"] is False and lines[0]["faces"] == []
    assert set(lines[0]) >= {"image", "child", "reason", "faces", "score"}
    assert lines[1]["child"] is None and "not a readable image" in lines[1]["error"]


def test_checker_flags_photos_by_their_features(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"p{i}.jpg", 40 + i, (96, 96))
    checker = PhotoScreener.from_config(settings())
    paths = [tmp_path / f"p{i}.jpg" for i in range(3)]
    features = checker.features.images(paths)
    width = len(checker.check.coef)
    coef = np.concatenate([features[1] - features[[0, 2]].mean(0), np.zeros(width - features.shape[1])])
    logits = features @ coef[:features.shape[1]]
    check = make_check(coef=coef, intercept=-float(np.sort(logits)[1:].mean()))
    results = PhotoScreener(check, settings()).screen_photos(paths, progress=False)
    assert [r.verdict.child for r in results] == [False, True, False]
    assert results[1].to_dict()["reason"].startswith("photo classifier: child score")


def test_the_check_takes_the_leading_columns_of_a_frozen_model_whose_first_backbone_is_its_own():
    checker = PhotoScreener(make_check(), settings())
    model = settings()  # Lite0 and Lite2 side by side: the check's Lite0 features are the first 1,280 columns
    assert checker.shared_columns(model) == 1280
    model.training.mode = "partial"  # fine-tuned backbones: their features are no longer the check's
    assert checker.shared_columns(model) is None
    other = settings(image_backbone__image_size=256)  # another first backbone
    assert checker.shared_columns(other) is None


def _labels_file(path, rows):
    path.write_text("image,split,label,note,reviewers\n" + "".join(f"{r},note,H1\n" for r in rows), encoding="utf-8")
    return path


def test_the_check_is_fitted_on_labels_by_looking_without_the_unsure_photos(shared_data, tmp_path):
    from conftest import TRAIN_IMAGES, settings
    from wsense.safety.screener import training_photos

    rows = [f"{name},train,{label}" for name, label in zip(TRAIN_IMAGES, ["child", "adult", "unsure", "none"] * 9)]
    config = settings(data__dir=str(shared_data), safety__labels=str(_labels_file(tmp_path / "l.csv", rows)))
    _, paths, labels = training_photos(config)
    kept = [name for name, label in zip(TRAIN_IMAGES, ["child", "adult", "unsure", "none"] * 9) if label != "unsure"]
    assert [p.name for p in paths] == kept
    assert labels.tolist() == [int(r.split(",")[2] == "child") for r in rows if not r.endswith("unsure")]


@pytest.mark.parametrize("rows, why", [
    (["a.jpg,train,kid"], "row 2: label 'kid' is not one of child, adult, none, unsure"),
    (None, "not found"),
])
def test_photo_labels_errors_are_one_line(tmp_path, rows, why):
    path = tmp_path / "labels.csv"
    if rows is not None:
        _labels_file(path, rows)
    with pytest.raises(WsenseError, match=why) as error:
        ic.photo_labels(path)
    assert "\n" not in str(error.value)
