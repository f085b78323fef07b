"""The search model shipped with wsense (wsense/models/shipped.py): complete, loadable, copied whole to where a
search looks for its checkpoint, and made from a trained checkpoint without the machine's own paths."""
import json

import pytest
import yaml

from wsense.errors import WsenseError
from wsense.models.checkpoint import load_checkpoint_config, model_fingerprint
from wsense.models.shipped import FILES, copy_shipped_model, ship, shipped_model_dir


def test_the_shipped_model_is_complete_and_copied_whole(tmp_path):
    assert sorted(path.name for path in shipped_model_dir().iterdir()) == sorted(FILES)
    copy = copy_shipped_model(tmp_path / "runs" / "final" / "best")
    assert sorted(path.name for path in copy.iterdir()) == sorted(FILES)
    assert model_fingerprint(copy) == model_fingerprint(shipped_model_dir())
    config = load_checkpoint_config(copy)
    assert config.training.mode == "frozen" and config.image_backbone.extra_backbones  # the product's tower
    assert not list(tmp_path.glob("runs/final/.*"))  # no half-copied folder left beside it


def test_shipping_a_checkpoint_leaves_out_its_exports_and_the_machines_paths(checkpoint, tmp_path):
    source = tmp_path / "best"
    source.mkdir()
    for name in FILES:
        if name == "config.yaml":
            config = yaml.safe_load((checkpoint / name).read_text())
            config["data"]["dir"] = "/home/someone/data/with_sense"
            (source / name).write_text(yaml.safe_dump(config))
        elif name in ("query_bank.npy", "text_map.npz"):
            (source / name).write_bytes(b"made by a search")
        else:
            (source / name).write_bytes((checkpoint / name).read_bytes())
    (source / "text_tower-abc.onnx").write_bytes(b"an export")
    shipped = ship(source, tmp_path / "package")
    assert sorted(path.name for path in shipped.iterdir()) == sorted(FILES)
    assert "dir" not in yaml.safe_load((shipped / "config.yaml").read_text())["data"]
    assert json.loads((shipped / "metadata.json").read_text()) == json.loads((checkpoint / "metadata.json").read_text())
    (source / "text_map.npz").unlink()
    with pytest.raises(WsenseError, match="text_map.npz missing"):
        ship(source, tmp_path / "elsewhere")


def test_a_search_without_a_checkpoint_starts_from_the_shipped_one(tmp_path, capsys):
    import argparse

    from conftest import settings
    from wsense.cli.commands import search_checkpoint

    target = tmp_path / "runs" / "final" / "best"
    found = search_checkpoint(argparse.Namespace(checkpoint=None), settings(search__checkpoint=str(target)))
    assert found == target and (target / "model.safetensors").is_file()
    assert "starting from the search model shipped with wsense" in capsys.readouterr().err
    assert search_checkpoint(argparse.Namespace(checkpoint=None), settings(search__checkpoint=str(target))) == target
    assert not capsys.readouterr().err  # there now: used as it is
