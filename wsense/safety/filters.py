"""The legal filter applied to data: training pairs and catalog images that involve children."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from wsense.safety.child_classifier import photo_labels
from wsense.safety.rules import mentions_child

if TYPE_CHECKING:
    # pandas (75 MB, 0.4 s to import) only where a table is read: a server over its index never needs it
    import pandas as pd


def _mentions(texts: pd.Series) -> pd.Series:
    verdicts = {text: mentions_child(text) for text in texts.unique()}
    return texts.map(verdicts).astype(bool)


def child_images(descriptions: pd.DataFrame) -> set[str]:
    """Images that any of their own descriptions (columns image, text) says show a child."""
    flagged = _mentions(descriptions["text"].fillna(""))
    return set(descriptions.loc[flagged, "image"])


@dataclass(frozen=True)
class FilterSummary:
    pairs_before: int
    pairs_removed: int
    pairs_child_image: int
    pairs_child_caption: int
    images_before: int
    images_removed: int

    def __str__(self) -> str:
        return (
            f"legal filter: removed {self.pairs_removed} of {self.pairs_before} pairs "
            f"({self.pairs_child_image} whose image shows a child, {self.pairs_child_caption} whose caption "
            f"mentions one) and {self.images_removed} of {self.images_before} images"
        )


def children_seen(labels_path: str | Path) -> set[str]:
    """Photos that show a child by looking (safety.labels, labels/README.md), whatever their captions say."""
    labels = photo_labels(labels_path)
    return set(labels.loc[labels["label"] == "child", "image"])


def filter_training_pairs(pairs: pd.DataFrame, captions: pd.DataFrame, seen: Iterable[str] = ()
                          ) -> tuple[pd.DataFrame, FilterSummary]:
    """Drop pairs whose image any of its captions describes as showing a child or that shows one by looking
    (`seen`: children_seen), and pairs whose caption mentions one.

    `pairs` has columns image and query_text; `captions` has query_text and image (the caption's own image).
    """
    children = child_images(captions.rename(columns={"query_text": "text"})) | set(seen)
    child_image = pairs["image"].isin(children)
    child_caption = _mentions(pairs["query_text"].fillna(""))
    keep = ~(child_image | child_caption)
    kept = pairs[keep].reset_index(drop=True)
    summary = FilterSummary(
        pairs_before=len(pairs),
        pairs_removed=int((~keep).sum()),
        pairs_child_image=int(child_image.sum()),
        pairs_child_caption=int(child_caption.sum()),
        images_before=pairs["image"].nunique(),
        images_removed=pairs["image"].nunique() - kept["image"].nunique(),
    )
    return kept, summary

