"""Trained checkpoints' evaluation (wsense/evaluation/trained.py): cross-validation checkpoints and their folds."""
from wsense.data import load_data
from wsense.models.checkpoint import load_checkpoint
from wsense.training import Trainer


def test_cross_validation_checkpoints_record_the_fold_they_never_saw(tiny_config):
    from wsense.evaluation.trained import cross_validate_training

    tiny_config.training.epochs = 1
    cross_validate_training(tiny_config)
    data = load_data(tiny_config.data.dir)
    held_out = []
    for fold in range(2):
        _, config, _ = load_checkpoint(f"{tiny_config.training.output_dir}/cv/fold{fold}/best")
        assert config.training.val_fold == fold
        held_out.append(set(Trainer(config, data).sets.val_pairs["image"]))
    assert held_out[0] and held_out[1] and not held_out[0] & held_out[1]
