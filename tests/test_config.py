from pathlib import Path

import pytest

from wsense.config import DATA_DIR_ENV, load_config
from wsense.errors import WsenseError


def test_default_config_loads_and_env_overrides_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    config = load_config()
    assert config.image_backbone.name == "efficientnet_lite0"
    assert config.data_dir == Path("../shared/data/with_sense")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    config = load_config()
    assert config.data_dir == tmp_path
    config.data.dir = str(tmp_path / "cli")  # what --data-dir does: it wins over the environment
    assert config.data_dir == tmp_path / "cli"


def test_partial_config_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("image_backbone:\n  name: resnet18\n  pretrained: false\n")
    config = load_config(path)
    assert config.image_backbone.name == "resnet18" and config.image_backbone.image_size == 224
    assert config.baselines.folds == 5


@pytest.mark.parametrize("text, message", [
    ("image_backbone:\n  nam: resnet18\n", "unknown key 'image_backbone.nam'"),
    ("data:\n  target: votes\n", "data.target must be one of"),
    ("data: [1, 2\n", "not valid YAML"),
    ("data: 3\n", "'data' must be a mapping"),
    ("search:\n  text_runtime: tensorrt\n", "search.text_runtime must be one of onnx, onnx_int8, torch"),
    ("embedding:\n  index_dtype: int8\n", "embedding.index_dtype must be one of float32, float16, int10"),
    ("search:\n  query_threads: 0\n", "search.query_threads must be a whole number from 1"),
    ("search:\n  query_cache: -1\n", "search.query_cache must be a whole number from 0"),
    ("search:\n  multilingual_gloss: 1.5\n", "search.multilingual_gloss must be a number from 0 to 1, got 1.5"),
    ("search:\n  multilingual_gloss: half\n", "search.multilingual_gloss must be a number from 0 to 1"),
    ("safety:\n  uncertain: allow\n", "safety.uncertain must be one of strict, exclude, classifier"),
    ("safety:\n  child_age: 0\n", "safety.child_age must be a whole number of years from 1 to 80"),
    ("safety:\n  target_recall: 1.5\n", "safety.target_recall must be in"),
    ("safety:\n  reviews: 3\n", "safety.reviews must be a file path or null"),
    ("search:\n  child_threshold: 0.6\n", "unknown key 'search.child_threshold'"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(WsenseError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(WsenseError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_the_milvus_deployment_settings_load_and_point_at_the_compose_files_server():
    import yaml

    folder = Path(__file__).resolve().parent.parent / "deploy" / "milvus"
    config = load_config(folder / "wsense.yaml")
    assert config.search.first_stage == "milvus" and config.search.milvus_collection is None
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text(encoding="utf-8"))
    milvus = compose["services"]["milvus"]
    port = config.search.milvus_uri.rsplit(":", 1)[1]
    assert f"{port}:19530" in milvus["ports"] and set(milvus["depends_on"]) == {"etcd", "minio"}
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
