"""Search: a request is checked by the legal filter, then ranked over the live catalog by the trained model.

The pieces, each in its own file: the request and its limits (wsense.serving.requests), the catalog and its life
(wsense.serving.catalog), the ranking and the score shown (wsense.serving.ranking). Photos the legal filter keeps
out of the catalog never enter the first stage.
"""
from __future__ import annotations

import posixpath
import sys
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.models.calibration import load_calibration
from wsense.safety import QueryVerdict, check_query
from wsense.safety.screener import PhotoScreener
from wsense.serving.catalog import LiveCatalog
from wsense.serving.index import Descriptions, IndexReport
from wsense.serving.ranking import Plan, Ranker, Ranking
from wsense.serving.requests import Example, SearchRequest, SearchResult, UnknownPhoto
from wsense.serving.scoring import RelevanceScorer


@contextmanager
def torch_threads(n: int):
    """Run torch ops (search.text_runtime: torch) on `n` threads inside the block (torch's setting is process-wide:
    one query at a time). Nothing to set in a process that never loaded torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
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
                 descriptions: Descriptions | None = None, candidates: int | None = None,
                 index_dir: str | Path | None = None, rebuild: bool = False, device: str = "cpu",
                 settings: Config | None = None, checker: PhotoScreener | None = None, photo_batches=None):
        """`settings`: the user's config, for search and runtime settings (default: the built-in defaults); the
        model's own sections come from the checkpoint. `checker`: the image check run while indexing (default:
        the fitted check of safety.check). `photo_batches`: what embeds new photos (default: this process; see
        wsense.serving.ray_index)."""
        self.scorer = RelevanceScorer.from_checkpoint(checkpoint, settings, device)
        config = self.config = self.scorer.config
        search = config.search
        self.ranker = Ranker(self.scorer, load_calibration(checkpoint, search.ranking), ranking=search.ranking,
                             candidates=candidates or search.candidates,
                             duplicate_threshold=search.duplicate_threshold)
        self.query_threads = search.query_threads
        # The query check's verdicts on the last search.query_cache texts, beside their embeddings: the check (USE
        # and the n-grams, a few ms) would otherwise cost a repeated query more than the rest of its answer.
        self.verdicts: OrderedDict[str, QueryVerdict] = OrderedDict()
        self.live = LiveCatalog(self.scorer, self.scorer.fingerprint, image_dir, index_dir, descriptions,
                                rebuild, checker, photo_batches)

    def refresh(self) -> IndexReport:
        """Bring the catalog up to date with its folder (see LiveCatalog.refresh)."""
        return self.live.refresh()

    # The current catalog and its parts (a search reads them under the search lock, so all from the same catalog).
    catalog = property(lambda self: self.live.current, doc="the catalog searched now")
    index_dir = property(lambda self: self.live.index_dir)
    index = property(lambda self: self.catalog.index, doc="the index searched")
    root = property(lambda self: self.catalog.index.root, doc="the catalog folder")
    images = property(lambda self: self.catalog.images, doc="the searchable photos' names, one per row")
    embeddings = property(lambda self: self.catalog.embeddings, doc="their embeddings (rows x dim)")
    metadata = property(lambda self: self.catalog.metadata, doc="their metadata (wsense.serving.metadata)")
    sha256 = property(lambda self: self.catalog.sha256, doc="name -> content hash of every searchable photo")

    # -- what a search starts from ------------------------------------------------------------------
    def example(self, name: str) -> Example | str:
        """The catalog photo `name` as the example of a "more like this" search, or why it may not be one (the
        legal filter keeps it out); a name that is no photo of this catalog is an error."""
        key = posixpath.normpath(str(name).replace("\\", "/")) if name else ""
        catalog = self.catalog
        row = catalog.row_of.get(key)
        if row is not None:
            return Example(key, catalog.embeddings[row], row)
        if key in catalog.excluded:
            return "the example photo is kept out by the legal filter"
        raise UnknownPhoto(f"{name}: not a photo of this catalog")

    def uploaded_example(self, path: str | Path, name: str = "upload") -> Example | str:
        """A photo from outside the catalog (an upload) as an example: the image check looks at it first, and a photo
        it keeps out is refused like a child query. Nothing of it is kept."""
        vector = self.live.look_at(path)
        return vector if isinstance(vector, str) else Example(name, vector)

    # -- search -------------------------------------------------------------------------------------
    def search(self, query: str = "", top_k: int = 1, **options) -> SearchResult:
        """The photos of the catalog for a query text, an example photo, or both (see SearchRequest for the
        options); a bad request is a WsenseError."""
        result = self.search_many([SearchRequest(query, top_k, **options)])[0]
        if isinstance(result, WsenseError):
            raise result
        return result

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult | WsenseError]:
        """One result per request, in order, or the WsenseError that names what is wrong with it. The query texts
        of all requests go through the text tower together, in one batch: what a server does with the queries that
        arrive at the same moment."""
        with self.live.search_lock:
            return self._search_many(requests)

    def _search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult | WsenseError]:
        catalog = self.catalog
        results: list[SearchResult | WsenseError] = []
        prepared: list[tuple[SearchRequest, SearchResult, Example | None]] = []
        for request in requests:
            try:
                result, example = self._prepare(request)
            except WsenseError as error:
                results.append(error)
                continue
            results.append(result)
            if not result.refused:
                prepared.append((request, result, example))
        texts = [text for request, _, _ in prepared for text in request.texts]
        with torch_threads(self.query_threads):
            vectors = iter(self.scorer.embed_texts(texts)) if texts else iter(())
            plans = [self.ranker.plan(catalog, request, example, [next(vectors) for _ in request.texts])
                     for request, _, example in prepared]
            for (request, result, _), plan, ranking in zip(prepared, plans, self.ranker.rank(catalog, plans)):
                self._answer(catalog, request, result, plan, ranking)
        return results

    def _prepare(self, request: SearchRequest) -> tuple[SearchResult, Example | None]:
        """Check a request: its result, refused by the legal filter where a text or the example is, and its example."""
        request.validate()
        query, like = request.query, request.like
        result = SearchResult(query, False, None, offset=request.offset,
                              like=like.name if isinstance(like, Example) else like,
                              negatives=list(request.negatives),
                              filters=request.filters.to_dict() if request.filters else {},
                              score="relevance" if query else "similarity")
        for text in request.texts:
            verdict = self._verdict(text)
            if verdict.refused:
                result.refused, result.reason = True, verdict.reason
                return result, None
        example = self.example(like) if isinstance(like, str) else like
        if isinstance(example, str):
            result.refused, result.reason = True, example
            return result, None
        return result, example

    def _verdict(self, text: str) -> QueryVerdict:
        """The query check's verdict on a text, from the verdicts kept where it was asked lately."""
        size, cache = self.scorer.query_cache_size, self.verdicts
        verdict = cache.get(text)
        if verdict is not None:
            cache.move_to_end(text)
            return verdict
        verdict = check_query(text)
        if size:
            cache[text] = verdict
            while len(cache) > size:
                cache.popitem(last=False)
        return verdict

    def _answer(self, catalog, request: SearchRequest, result: SearchResult, plan: Plan, ranking: Ranking) -> None:
        """Fill in a result's page of photos and its total from the ranking."""
        size, photos = len(catalog.images), ranking.photos
        # Without a cut-off every photo the filters allow qualifies; with one, those scored count.
        everything = size if plan.allowed is None else int(plan.allowed.sum())
        everything -= plan.exclude is not None and (plan.allowed is None or bool(plan.allowed[plan.exclude]))
        duplicates = self.ranker.duplicate_threshold is not None
        if plan.min_score is not None:  # those scored from the cut-off up
            result.total = len(photos)
        elif duplicates:  # the photos not searched may fold too: an estimate
            result.total = len(photos) + everything - min(ranking.searched, everything)
        else:
            result.total = everything
        result.total_exact = ranking.searched >= size or (plan.min_score is None and not duplicates)
        page = photos[request.offset:request.offset + request.top_k]
        relevance = [photo.relevance for photo in page]
        if plan.text is not None and page and None in relevance:  # the fusion head's reading, under its own name
            rows = np.array([p.row for p in page], np.int64)
            relevance = self.ranker.relevance(catalog, [plan.text], [rows])[0].tolist()
        result.results = []
        for j, photo in enumerate(page):
            item = {"image": catalog.images[photo.row], "score": photo.score}
            if plan.text is not None:
                item["relevance"] = round(float(relevance[j]), 4)
            if photo.similar:
                item["similar"] = [{"image": catalog.images[s.row], "score": s.score} for s in photo.similar]
            result.results.append(item)
