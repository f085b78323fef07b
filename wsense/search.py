"""Search: a query is checked by the legal filter, then ranked over a catalog of photos by the trained model.

First stage: cosine between the query's and the images' projected embeddings; the best `candidates` are
re-ranked by the fusion head, whose relevance in [0, 1] is the score shown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from wsense.data import IMAGE_EXTENSIONS
from wsense.errors import WsenseError
from wsense.safety import check_query
from wsense.safety.filters import allowed_catalog
from wsense.scoring import RelevanceScorer
from wsense.training import load_checkpoint

MAX_QUERY_CHARS = 500
DISCLAIMER = ("By law, images or descriptions of children under 16 cannot be shown without consent, so this "
              "query gets no results.")


@dataclass
class SearchResult:
    query: str
    refused: bool
    reason: str | None
    results: list[dict] = field(default_factory=list)  # {"image": path relative to the catalog, "score": float}

    def to_dict(self) -> dict:
        return {"query": self.query, "refused": self.refused, "reason": self.reason, "results": self.results}


def validate_query(query: str) -> str:
    if not query or not query.strip():
        raise WsenseError("empty query: describe the scene you are looking for")
    if len(query) > MAX_QUERY_CHARS:
        raise WsenseError(f"query too long: {len(query)} characters (at most {MAX_QUERY_CHARS})")
    return query


def catalog_files(root: Path) -> list[str]:
    """Image files under `root` (recursive), as sorted paths relative to it."""
    if not root.is_dir():
        raise WsenseError(f"{root}: image folder not found")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class SearchEngine:
    def __init__(self, checkpoint: str | Path, image_dir: str | Path, descriptions: pd.DataFrame | None = None,
                 candidates: int = 100, device: str = "cpu"):
        model, config, _ = load_checkpoint(checkpoint)
        self.root = Path(image_dir)
        self.scorer = RelevanceScorer(model, config.image_backbone.image_size, device)
        # Photos that any known description says show a child never enter the catalog.
        self.images = allowed_catalog(catalog_files(self.root), descriptions)
        if not self.images:
            raise WsenseError(f"{self.root}: no images to search (jpg, jpeg, png, webp)")
        self.embeddings = self.scorer.embed_images([self.root / name for name in self.images])
        self.candidates = candidates

    def search(self, query: str, top_k: int = 1) -> SearchResult:
        verdict = check_query(validate_query(query))
        if verdict.refused:
            return SearchResult(query, True, verdict.reason)
        v = self.scorer.embed_texts([query])
        cosine = (v @ self.embeddings.T)[0]
        shortlist = torch.topk(cosine, min(self.candidates, len(self.images))).indices
        relevance = self.scorer.relevance(v, self.embeddings[shortlist])[0]
        order = torch.argsort(relevance, descending=True)[:top_k]
        results = [{"image": self.images[int(shortlist[i])], "score": round(float(relevance[i]), 4)} for i in order]
        return SearchResult(query, False, None, results)
