"""The image check's classifier (wsense/safety/child_classifier.py): the rule around the faces, the fitted
classifier and its thresholds per policy, the check's file, and the photo labels, on hand-made faces."""
import json

import numpy as np
import pytest

from conftest import make_check
from wsense.errors import WsenseError
from wsense.safety import child_classifier as ic
from wsense.safety.faces import Face, PhotoFaces


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


@pytest.mark.parametrize("policy", ic.UNCERTAIN_POLICIES)
def test_people_are_looked_for_only_where_they_could_change_the_verdict(policy):
    import dataclasses

    rng = np.random.default_rng(0)
    width = 8 + len(ic.FACE_FEATURES)
    people = [ic.FACE_FEATURES.index(name) - len(ic.FACE_FEATURES) for name in ("people", "people_without_faces")]
    photos = [ADULT, TINY_FACE, EMPTY, CHILD_BESIDE_ADULT, PhotoFaces(400, 300, [face(30, (10, 10, 60, 70), 0.5)])]
    tested = could = 0
    for trial in range(50):
        coef = rng.normal(0, 0.3, width)
        coef[people] = rng.normal(0, 1.0, 2)  # either sign: a refitted check may count people either way
        check = make_check(coef=coef, intercept=float(rng.normal(-1, 1)), features=8,
                           thresholds={"photo": 0.5, "uncertain": 0.3}).with_policy(policy)
        features = rng.normal(0, 1, (len(photos), 8))
        unseen = [dataclasses.replace(photo, people=None) for photo in photos]
        flags = check.people_could_matter(features, unseen)
        assert not flags[3]  # a young face keeps the photo out, whoever else is in it
        for photo, flag, row in zip(unseen, flags, features):
            verdicts = {check.verdicts(row[None], [dataclasses.replace(photo, people=[([0, 0, 64, 128], 1.0)] * n)])[
                0].child for n in (0, 1, 2, 3, 50, 10_000)}
            tested += 1
            could += bool(flag)
            if not flag:  # the verdict without people is the verdict, whatever the detector finds
                assert verdicts == {check.verdicts(row[None], [photo])[0].child}
    assert 0 < could < tested / 2
    assert not check.people_could_matter(features[:1], [ADULT]).any()  # people already looked for


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


def _labels_file(path, rows):
    path.write_text("image,split,label,note,reviewers\n" + "".join(f"{r},note,H1\n" for r in rows), encoding="utf-8")
    return path


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
