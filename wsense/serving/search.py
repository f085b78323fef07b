"""Search: a query is checked by the legal filter, then ranked over an indexed catalog by the trained model.

The first stage scores photos by the cosine between the query's and the photos' projected embeddings (exact, or
FAISS for large catalogs), minus each photo's query-bank offset under `search.ranking: qb_cosine` (the default);
its order is the ranking, and the fusion head's relevance in [0, 1] is the score shown. Under `ranking: fusion`
the first stage shortlists `candidates` photos and the fusion head re-ranks them. Photos the legal filter keeps
out of the catalog never enter the first stage.
"""
from __future__ import annotations

import hashlib
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.models.checkpoint import model_fingerprint
from wsense.safety import check_query
from wsense.safety.checker import PhotoChecker, configured_check
from wsense.safety.image_check import CHECK_FILE
from wsense.serving.first_stage import FirstStage
from wsense.serving.index import CatalogIndex, update_index
from wsense.serving.scoring import RelevanceScorer

MAX_QUERY_CHARS = 500
DISCLAIMER = ("By law, images or descriptions of children under 16 cannot be shown without consent, so this "
              "query gets no results.")
DISCLAIMER_RU = ("По закону изображения и описания детей младше 16 лет нельзя показывать без согласия, поэтому "
                 "по этому запросу нет результатов.")


def disclaimer(query: str) -> str:
    """The refusal notice in the query's own language (Russian for a query in Cyrillic)."""
    return DISCLAIMER_RU if check_query(query).language == "ru" else DISCLAIMER


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


def default_index_dir(config: Config, image_dir: Path, fingerprint: str) -> Path:
    """One index per folder and model, in the cache: never inside the photographer's own folder."""
    key = hashlib.sha256(str(Path(image_dir).resolve()).encode()).hexdigest()[:12]
    return Path(config.cache_dir) / "indexes" / f"{Path(image_dir).name}-{key}-{fingerprint}"


@contextmanager
def torch_threads(n: int):
    """Run torch ops on `n` threads inside the block (torch's setting is process-wide: one query at a time)."""
    previous = torch.get_num_threads()
    if n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SearchEngine:
    """Search over the catalog under `image_dir`, indexed (incrementally) in `index_dir`."""

    def __init__(self, checkpoint: str | Path, image_dir: str | Path | None = None,
                 descriptions: pd.DataFrame | None = None, candidates: int | None = None,
                 index_dir: str | Path | None = None, rebuild: bool = False, device: str = "cpu",
                 settings: Config | None = None, checker: PhotoChecker | None = None):
        """`settings`: the user's config, for search and runtime settings (default: the built-in defaults); the
        model's own sections come from the checkpoint. `checker`: the image check run while indexing (default:
        the fitted check of safety.check)."""
        self.scorer = RelevanceScorer.from_checkpoint(checkpoint, settings, device)
        config = self.config = self.scorer.config
        fingerprint = model_fingerprint(checkpoint)
        if image_dir is None and index_dir is None:
            raise WsenseError("search needs an image folder or an index folder")
        if image_dir is not None and index_dir is None:
            index_dir = default_index_dir(config, Path(image_dir), fingerprint)
        self.index_dir = Path(index_dir)
        if image_dir is not None:
            checker = checker or PhotoChecker.from_config(config)
            self.index, report = update_index(image_dir, index_dir, self.scorer, fingerprint, checker,
                                              descriptions, rebuild=rebuild)
            print(report, file=sys.stderr)
        else:
            self.index = CatalogIndex.load(index_dir, fingerprint)
            self._warn_if_checked_by_another_check(checker, config)
        self.root = self.index.root
        rows = self.index.searchable
        self.images = [self.index.entries[i]["path"] for i in rows]
        if not self.images:
            raise WsenseError(f"{self.root}: no photos to search (jpg, jpeg, png, webp)")
        self.embeddings = torch.from_numpy(self.index.embeddings[rows])
        search = config.search
        self.ranking = search.ranking
        offsets = self.scorer.photo_offsets(self.index.embeddings[rows]) if self.ranking == "qb_cosine" else None
        self.first_stage = FirstStage(self.index.embeddings[rows], search.first_stage, search.faiss_threshold,
                                      search.faiss_nprobe, offsets=offsets)
        self.candidates = candidates or search.candidates
        # The fusion head's per-image terms, kept for an exactly searched catalog (a FAISS-sized one would need
        # two thirds of its embeddings' memory again; there they are computed for the shortlist per query).
        self.fusion_image_part = (self.scorer.fusion_image_part(self.embeddings)
                                  if self.first_stage.method == "exact" else None)
        self.query_threads = search.query_threads

    def _warn_if_checked_by_another_check(self, checker: PhotoChecker | None, config: Config) -> None:
        """An index opened as it is keeps its verdicts; say so when the configured check would give others."""
        if checker is not None:
            version = checker.version
        elif (Path(config.safety.check) / CHECK_FILE).is_file():
            version = configured_check(config).version
        else:
            return
        if {(entry.get("check") or {}).get("version") for entry in self.index.entries} - {version}:
            print(f"warning: {self.index_dir}: some photos were checked by another version of the image check than "
                  f"{version}; `wsense index {self.index.root} --index-dir {self.index_dir}` re-checks them",
                  file=sys.stderr)

    def shortlist(self, v: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The first stage's k best photos for the query embedding v: (catalog rows, their embeddings, their
        fusion image terms or None)."""
        if k >= len(self.images):  # every photo gets re-ranked: the first stage's order would not matter
            return torch.arange(len(self.images)), self.embeddings, self.fusion_image_part
        _, rows = self.first_stage.search(v.numpy(), k)
        rows = torch.from_numpy(rows[0][rows[0] >= 0])
        return rows, self.embeddings[rows], None if self.fusion_image_part is None else self.fusion_image_part[rows]

    def search(self, query: str, top_k: int = 1) -> SearchResult:
        verdict = check_query(validate_query(query))
        if verdict.refused:
            return SearchResult(query, True, verdict.reason)
        with torch_threads(self.query_threads):
            v = self.scorer.embed_texts([query])
            if self.ranking == "fusion":
                shortlist, embeddings, image_part = self.shortlist(v, max(self.candidates, top_k))
                relevance = self.scorer.relevance(v, embeddings, image_part)[0]
                order = torch.argsort(relevance, descending=True)[:top_k]
            else:  # the first stage's order is the ranking; the fusion relevance is the score shown
                _, rows = self.first_stage.search(v.numpy(), top_k)
                shortlist = torch.from_numpy(rows[0][rows[0] >= 0])
                image_part = None if self.fusion_image_part is None else self.fusion_image_part[shortlist]
                relevance = self.scorer.relevance(v, self.embeddings[shortlist], image_part)[0]
                order = torch.arange(len(shortlist))
        results = [{"image": self.images[int(shortlist[i])], "score": round(float(relevance[i]), 4)} for i in order]
        return SearchResult(query, False, None, results)
