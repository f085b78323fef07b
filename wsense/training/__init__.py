"""Training the relevance model: data sets, inputs, losses, the Accelerate loop and checkpoints."""
from wsense.training.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
from wsense.training.loop import Trainer, TrainResult, train  # noqa: F401
