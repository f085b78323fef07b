"""The photo screener (wsense/safety/screener.py): photos flagged by their features, the frozen features it shares
with a model, and fitting on the labels by looking."""
import numpy as np

from conftest import make_check, settings, write_image
from wsense.safety.screener import PhotoScreener


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


def test_a_missing_or_stale_check_is_the_shipped_one_else_fitted_on_first_use(tmp_path, monkeypatch, capsys):
    import json

    from wsense.safety import screener
    from wsense.safety.child_classifier import CHECK_FILE, ChildClassifier

    shipped = ChildClassifier.load(screener.shipped_check_dir())  # one of today's face analysis, or this fails
    fitted = []
    monkeypatch.setattr(screener, "fit_classifier_from_data",
                        lambda config: fitted.append(config) or make_check().save(config.safety.check))
    missing = settings(safety__check=str(tmp_path / "missing"))
    screener.load_or_fit_screener(missing)
    assert "no image check at" in capsys.readouterr().err and not fitted
    assert ChildClassifier.load(tmp_path / "missing").version == shipped.version

    stale = settings(safety__check=str(tmp_path / "stale"))
    make_check().save(tmp_path / "stale")
    stored = json.loads((tmp_path / "stale" / CHECK_FILE).read_text())
    (tmp_path / "stale" / CHECK_FILE).write_text(json.dumps({**stored, "analyzer": "faces-1:an-older-one"}))
    screener.load_or_fit_screener(stale)
    err = capsys.readouterr().err
    assert "fitted for an older face analysis: using the image check shipped with wsense" in err and not fitted

    current = settings(safety__check=str(tmp_path / "current"))
    make_check().save(tmp_path / "current")
    screener.load_or_fit_screener(current)
    assert not capsys.readouterr().err and ChildClassifier.load(tmp_path / "current").version == make_check().version

    monkeypatch.setattr(screener, "shipped_check_dir", lambda: tmp_path / "no-shipped-check")
    screener.load_or_fit_screener(settings(safety__check=str(tmp_path / "fit")))
    assert fitted and "fitting it now on the training photos" in capsys.readouterr().err


def test_faces_ahead_fills_the_face_cache_in_the_background_and_stops_when_told(tmp_path, monkeypatch):
    import time

    import wsense.safety.faces as faces_module
    import wsense.safety.screener as screener_module
    from wsense.io import file_sha256

    config = settings()
    config.cache_dir = str(tmp_path / "cache")
    checker = PhotoScreener(make_check(), config)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"p{i}.jpg")
        write_image(paths[-1], 60 + i, (96, 96))
    hashes = [file_sha256(path) for path in paths]
    ahead = checker.analyze_ahead(paths, hashes)
    deadline = time.monotonic() + 60
    while not all(key in checker.face_cache for key in hashes) and time.monotonic() < deadline:
        time.sleep(0.05)
    ahead.stop()
    assert all(key in checker.face_cache for key in hashes) and not ahead.thread.is_alive()
    # screen_photos finds them there: no analyzer is made (one would fail here)
    monkeypatch.setattr(faces_module, "shared_analyzer", None)
    assert [r.verdict is not None for r in checker.screen_photos(paths, hashes=hashes, progress=False)] == [True] * 2

    analysed = []

    def slow(paths, cache, **kwargs):  # one photo every 10 ms: 10 s for all of them
        for path in paths:
            analysed.append(path)
            yield path, None, None
            time.sleep(0.01)

    monkeypatch.setattr(screener_module, "analyze_photos", slow)
    ahead = screener_module.FacesAhead(checker.face_cache, [f"x{i}" for i in range(1000)],
                                       [f"k{i}" for i in range(1000)], lambda key, faces: False)
    while not analysed:
        time.sleep(0.001)
    ahead.stop()
    assert not ahead.thread.is_alive() and len(analysed) < 1000


def analyze_ahead(checker, paths, hashes):
    import time

    ahead, deadline = checker.analyze_ahead(paths, hashes), time.monotonic() + 60
    while not all(key in checker.face_cache for key in hashes) and time.monotonic() < deadline:
        time.sleep(0.02)
    ahead.stop()


def test_the_people_detector_runs_only_where_it_could_change_a_verdict(tmp_path, monkeypatch):
    import wsense.safety.faces as faces_module
    from wsense.io import file_sha256

    looked = []
    find_people = faces_module.FaceAnalyzer.find_people
    monkeypatch.setattr(faces_module.FaceAnalyzer, "find_people",
                        lambda self, image: looked.append(image.size) or find_people(self, image))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"p{i}.jpg")
        write_image(paths[-1], 70 + i, (160, 200))  # room for a standing figure: the detector would run
    hashes = [file_sha256(path) for path in paths]
    config = settings(cache_dir=str(tmp_path / "cache"))
    # Every photo scores about 0.0003: no person the detector could find would keep one out.
    checker = PhotoScreener(make_check(), config)
    features = checker.features.images(paths, hashes)
    checker.remember_features(hashes, features)  # as indexing does, before the faces analysed ahead need them
    analyze_ahead(checker, paths, hashes)
    results = checker.screen_photos(paths, hashes=hashes, progress=False)
    assert not looked and [r.verdict.child for r in results] == [False] * 3
    assert [r.to_dict()["people"] for r in results] == [None] * 3  # not looked for, and said so

    # Scores of 0.4, between the uncertain photos' threshold (0.3) and the others' (0.5), and no readable face:
    # a person found would make a photo uncertain and keep it out, so the detector runs on each, once.
    import wsense.safety.screener as screener_module

    for ahead, limit in ((True, 4096), (True, 1), (False, 4096)):
        looked.clear()
        monkeypatch.setattr(screener_module, "HANDED_LIMIT", limit)
        config = settings(cache_dir=str(tmp_path / f"cache-{ahead}-{limit}"))
        uncertain = PhotoScreener(make_check(intercept=float(np.log(0.4 / 0.6))), config)
        if ahead:  # decided beside the embedding from the features handed over, as many as are kept
            uncertain.remember_features(hashes, features)
            analyze_ahead(uncertain, paths, hashes)
            assert looked == [(160, 200)] * min(3, limit)
        results = uncertain.screen_photos(paths, hashes=hashes, progress=False)
        assert looked == [(160, 200)] * 3 and all(r.to_dict()["people"] is not None for r in results)
        uncertain.screen_photos(paths, hashes=hashes, progress=False)
        assert len(looked) == 3  # cached with the people found
