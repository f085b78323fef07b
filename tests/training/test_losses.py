"""The training losses (wsense/training/losses.py)."""
import torch

from wsense.training.losses import contrastive_loss, regression_loss


def test_losses():
    targets, weights = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    assert regression_loss(torch.tensor([-5.0, 5.0]), targets, weights) < regression_loss(
        torch.tensor([5.0, -5.0]), targets, weights)
    # A pair weighted 0 does not count.
    assert regression_loss(torch.tensor([-5.0, -5.0]), targets, torch.tensor([1.0, 0.0])) < 0.01
    eye = torch.eye(4)
    scale = torch.tensor(2.0)
    aligned = contrastive_loss(eye, eye, torch.eye(4, dtype=torch.bool), scale)
    shuffled = contrastive_loss(eye, eye.roll(1, 0), torch.eye(4, dtype=torch.bool), scale)
    assert aligned < shuffled
    # Two captions of one image: both are positives of it, neither is a negative.
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.0, 1.0]]), dim=-1)
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, False], [False, True]])
    assert contrastive_loss(texts, images, mask, torch.tensor(3.0)) < 0.2
