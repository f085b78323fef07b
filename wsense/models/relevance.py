"""The relevance model: image and text towers, projections into one space, and a fusion head.

    image -> backbones -> pooled features f (side by side) ------> W_img f --+
                       \\-> ImageNet probabilities -> label bridge b -> W_txt b -+-> normalise -> u
    text  -> MiniLM -> mean-pooled sentence embedding t ----------> W_txt t ----> normalise -> v
    [u, v, u*v, |u-v|, u.v] -> fusion MLP -> logit -> sigmoid = relevance in [0, 1]

The label bridge already lives in the text space, so it goes through the text projection: at
initialisation (W_txt = identity, W_img = 0) the cosine u.v is exactly the training-free label bridge,
and training moves on from there. The cosine alone is the fast first stage of search; the fusion head
re-ranks.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wsense.config import Config, TextModelConfig
from wsense.models.image import ImageTower, Pixels, create_image_backbone
from wsense.models.label_bridge import imagenet_label_prompts
from wsense.models.text import TextEncoder, create_text_encoder


class FusionHead(nn.Module):
    """An MLP over [u, v, u*v, |u-v|, cos] with one logit per target: column 0 is the expert relevance,
    column 1 (with a crowd head) the crowd share."""

    def __init__(self, dim: int, hidden: int, dropout: float, outputs: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4 * dim + 1, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Logits (rows x outputs) of aligned rows of image and text embeddings."""
        cosine = (u * v).sum(-1, keepdim=True)
        return self.net(torch.cat([u, v, u * v, (u - v).abs(), cosine], dim=-1))

    def image_part(self, u: torch.Tensor) -> torch.Tensor:
        """The first layer's image-only terms (its u columns and its bias), one row per image: a catalog
        computes them once, and scoring a query against it skips them."""
        first = self.net[0]
        return u @ first.weight[:, :u.shape[-1]].T + first.bias

    def pair_logits(self, v: torch.Tensor, u: torch.Tensor, image_part: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (texts x images x outputs) of every text with every image: forward over all pairs, with the
        first layer split by input part so that only the pairwise terms (u*v, |u-v|, cos) are computed per pair
        (re-ranking a query's candidates: 0.6 of the time of forward on the concatenated pairs)."""
        first, d = self.net[0], u.shape[-1]
        if image_part is None:
            image_part = self.image_part(u)
        text_part = v @ first.weight[:, d:2 * d].T
        pairwise = torch.cat([v[:, None, :] * u[None], (u[None] - v[:, None, :]).abs()], dim=-1)
        hidden = (image_part[None] + text_part[:, None] + pairwise @ first.weight[:, 2 * d:4 * d].T
                  + (v @ u.T)[..., None] * first.weight[:, 4 * d])
        return self.net[1:](hidden)


class RelevanceModel(nn.Module):
    def __init__(self, config: Config, image_backbone: ImageTower, text_encoder: TextEncoder,
                 image_dim: int, text_dim: int, label_embeddings: torch.Tensor | None):
        super().__init__()
        model = config.model
        self.image_backbone = image_backbone
        self.text_encoder = text_encoder
        self.text_projection = nn.Linear(text_dim, model.embed_dim, bias=False)
        self.image_projection = nn.Linear(image_dim, model.embed_dim, bias=False)
        with torch.no_grad():
            if model.embed_dim == text_dim:
                self.text_projection.weight.copy_(torch.eye(text_dim))
            else:
                nn.init.orthogonal_(self.text_projection.weight)
            if model.label_bridge:
                self.image_projection.weight.zero_()
        if model.label_bridge:
            if label_embeddings is None:
                raise ValueError("label_bridge needs the text embeddings of the ImageNet label prompts")
            self.register_buffer("label_embeddings", F.normalize(label_embeddings.float(), dim=-1))
        else:
            self.label_embeddings = None
        self.feature_dropout = nn.Dropout(model.feature_dropout)
        self.fusion = FusionHead(model.embed_dim, model.fusion_hidden, model.dropout, 2 if model.crowd_head else 1)
        # CLIP's initial temperature: logits = exp(logit_scale) * cosine.
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))

    # -- towers -------------------------------------------------------------------------------------
    def image_features(self, images: Pixels) -> torch.Tensor:
        return self.image_backbone(images)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)

    # -- shared space -------------------------------------------------------------------------------
    def embed_image(self, features: torch.Tensor, label_probabilities: torch.Tensor | None = None) -> torch.Tensor:
        """Projected, L2-normalised image embedding from pooled backbone features."""
        projected = self.image_projection(self.feature_dropout(features))
        if self.label_embeddings is not None:
            if label_probabilities is None:
                label_probabilities = self.image_backbone.label_probabilities(features)
            bridge = F.normalize(label_probabilities.to(self.label_embeddings.dtype) @ self.label_embeddings, dim=-1)
            projected = projected + self.text_projection(bridge.to(projected.dtype))
        return F.normalize(projected, dim=-1)

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(features), dim=-1)

    def fuse(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Fusion logit for aligned rows of image and text embeddings: the expert relevance, or per row the
        output `target` names (0 expert, 1 crowd; crowd falls back to expert without a crowd head)."""
        logits = self.fusion(u, v)
        if target is None or logits.shape[1] == 1:
            return logits[:, 0]
        return logits.gather(1, target.long().unsqueeze(1)).squeeze(1)

    def encode_images(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Image embeddings from pixels, or from cached tower outputs (frozen mode)."""
        if "image_features" in batch:
            return self.embed_image(batch["image_features"], batch.get("label_probabilities"))
        return self.embed_image(self.image_features(batch["pixels"]))

    def encode_texts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Text embeddings from tokens, or from cached tower outputs (frozen mode)."""
        if "text_features" in batch:
            return self.embed_text(batch["text_features"])
        return self.embed_text(self.text_features(batch["input_ids"], batch["attention_mask"]))

    def forward(self, images: dict[str, torch.Tensor], texts: dict[str, torch.Tensor], n_pairs: int,
                target: torch.Tensor | None = None):
        """Embeddings of all images and texts, and fusion logits of the first `n_pairs` aligned rows
        (for each row the output `target` names, see fuse)."""
        u, v = self.encode_images(images), self.encode_texts(texts)
        return u, v, self.fuse(u[:n_pairs], v[:n_pairs], target)

    @staticmethod
    def relevance(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    @torch.no_grad()
    def relevance_matrix(self, v: torch.Tensor, u: torch.Tensor, image_part: torch.Tensor | None = None,
                         chunk: int = 64) -> torch.Tensor:
        """Fusion (expert) relevance in [0, 1] of every text (rows of v) with every image (rows of u);
        `image_part`: the fusion head's image_part(u), where a catalog keeps it."""
        if image_part is None:
            image_part = self.fusion.image_part(u)
        rows = [self.fusion.pair_logits(part, u, image_part)[..., 0].float() for part in v.split(chunk)]
        return torch.sigmoid(torch.cat(rows)) if rows else torch.zeros(0, len(u))

    # -- parameter groups -----------------------------------------------------------------------------
    def head_parameters(self) -> list[nn.Parameter]:
        towers = {id(p) for p in self.image_backbone.parameters()} | {id(p) for p in self.text_encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in towers]

    def tower_parameters(self) -> list[nn.Parameter]:
        """The towers' trainable parameters (none in frozen mode)."""
        return [p for m in (self.image_backbone, self.text_encoder) for p in m.parameters() if p.requires_grad]


# (name, path, max_length) of a pretrained text model -> its ImageNet label embeddings, computed once a process.
_LABEL_EMBEDDINGS: dict[tuple, torch.Tensor] = {}


def pretrained_label_embeddings(text_encoder: TextEncoder, config: TextModelConfig) -> torch.Tensor:
    """The 1,000 ImageNet label prompts through a freshly made text tower (a private copy). Pretrained towers of one
    text model give the same embeddings, so they are computed once a process: they take seconds, and
    cross-validation builds a model per fold."""
    key = (config.name, config.path, config.max_length)
    if config.pretrained and key in _LABEL_EMBEDDINGS:
        return _LABEL_EMBEDDINGS[key].clone()
    prompts = imagenet_label_prompts()
    embeddings = torch.cat([text_encoder.encode(prompts[i:i + 250]) for i in range(0, len(prompts), 250)])
    if config.pretrained:
        _LABEL_EMBEDDINGS[key] = embeddings.clone()
    return embeddings


def build_relevance_model(config: Config, *, for_checkpoint: bool = False) -> RelevanceModel:
    """The model a config describes: towers with their pretrained weights, heads freshly initialised.

    The label bridge's label embeddings come from the pretrained text tower; `for_checkpoint` skips that
    work when a checkpoint will overwrite them anyway.
    """
    image_backbone = create_image_backbone(config.image_backbone)
    text_encoder = create_text_encoder(config.text_model)
    label_embeddings = None
    if config.model.label_bridge:
        if for_checkpoint:
            label_embeddings = torch.zeros(image_backbone.num_classes, text_encoder.dim)
        else:
            label_embeddings = pretrained_label_embeddings(text_encoder, config.text_model)
    # The heads' first weights come from the training seed alone, whatever drew random numbers before in this
    # process. Building a backbone draws some, so a fold trained in a process that had built one before (the later
    # folds of cross-validation, the tests' shared backbones) started from other weights than a fresh run did.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        return RelevanceModel(config, image_backbone, text_encoder, image_backbone.num_features, text_encoder.dim,
                              label_embeddings)
