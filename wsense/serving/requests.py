"""What a search is asked and what it answers: the request, its one set of limits (the same for the command line,
the API and the page), the result, and the refusal notice."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from wsense.errors import WsenseError
from wsense.safety.rules import language_of, normalize
from wsense.serving.metadata import MetadataFilter

MAX_QUERY_CHARS = 500
MAX_TOP_K = 100  # results in one answer
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


class Example(NamedTuple):
    """The photo a "more like this" search starts from: its embedding and, for a catalog photo, its row (left out
    of the results)."""
    name: str
    vector: np.ndarray
    row: int | None = None


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
    filters: MetadataFilter | None = None  # subfolder, orientation, camera, lens, dates taken

    @property
    def texts(self) -> list[str]:
        return ([self.query] if self.query else []) + list(self.negatives)

    def validate(self) -> None:
        """A WsenseError naming what is wrong with the request, if anything."""
        for text in self.negatives:
            validate_query(text)
        if self.like is None or self.query:
            validate_query(self.query)
        check_paging(self.top_k, self.offset, self.min_score)


@dataclass
class SearchResult:
    query: str
    refused: bool
    reason: str | None
    # {"image": path relative to the catalog, "score": float, and for a query text "relevance": the fusion head's}
    results: list[dict] = field(default_factory=list)
    total: int = 0  # photos that qualify: all those the filters allow, or those scoring from min_score up
    total_exact: bool = True  # False where only the first stage's best photos were scored against min_score
    offset: int = 0
    like: str | None = None  # the example photo
    negatives: list[str] = field(default_factory=list)
    filters: dict = field(default_factory=dict)  # the MetadataFilter applied, as given
    # What a result's score is: "relevance", the ranking's score calibrated on the experts' scale (a query text), or
    # "similarity", the cosine to the example photo (an example alone). Either way it falls down the list.
    score: str = "relevance"

    def to_dict(self) -> dict:
        return {"query": self.query, "refused": self.refused, "reason": self.reason, "results": self.results,
                "total": self.total, "total_exact": self.total_exact, "offset": self.offset, "like": self.like,
                "negatives": self.negatives, "filters": self.filters, "score": self.score}


def validate_query(query: str) -> str:
    if not query or not query.strip():
        raise WsenseError("empty query: describe the scene you are looking for")
    if len(query) > MAX_QUERY_CHARS:
        raise WsenseError(f"query too long: {len(query)} characters (at most {MAX_QUERY_CHARS})")
    return query


def check_paging(top_k: int, offset: int, min_score: float | None) -> None:
    if not 1 <= top_k <= MAX_TOP_K:
        raise WsenseError(f"k must be from 1 to {MAX_TOP_K}, not {top_k}")
    if offset < 0:
        raise WsenseError(f"offset must be 0 or more, not {offset}")
    if min_score is not None and not 0 <= min_score <= 1:
        raise WsenseError(f"min_score must be from 0 to 1, not {min_score}")
