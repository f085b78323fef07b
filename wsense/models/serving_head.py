"""The relevance model's heads in numpy: what search computes after the towers, without torch.

The same arithmetic as wsense.models.relevance in eval mode (dropout off): the image projection and the label bridge
make a photo's embedding from its pooled features, and the fusion head's relevance of a text to a photo is its MLP
over [u, v, u*v, |u-v|, u.v], the first layer split by input part as FusionHead.pair_logits does. Results agree with
the torch model's within float32 rounding (tests/models/test_serving_head.py). The arrays come from a torch model
once (head_arrays) and are kept beside the checkpoint (wsense.models.serving).
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from wsense.errors import WsenseError

FUSION_LAYERS = (0, 3, 6)  # the Linear layers of FusionHead.net (GELU and Dropout between them)


def head_arrays(model) -> dict[str, np.ndarray]:
    """The arrays ServingHead needs, from a torch RelevanceModel (its backbones' ImageNet classifiers included: in a
    frozen-mode checkpoint they come from the pretrained weights, which only torch reads)."""
    def array(tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()

    arrays = {"text_projection": array(model.text_projection.weight),
              "image_projection": array(model.image_projection.weight)}
    if model.label_embeddings is not None:
        arrays["label_embeddings"] = array(model.label_embeddings)
        for i, backbone in enumerate(model.image_backbone.backbones):
            classifier = backbone.model.get_classifier()
            arrays[f"classifier.{i}.weight"] = array(classifier.weight)
            arrays[f"classifier.{i}.bias"] = array(classifier.bias)
    for n, layer in enumerate(FUSION_LAYERS):
        arrays[f"fusion.{n}.weight"] = array(model.fusion.net[layer].weight)
        arrays[f"fusion.{n}.bias"] = array(model.fusion.net[layer].bias)
    return arrays


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact GELU, x Phi(x)."""
    return x * np.float32(0.5) * (np.float32(1) + erf(x * np.float32(1 / np.sqrt(2))))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), np.float32(1e-12))


class ServingHead:
    """Projections, label bridge and fusion head as float32 arrays (names as head_arrays writes them)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        try:
            self.text_projection = np.asarray(arrays["text_projection"], np.float32)
            self.image_projection = np.asarray(arrays["image_projection"], np.float32)
            self.layers = [(np.asarray(arrays[f"fusion.{n}.weight"], np.float32),
                            np.asarray(arrays[f"fusion.{n}.bias"], np.float32)) for n in range(len(FUSION_LAYERS))]
        except KeyError as missing:
            raise WsenseError(f"serving head without {missing}") from None
        self.label_embeddings = arrays.get("label_embeddings")
        self.classifiers = []
        while f"classifier.{len(self.classifiers)}.weight" in arrays:
            i = len(self.classifiers)
            self.classifiers.append((arrays[f"classifier.{i}.weight"], arrays[f"classifier.{i}.bias"]))
        if self.label_embeddings is not None and not self.classifiers:
            raise WsenseError("serving head with a label bridge but no ImageNet classifier")

    @property
    def dim(self) -> int:
        return self.text_projection.shape[0]

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Projected, unit-length photo embeddings (n, dim) from pooled features (n, image features), as
        RelevanceModel.embed_image."""
        features = np.asarray(features, np.float32)
        projected = features @ self.image_projection.T
        if self.label_embeddings is not None:
            widths = np.cumsum([weight.shape[1] for weight, _ in self.classifiers])[:-1]
            parts = np.split(features, widths, axis=-1)
            probabilities = np.mean([_softmax(part @ weight.T + bias)
                                     for part, (weight, bias) in zip(parts, self.classifiers)], axis=0)
            bridge = _unit(probabilities.astype(np.float32) @ self.label_embeddings)
            projected = projected + bridge @ self.text_projection.T
        return _unit(projected)

    def image_part(self, u: np.ndarray) -> np.ndarray:
        """The fusion head's per-image terms of its first layer (FusionHead.image_part): computed once for a catalog."""
        weight, bias = self.layers[0]
        return np.asarray(u, np.float32) @ weight[:, :u.shape[-1]].T + bias

    def relevance(self, v: np.ndarray, u: np.ndarray, image_part: np.ndarray | None = None,
                  chunk: int = 64) -> np.ndarray:
        """Expert relevance in [0, 1] of every text (rows of v) with every image (rows of u), texts x images, as
        RelevanceModel.relevance_matrix; `image_part`: image_part(u), where a catalog keeps it."""
        v, u = np.asarray(v, np.float32), np.asarray(u, np.float32)
        if image_part is None:
            image_part = self.image_part(u)
        (first, _), d = self.layers[0], u.shape[-1]
        pairwise_weight = first[:, 2 * d:4 * d].T
        rows = []
        for start in range(0, len(v), chunk):
            part = v[start:start + chunk]
            text_part = part @ first[:, d:2 * d].T
            pairwise = np.concatenate([part[:, None, :] * u[None], np.abs(u[None] - part[:, None, :])], axis=-1)
            hidden = (image_part[None] + text_part[:, None] + pairwise @ pairwise_weight
                      + (part @ u.T)[..., None] * first[:, 4 * d])
            for weight, bias in self.layers[1:]:
                hidden = _gelu(hidden) @ weight.T + bias
            rows.append(hidden[..., 0])
        logits = np.concatenate(rows) if rows else np.zeros((0, len(u)), np.float32)
        return (np.float32(1) / (np.float32(1) + np.exp(-logits))).astype(np.float32)
