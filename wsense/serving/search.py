"""Search: a query is checked by the legal filter, then ranked over an indexed catalog by the trained model.

The first stage scores photos by the cosine between the query's and the photos' projected embeddings (exact, or
FAISS for large catalogs), minus each photo's query-bank offset under `search.ranking: qb_cosine` (the default);
its order is the ranking, and the fusion head's relevance in [0, 1] is the score shown. Under `ranking: fusion`
the first stage shortlists `candidates` photos and the fusion head re-ranks them. Photos the legal filter keeps
out of the catalog never enter the first stage.
"""
from __future__ import annotations

import hashlib
import posixpath
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.models.checkpoint import model_fingerprint
from wsense.safety import check_query
from wsense.safety.checker import PhotoChecker, configured_check
from wsense.safety.image_check import CHECK_FILE
from wsense.safety.rules import language_of, normalize
from wsense.serving.first_stage import FirstStage
from wsense.serving.index import CatalogIndex, IndexReport, update_index
from wsense.serving.metadata import PhotoFilter, unknown_metadata
from wsense.serving.scoring import RelevanceScorer

MAX_QUERY_CHARS = 500
DISCLAIMER = ("By law, images or descriptions of children under 16 cannot be shown without consent, so this "
              "query gets no results.")
DISCLAIMER_RU = ("По закону изображения и описания детей младше 16 лет нельзя показывать без согласия, поэтому "
                 "по этому запросу нет результатов.")


class UnknownPhoto(WsenseError):
    """A photo name that is no photo of the catalog (a 404 for the API)."""


def disclaimer(query: str) -> str:
    """The refusal notice in the query's own language (Russian for a query in Cyrillic)."""
    return DISCLAIMER_RU if language_of(normalize(query)) == "ru" else DISCLAIMER


def reason_label(query: str) -> str:
    """"Reason" in the query's own language, before the refusal's reason (which is in it already)."""
    return "Причина" if language_of(normalize(query)) == "ru" else "Reason"


@dataclass
class SearchResult:
    query: str
    refused: bool
    reason: str | None
    results: list[dict] = field(default_factory=list)  # {"image": path relative to the catalog, "score": float}
    total: int = 0  # photos that qualify: all those the filters allow, or those scoring from min_score up
    total_exact: bool = True  # False where only the first stage's best photos were scored against min_score
    offset: int = 0
    like: str | None = None  # the example photo
    negatives: list[str] = field(default_factory=list)
    filters: dict = field(default_factory=dict)  # the PhotoFilter applied, as given
    score: str = "relevance"  # what a result's score is: the fusion head's relevance to the query text, or, for an
    # example photo alone, its cosine similarity to the example

    def to_dict(self) -> dict:
        return {"query": self.query, "refused": self.refused, "reason": self.reason, "results": self.results,
                "total": self.total, "total_exact": self.total_exact, "offset": self.offset, "like": self.like,
                "negatives": self.negatives, "filters": self.filters, "score": self.score}


@dataclass
class SearchRequest:
    """What to search for: a query text, an example photo (`like`: a catalog photo's name, or an Example), or both,
    away from the `negatives` texts; results offset..offset+top_k of the ranking, those scoring below `min_score`
    left out. The legal filter checks every text; an example it keeps out is refused like a child query."""
    query: str = ""
    top_k: int = 1
    offset: int = 0
    min_score: float | None = None
    like: "str | Example | None" = None
    negatives: Sequence[str] = ()
    like_weight: float = 1.0
    negative_weight: float = 0.5
    filters: PhotoFilter | None = None  # subfolder, orientation, camera, lens, dates taken

    @property
    def texts(self) -> list[str]:
        return ([self.query] if self.query else []) + list(self.negatives)


