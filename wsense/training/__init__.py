"""Training the relevance model: data sets, inputs, losses and the Accelerate loop."""
from wsense.training.loop import Trainer, TrainResult, train  # noqa: F401
