"""Ranking a catalog for a request: the plan (what the first stage searches with, how many photos it gives), the
widening search until a page is full, the score shown, and the folding of near duplicates.

The first stage's score is the ranking (search.ranking qb_cosine: the cosine minus each photo's query-bank offset;
cosine: the cosine alone). Under `fusion` the fusion head re-orders the first stage's `candidates` best photos of a
plain text query. For a query text the score shown is the ranking's score through the calibration curve
(wsense.models.calibration), so it falls down the list and means what reports/reliability.md says; for an example
photo alone it is the cosine to the example.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wsense.models.calibration import ScoreCalibration
from wsense.serving.metadata import MetadataFilter
from wsense.serving.requests import Example, SearchRequest

FUSION_MATRIX_LIMIT = 50_000  # query x photo scores computed as one matrix; shortlists further apart go one by one


@dataclass
class RankedPhoto:
    row: int
    score: float  # the score shown, rounded as shown
    similar: list["RankedPhoto"] = field(default_factory=list)  # near duplicates folded into it
    relevance: float | None = None  # the fusion head's, where the ranking computed it (search.ranking: fusion)


@dataclass
class Ranking:
    photos: list[RankedPhoto]  # best first: at least the plan's `needed` where so many qualify
    searched: int  # photos the first stage gave, of which these are those that qualify


@dataclass
class Plan:
    direction: np.ndarray  # (dim,), unit length: what the first stage searches with
    text: np.ndarray | None  # (1, dim): the query text's embedding (None: an example photo alone)
    needed: int  # offset + k
    min_score: float | None
    rerank: bool  # the fusion head re-orders the first stage's photos (search.ranking: fusion)
    exclude: int | None  # the example photo's row
    window: int  # photos the first stage gives
    allowed: np.ndarray | None = None  # (catalog,) bool: the photos the request's filters allow
    filters: MetadataFilter | None = None  # the same, for a first stage that pushes them down


class Ranker:
    """Ranks one catalog (wsense.serving.catalog.Catalog) with a scorer's fusion head and a calibration curve."""

    def __init__(self, scorer, calibration: ScoreCalibration, *, ranking: str, candidates: int,
                 duplicate_threshold: float | None):
        self.scorer, self.calibration = scorer, calibration
        self.ranking, self.candidates, self.duplicate_threshold = ranking, candidates, duplicate_threshold

    def plan(self, catalog, request: SearchRequest, example: Example | None, vectors: list[np.ndarray]) -> Plan:
        """How to rank for a request, from the embeddings of its texts (the query's first, where it has one)."""
        text = vectors[0][None] if request.query else None
        negatives = vectors[1:] if request.query else vectors
        direction = text[0] if text is not None else np.zeros(catalog.embeddings.shape[1], np.float32)
        if example is not None:
            direction = direction + request.like_weight * example.vector
        for negative in negatives:
            direction = direction - request.negative_weight * negative
        rerank = self.ranking == "fusion" and example is None and not negatives
        exclude = example.row if example is not None else None
        needed, min_score = request.offset + request.top_k, request.min_score
        allowed = catalog.allowed(request.filters) if request.filters else None
        # A cut-off or filters make the page's photos fewer than the first stage's: start wider. Folded duplicates
        # are rare: twice the page, widened where it falls short.
        narrowed = min_score is not None or allowed is not None
        window = max(needed, self.candidates if (narrowed or rerank) else needed) + (exclude is not None)
        if self.duplicate_threshold is not None:
            window = max(window, 2 * needed)
        direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
        return Plan(direction.astype(np.float32), text, needed, min_score, rerank, exclude,
                    min(window, len(catalog.images)), allowed, request.filters)

    def rank(self, catalog, plans: list[Plan]) -> list[Ranking]:
        """Per plan, the ranking's first photos, at least `needed` of those that reach `min_score` where there are
        so many; a plan's search widens until it has them. The plans share one first-stage search per round."""
        out: list = [None] * len(plans)
        todo = list(range(len(plans)))
        size = len(catalog.images)
        while todo:
            # The query-bank offsets correct a text's hubs; an example photo alone is compared as it is.
            found_scores, found = catalog.first_stage.search(
                np.stack([plans[i].direction for i in todo]), max(plans[i].window for i in todo),
                offset_weight=np.array([float(plans[i].text is not None) for i in todo], np.float32),
                filters=[plans[i].filters for i in todo])
            rows, first = {}, {}
            for j, i in enumerate(todo):
                picked, scores = found[j][:plans[i].window], found_scores[j][:plans[i].window]
                keep = (picked >= 0) & (picked != plans[i].exclude if plans[i].exclude is not None else True)
                rows[i] = np.asarray(picked[keep], np.int64)
                first[i] = np.asarray(scores[keep], np.float32)
            shown = self._shown_scores(catalog, plans, rows, first)
            widen = []
            for i in todo:
                plan, (row, score, fusion) = plans[i], shown[i]
                keep = score >= plan.min_score if plan.min_score is not None else np.ones(len(row), dtype=bool)
                if plan.allowed is not None:
                    keep &= plan.allowed[row]
                row, score = row[keep], score[keep]
                folded = self.fold_duplicates(catalog, row)
                if len(folded) >= plan.needed or plan.window >= size:
                    as_shown = [round(float(s), 4) for s in score]  # float32 -> the decimals shown
                    relevance = [None] * len(row) if fusion is None else [float(f) for f in fusion[keep]]
                    out[i] = Ranking([RankedPhoto(int(row[j]), as_shown[j],
                                                  [RankedPhoto(int(row[d]), as_shown[d]) for d in folded[j]],
                                                  relevance[j]) for j in folded], plan.window)
                else:
                    plan.window = min(2 * plan.window, size)
                    widen.append(i)
            todo = widen
        return out

    def _shown_scores(self, catalog, plans: list[Plan], rows: dict[int, np.ndarray],
                      first: dict[int, np.ndarray]) -> dict[int, tuple]:
        """Each plan's rows in ranked order with the score shown, rounded as shown (the cut-off compares those), and
        their fusion relevance where the ranking computed it (None elsewhere)."""
        reranked = [i for i in rows if plans[i].rerank]
        fusion = self.relevance(catalog, [plans[i].text for i in reranked], [rows[i] for i in reranked])
        out = {}
        for i in rows:
            row, score, relevance = rows[i], first[i], None
            if plans[i].rerank:
                relevance = fusion[reranked.index(i)]
                order = np.argsort(-relevance, kind="stable")  # best first; ties keep the first stage's order
                row, relevance = row[order], relevance[order]
                score = relevance
            if plans[i].text is not None:
                score = self.calibration(score).astype(np.float32)
            out[i] = row, np.round(score, 4), relevance
        return out

    def relevance(self, catalog, texts: list[np.ndarray], rows: list[np.ndarray]) -> list[np.ndarray]:
        """The fusion head's relevance of each text (1, dim) to its rows of the catalog; shortlists close enough
        together are scored as one matrix."""
        if not texts:
            return []
        part = catalog.fusion_image_part
        union = np.unique(np.concatenate(rows))
        if len(texts) * len(union) > FUSION_MATRIX_LIMIT:
            return [self.scorer.relevance(text, catalog.embeddings[row], None if part is None else part[row])[0]
                    for text, row in zip(texts, rows)]
        matrix = self.scorer.relevance(np.concatenate(texts), catalog.embeddings[union],
                                       None if part is None else part[union])
        return [matrix[j, np.searchsorted(union, row)] for j, row in enumerate(rows)]

    def fold_duplicates(self, catalog, rows: np.ndarray) -> dict[int, list[int]]:
        """Positions of ranked `rows` that stay, in order, each with the later positions folded into it: those whose
        photo has at least search.duplicate_threshold cosine with it (the first such photo above them)."""
        if self.duplicate_threshold is None or len(rows) < 2:
            return {j: [] for j in range(len(rows))}
        vectors = catalog.embeddings[rows]
        similar = vectors @ vectors.T >= self.duplicate_threshold
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