class Example(NamedTuple):
    """The photo a "more like this" search starts from: its embedding and, for a catalog photo, its row (left out
    of the results)."""
    name: str
    vector: torch.Tensor
    row: int | None = None


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
                 settings: Config | None = None, checker: PhotoChecker | None = None, photo_batches=None):
        """`settings`: the user's config, for search and runtime settings (default: the built-in defaults); the
        model's own sections come from the checkpoint. `checker`: the image check run while indexing (default:
        the fitted check of safety.check). `photo_batches`: what embeds new photos (default: this process; see
        wsense.serving.ray_index)."""
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
            index, report = update_index(image_dir, index_dir, self.scorer, fingerprint, checker,
                                         descriptions, rebuild=rebuild, photo_batches=photo_batches)
            print(report, file=sys.stderr)
        else:
            index = CatalogIndex.load(index_dir, fingerprint)
        self.checker = checker
        self.candidates = candidates or config.search.candidates
        self.ranking = config.search.ranking
        self.query_threads = config.search.query_threads
        self.duplicate_threshold = config.search.duplicate_threshold
        self.fingerprint, self.descriptions, self.image_dir = fingerprint, descriptions, image_dir
        self.photo_batches = photo_batches
        # Searches hold `_lock` while they run, and a new catalog replaces the old one under it: a search sees one
        # catalog from start to end. `_photo_lock`: one thread at a time runs the image tower and the image check
        # (a refresh of the catalog, an uploaded example).
        self._lock, self._photo_lock = threading.RLock(), threading.Lock()
        self.catalog = self._ready(index)
        if image_dir is None:
            self._warn_if_checked_by_another_check(checker, config)
        if not self.images:
            raise WsenseError(f"{self.root}: no photos to search (jpg, jpeg, png, webp)")

    def _ready(self, index: CatalogIndex) -> "_Catalog":
        """The searchable part of an index, with what every search needs of it computed once."""
        rows = index.searchable
        images = [index.entries[i]["path"] for i in rows]
        vectors = index.embeddings[rows]
        offsets = self.scorer.photo_offsets(vectors) if self.ranking == "qb_cosine" and len(rows) else None
        search = self.config.search
        if search.first_stage == "milvus":
            from wsense.serving.milvus_store import MilvusFirstStage, collection_name

            first_stage = MilvusFirstStage(search.milvus_uri or str(Path(self.config.cache_dir) / "milvus.db"),
                                           search.milvus_collection or collection_name(self.index_dir.resolve()),
                                           self.fingerprint, index.entries, index.embeddings, rows, offsets,
                                           search.faiss_threshold, search.faiss_nprobe)
        else:
            first_stage = FirstStage(vectors, search.first_stage, search.faiss_threshold, search.faiss_nprobe,
                                     offsets=offsets)
        embeddings = torch.from_numpy(vectors)
        return _Catalog(
            index, images, {name: row for row, name in enumerate(images)},
            [index.entries[i].get("meta") or unknown_metadata(images[n]) for n, i in enumerate(rows)],
            {index.entries[i]["path"]: index.entries[i]["sha256"] for i in rows},
            {entry["path"] for entry in index.excluded}, embeddings, first_stage,
            # The fusion head's per-image terms, kept for an exactly searched catalog (a FAISS-sized one would need
            # two thirds of its embeddings' memory again; there they are computed for the shortlist per query).
            self.scorer.fusion_image_part(embeddings) if first_stage.method == "exact" and len(rows) else None)

    def refresh(self) -> IndexReport:
        """Bring the catalog up to date with its folder (what `wsense serve --watch` does on every change): new and
        changed photos are embedded and go through the legal filter and the image check, the index is saved
        atomically, and only then does the new catalog replace the old one, between two searches. A catalog
        opened from an index folder alone has no folder to follow."""
        if self.image_dir is None:
            raise WsenseError(f"{self.index_dir}: opened without its image folder; nothing to refresh from")
        with self._photo_lock:
            if self.checker is None:
                self.checker = PhotoChecker.from_config(self.config)
            index, report = update_index(self.image_dir, self.index_dir, self.scorer, self.fingerprint, self.checker,
                                         self.descriptions, photo_batches=self.photo_batches)
            catalog = self._ready(index)
        with self._lock:
            self.catalog = catalog
        return report

    # The current catalog's parts (a search reads them under `_lock`, so all from the same catalog).
    index = property(lambda self: self.catalog.index, doc="the index searched")
    root = property(lambda self: self.catalog.index.root, doc="the catalog folder")
    images = property(lambda self: self.catalog.images, doc="the searchable photos' names, one per row")
    embeddings = property(lambda self: self.catalog.embeddings, doc="their embeddings (rows x dim)")
    metadata = property(lambda self: self.catalog.metadata, doc="their metadata (wsense.serving.metadata)")
    sha256 = property(lambda self: self.catalog.sha256, doc="name -> content hash of every searchable photo")
    first_stage = property(lambda self: self.catalog.first_stage)
    fusion_image_part = property(lambda self: self.catalog.fusion_image_part)

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

    # -- what a search starts from ------------------------------------------------------------------
    def example(self, name: str) -> Example | str:
        """The catalog photo `name` as the example of a "more like this" search, or why it may not be one (the
        legal filter keeps it out); a name that is no photo of this catalog is an error."""
        key = posixpath.normpath(str(name).replace("\\", "/")) if name else ""
        row = self.catalog.row_of.get(key)
        if row is not None:
            return Example(key, self.embeddings[row], row)
        if key in self.catalog.excluded:
            return "the example photo is kept out by the legal filter"
        raise UnknownPhoto(f"{name}: not a photo of this catalog")

    def uploaded_example(self, path: str | Path, name: str = "upload") -> Example | str:
        """A photo from outside the catalog (an upload) as an example: the image check looks at it first, and a photo
        it keeps out is refused like a child query. Nothing of it is kept (no cache entry, no index row)."""
        with self._photo_lock:
            if self.checker is None:
                self.checker = PhotoChecker.from_config(self.config)
            check = self.checker.check_transient(path)
            if check.verdict.child:
                return f"image check: {check.verdict.reason}"
            _, u, _ = self.scorer.embed_photos([path], progress=False)
        return Example(name, u[0])

    # -- search -------------------------------------------------------------------------------------
    def search(self, query: str = "", top_k: int = 1, **options) -> SearchResult:
        """The photos of the catalog for a query text, an example photo, or both (see SearchRequest for the
        options); a bad request is a WsenseError."""
        result = self.search_many([SearchRequest(query, top_k, **options)])[0]
        if isinstance(result, WsenseError):
            raise result
        return result

    def search_many(self, requests: Sequence["SearchRequest"]) -> list[SearchResult | WsenseError]:
        """One result per request, in order, or the WsenseError that names what is wrong with it. The query texts
        of all requests go through the text tower together, in one batch: what a server does with the queries that
        arrive at the same moment."""
        with self._lock:
            return self._search_many(requests)

    def _search_many(self, requests: Sequence["SearchRequest"]) -> list[SearchResult | WsenseError]:
        prepared: list[tuple[SearchRequest, SearchResult, Example | None] | None] = []
        results: list[SearchResult | WsenseError | None] = []
        for request in requests:
            try:
                result, example = self._prepare(request)
            except WsenseError as error:
                results.append(error)
                prepared.append(None)
                continue
            results.append(result)
            prepared.append(None if result.refused else (request, result, example))
        texts = [text for item in prepared if item for text in item[0].texts]
        with torch_threads(self.query_threads):
            vectors = iter(self.scorer.embed_texts(texts)) if texts else iter(())
            ranked = [(item, self._plan(*item, [next(vectors) for _ in item[0].texts])) for item in prepared if item]
            for ((request, result, _), plan), (rows, scores, searched, folded) in zip(
                    ranked, self._ranked([plan for _, plan in ranked])):
                offset, top_k = request.offset, request.top_k
                # Without a cut-off every photo the filters allow qualifies; with one, those scored count.
                everything = len(self.images) if plan.allowed is None else int(plan.allowed.sum())
                everything -= plan.exclude is not None and (plan.allowed is None or bool(plan.allowed[plan.exclude]))
                if plan.min_score is not None:  # those scored from the cut-off up
                    result.total = len(rows)
                elif self.duplicate_threshold is not None:  # the photos not searched may fold too: an estimate
                    result.total = len(rows) + everything - min(searched, everything)
                else:
                    result.total = everything
                result.total_exact = searched >= len(self.images) or (
                    plan.min_score is None and self.duplicate_threshold is None)
                result.results = [self._item(row, score, similar) for row, score, similar in zip(
                    rows[offset:offset + top_k], scores[offset:offset + top_k], folded[offset:offset + top_k])]
        return results

    def _prepare(self, request: "SearchRequest") -> tuple[SearchResult, Example | None]:
        """Check a request: its result, refused by the legal filter where a text or the example is, and its example."""
        query, like = request.query, request.like
        negatives = [validate_query(text) for text in request.negatives]
        if like is None or query:
            validate_query(query)
        check_paging(request.top_k, request.offset, request.min_score)
        result = SearchResult(query, False, None, offset=request.offset,
                              like=like.name if isinstance(like, Example) else like, negatives=negatives,
                              filters=request.filters.to_dict() if request.filters else {},
                              score="relevance" if query else "similarity")
        for text in request.texts:
            verdict = check_query(text)
            if verdict.refused:
                result.refused, result.reason = True, verdict.reason
                return result, None
        example = self.example(like) if isinstance(like, str) else like
        if isinstance(example, str):
            result.refused, result.reason = True, example
            return result, None
        return result, example

    def _plan(self, request: "SearchRequest", result: SearchResult, example: Example | None,
              vectors: list[torch.Tensor]) -> "_Plan":
        """How to rank for a request, from the embeddings of its texts (the query's first, where it has one)."""
        v = vectors[0][None] if request.query else None
        negatives = vectors[1:] if request.query else vectors
        direction = v[0] if v is not None else torch.zeros(self.embeddings.shape[1])
        if example is not None:
            direction = direction + request.like_weight * example.vector
        for negative in negatives:
            direction = direction - request.negative_weight * negative
        rerank = self.ranking == "fusion" and example is None and not negatives
        exclude = example.row if example is not None else None
        needed, min_score = request.offset + request.top_k, request.min_score
        allowed = self._allowed(request.filters) if request.filters else None
        # A cut-off or filters make the page's photos fewer than the first stage's: start wider. Folded duplicates
        # are rare: twice the page, widened where it falls short.
        narrowed = min_score is not None or allowed is not None
        window = max(needed, self.candidates if (narrowed or rerank) else needed) + (exclude is not None)
        if self.duplicate_threshold is not None:
            window = max(window, 2 * needed)
        return _Plan(torch.nn.functional.normalize(direction, dim=0), v, needed, min_score, rerank, exclude,
                     min(window, len(self.images)), allowed, request.filters)

    def _allowed(self, filters: PhotoFilter) -> torch.Tensor:
        """Which photos of the catalog the filters allow (kept for the last 64 filters)."""
        masks = self.catalog.filter_masks
        if filters not in masks:
            if len(masks) >= 64:
                masks.pop(next(iter(masks)))
            masks[filters] = torch.tensor([filters.allows(meta) for meta in self.metadata], dtype=torch.bool)
        return masks[filters]

    def _item(self, row: int, score: float, similar: list[tuple[int, float]]) -> dict:
        item = {"image": self.images[row], "score": round(score, 4)}
        if similar:
            item["similar"] = [{"image": self.images[r], "score": round(s, 4)} for r, s in similar]
        return item

    def _fold_duplicates(self, rows: torch.Tensor) -> dict[int, list[int]]:
        """Positions of ranked `rows` that stay, in order, each with the later positions folded into it: those whose
        photo has at least search.duplicate_threshold cosine with it (the first such photo above them)."""
        if self.duplicate_threshold is None or len(rows) < 2:
            return {j: [] for j in range(len(rows))}
        vectors = self.embeddings[rows]
        similar = (vectors @ vectors.T >= self.duplicate_threshold).numpy()
        after_a_similar = np.tril(similar, -1).any(axis=1)  # most photos have none above them: they stay
        folded: dict[int, list[int]] = {}
        for j in range(len(rows)):
            if not after_a_similar[j]:
                folded[j] = []
                continue
            leader = next((lead for lead in folded if similar[j, lead]), None)
            if leader is None:
                folded[j] = []
            else:
                folded[leader].append(j)
        return folded

    def _ranked(self, plans: list["_Plan"]) -> list[tuple[list[int], list[float], int, list]]:
        """Per plan (rows, scores, photos searched, folded): the ranking's first photos, at least `needed` of those
        that reach `min_score` where there are so many, each with the score shown and the (row, score) of the near
        duplicates folded into it; a plan's search widens until it has them.
        A query text's photos are scored by the fusion head's relevance to it, an example photo's alone by cosine.
        With `rerank` (search.ranking: fusion, a plain text query) the fusion head orders the first stage's
        `candidates` best photos (the order stays the same from page to page while offset + k <= candidates).
        The plans share one first-stage search and, on a small shortlist, one fusion call."""
        out: list = [None] * len(plans)
        todo = list(range(len(plans)))
        while todo:
            # The query-bank offsets correct a text's hubs; an example photo alone is compared as it is.
            _, found = self.first_stage.search(
                np.stack([plans[i].direction.numpy() for i in todo]), max(plans[i].window for i in todo),
                offset_weight=np.array([float(plans[i].v is not None) for i in todo], np.float32),
                filters=[plans[i].filters for i in todo])
            rows = {}
            for j, i in enumerate(todo):
                picked = found[j][:plans[i].window]
                picked = picked[picked >= 0]
                rows[i] = torch.from_numpy(picked[picked != plans[i].exclude] if plans[i].exclude is not None
                                           else picked)
            scores = self._scores(plans, rows)
            widen = []
            for i in todo:
                plan, row, score = plans[i], rows[i], scores[i]
                if plan.rerank:
                    order = torch.argsort(score, descending=True, stable=True)
                    row, score = row[order], score[order]
                score = torch.round(score, decimals=4)  # the cut-off compares the scores as they are shown
                keep = score >= plan.min_score if plan.min_score is not None else torch.ones(len(row), dtype=torch.bool)
                if plan.allowed is not None:
                    keep &= plan.allowed[row]
                row, score = row[keep], score[keep]
                folded = self._fold_duplicates(row)
                if len(folded) >= plan.needed or plan.window >= len(self.images):
                    out[i] = ([int(row[j]) for j in folded], [float(score[j]) for j in folded], plan.window,
                              [[(int(row[d]), float(score[d])) for d in folded[j]] for j in folded])
                else:
                    plan.window = min(2 * plan.window, len(self.images))
                    widen.append(i)
            todo = widen
        return out

    def _scores(self, plans: list["_Plan"], rows: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The score shown of each plan's rows: the fusion relevance to its query text, or the cosine to its
        direction (an example photo alone)."""
        scores = {i: (self.embeddings[r] @ plans[i].direction).float() for i, r in rows.items() if plans[i].v is None}
        texts = [i for i in rows if plans[i].v is not None]
        if not texts:
            return scores
        union = torch.unique(torch.cat([rows[i] for i in texts]))
        if len(texts) * len(union) > 50_000:  # shortlists too far apart to score as one matrix: one by one
            for i in texts:
                part = None if self.fusion_image_part is None else self.fusion_image_part[rows[i]]
                scores[i] = self.scorer.relevance(plans[i].v, self.embeddings[rows[i]], part)[0]
            return scores
        part = None if self.fusion_image_part is None else self.fusion_image_part[union]
        matrix = self.scorer.relevance(torch.cat([plans[i].v for i in texts]), self.embeddings[union], part)
        position = torch.full((len(self.images),), -1, dtype=torch.long)
        position[union] = torch.arange(len(union))
        for j, i in enumerate(texts):
            scores[i] = matrix[j, position[rows[i]]]
        return scores


@dataclass
class _Catalog:
    """One index, ready to search: what the engine replaces as a whole when the catalog changes."""
    index: CatalogIndex
    images: list[str]
    row_of: dict[str, int]
    metadata: list[dict]
    sha256: dict[str, str]
    excluded: set[str]  # names the legal filter keeps out
    embeddings: torch.Tensor
    first_stage: FirstStage
    fusion_image_part: torch.Tensor | None
    filter_masks: dict[PhotoFilter, torch.Tensor] = field(default_factory=dict)

    def meta(self, name: str) -> dict | None:
        """A searchable photo's metadata (None for a name that is not one)."""
        row = self.row_of.get(name)
        return None if row is None else self.metadata[row]


@dataclass
class _Plan:
    direction: torch.Tensor  # (dim,), unit length: what the first stage searches with
    v: torch.Tensor | None  # (1, dim): the query text's embedding, whose fusion relevance is the score shown
    needed: int  # offset + k
    min_score: float | None
    rerank: bool
    exclude: int | None  # the example photo's row
    window: int  # photos the first stage gives
    allowed: torch.Tensor | None = None  # (catalog,) bool: the photos the request's filters allow
    filters: PhotoFilter | None = None  # the same, for a first stage that pushes them down


def check_paging(top_k: int, offset: int, min_score: float | None) -> None:
    if top_k < 1:
        raise WsenseError(f"k must be at least 1, not {top_k}")
    if offset < 0:
        raise WsenseError(f"offset must be 0 or more, not {offset}")
    if min_score is not None and not 0 <= min_score <= 1:
        raise WsenseError(f"min_score must be from 0 to 1, not {min_score}")
