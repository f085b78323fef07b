"""The grid re-rank head of experiments/grid_rerank.py: stored grid cells, and a SCAN-like cross-attention score.

Storage: each backbone's grid (cells x 1,280) is reduced by a PCA fitted on the fold's training photos to `width`
dimensions and stored as int8 with one float32 scale per photo and backbone (symmetric, the photo's largest
absolute value -> 127); the head sees the de-quantised values, so what it scores is what an index would hold.

Head (one layer of stacked cross-attention both ways, SCAN's t2i and i2t, Lee et al. 2018):
    cells  c_j = norm(W_b x_j + p_j)   (per backbone b a projection W_b and a learned position embedding p)
    tokens w_i = norm(W_t h_i)          (h: MiniLM's last hidden states of the query)
    t2i: each token attends over the cells (softmax of lambda * cos), score = mean over tokens of cos(w_i, a_i)
    i2t: each cell attends over the tokens, score = mean over cells of cos(c_j, a_j)
    logits = linear([t2i, i2t]): column 0 the expert relevance, column 1 the crowd share (as the fusion head)
Dropout on cells and tokens before the projections.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def fit_pca(grid: np.ndarray, width: int, rows: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (1280 x width)) of the cells of `grid` (photos x cells x channels), from a sample."""
    cells = grid.reshape(-1, grid.shape[-1])
    pick = np.random.default_rng(seed).choice(len(cells), min(rows, len(cells)), replace=False)
    sample = cells[np.sort(pick)].astype(np.float32)
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    return mean, vt[:width].T.copy()


def project_int8(grid: np.ndarray, mean: np.ndarray, components: np.ndarray, chunk: int = 128
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes photos x cells x width, float32 scale per photo): what an index stores."""
    codes = np.zeros((len(grid), grid.shape[1], components.shape[1]), np.int8)
    scales = np.zeros(len(grid), np.float32)
    for start in range(0, len(grid), chunk):
        part = (grid[start:start + chunk].astype(np.float32) - mean) @ components
        scale = np.abs(part).reshape(len(part), -1).max(1) / 127.0 + 1e-12
        codes[start:start + chunk] = np.round(part / scale[:, None, None]).astype(np.int8)
        scales[start:start + chunk] = scale
    return codes, scales


def dequantise(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scales[:, None, None]


def bytes_per_photo(cells: list[int], width: int) -> int:
    return sum(c * width + 4 for c in cells)


class GridHead(nn.Module):
    """Scores a query's tokens against a photo's stored cells. The cells stay in their stored (PCA) space, scaled
    per dimension and backbone and given a learned position embedding; the tokens are projected into that space."""

    def __init__(self, width: int, cells: list[int], text_dim: int = 384, dropout: float = 0.2, outputs: int = 2):
        super().__init__()
        self.cells = cells
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(width)) for _ in cells)
        self.positions = nn.ParameterList(nn.Parameter(torch.zeros(c, width)) for c in cells)
        self.text_projection = nn.Linear(text_dim, width)
        self.dropout = nn.Dropout(dropout)
        self.log_lambda = nn.Parameter(torch.tensor(float(np.log(9.0))))  # SCAN's softmax temperature
        self.out = nn.Linear(2, outputs)
        with torch.no_grad():
            self.out.weight.fill_(5.0)
            self.out.bias.fill_(-2.0)

    def encode_cells(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """(photos, cells of every backbone, width), unit rows."""
        parts = [self.dropout(grid) * scale + position
                 for scale, position, grid in zip(self.scales, self.positions, grids)]
        return F.normalize(torch.cat(parts, 1), dim=-1)

    def encode_tokens(self, states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.dropout(states)), dim=-1)

    def _scores(self, sim, mask, t2i_attended, token_gram):
        """[t2i, i2t] (..., 2) from sim (..., tokens, cells) of unit vectors. cos(x, sum_k a_k y_k) is
        (sum_k a_k x.y_k) / |sum_k a_k y_k|; the norms come from `t2i_attended(a)` (the tokens' attended cell
        vectors) and `token_gram(b)` (Gram matrix of the tokens times the cells' attention over them)."""
        lam = self.log_lambda.exp()
        m = mask.to(sim.dtype)
        a = torch.softmax(lam * sim, -1)  # tokens attend over cells
        t2i_token = (a * sim).sum(-1) / t2i_attended(a).norm(dim=-1).clamp(min=1e-6)
        t2i = (t2i_token * m).sum(-1) / m.sum(-1).clamp(min=1)
        b = torch.softmax((lam * sim).masked_fill(~mask.unsqueeze(-1), float("-inf")), -2)  # cells over tokens
        norm = (b * token_gram(b)).sum(-2).clamp(min=1e-12).sqrt()
        i2t = ((b * sim).sum(-2) / norm).mean(-1)
        return torch.stack([t2i, i2t], -1)

    def pair_logits(self, states: torch.Tensor, mask: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        """Logits (pairs, outputs) of aligned rows: token states (pairs, tokens, 384) with mask, grids per backbone."""
        w, c = self.encode_tokens(states), self.encode_cells(grids)
        sim = w @ c.transpose(1, 2)  # (b, l, c)
        gram = w @ w.transpose(1, 2)  # (b, l, l)
        return self.out(self._scores(sim, mask, lambda a: a @ c, lambda b: gram @ b))

    def all_logits(self, states: torch.Tensor, mask: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        """Logits (texts, images, outputs) of every text with every image."""
        w, c = self.encode_tokens(states), self.encode_cells(grids)
        sim = torch.einsum("tld,icd->tilc", w, c)
        gram = (w @ w.transpose(1, 2))[:, None]  # (t, 1, l, l)
        return self.out(self._scores(sim, mask[:, None, :].expand(-1, len(c), -1), lambda a: a @ c[None],
                                     lambda b: gram @ b))
