"""The catalog a search runs over: an index made ready to search, and its life while serving (opened or brought up
to date from its folder, refreshed, replaced between two searches) with the locks that keep a search on one catalog
from start to end."""
from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.safety.child_classifier import CHECK_FILE
from wsense.safety.screener import PhotoScreener, configured_classifier
from wsense.serving.first_stage import FirstStage
from wsense.serving.index import CatalogIndex, Descriptions, IndexReport, update_index
from wsense.serving.metadata import MetadataFilter, unknown_metadata
from wsense.serving.stored_catalog import StoredCatalog

FILTER_MASKS_KEPT = 64


def default_index_dir(config: Config, image_dir: Path, fingerprint: str) -> Path:
    """One index per folder and model, in the cache: never inside the photographer's own folder."""
    key = hashlib.sha256(str(Path(image_dir).resolve()).encode()).hexdigest()[:12]
    return Path(config.cache_dir) / "indexes" / f"{Path(image_dir).name}-{key}-{fingerprint}"


@dataclass
class Catalog:
    """One index, ready to search: what is replaced as a whole when the catalog changes."""
    index: CatalogIndex
    images: list[str]  # the searchable photos' names, one per row
    row_of: dict[str, int]
    metadata: list[dict]
    sha256: dict[str, str]  # name -> content hash of every searchable photo
    excluded: set[str]  # names the legal filter keeps out
    embeddings: np.ndarray  # rows x dim, float32
    first_stage: FirstStage
    fusion_image_part: np.ndarray | None
    filter_masks: dict[MetadataFilter, np.ndarray] = field(default_factory=dict)

    @classmethod
    def ready(cls, index: CatalogIndex, scorer, config: Config, index_dir: Path, fingerprint: str) -> "Catalog":
        """The searchable part of an index, with what every search needs of it computed once."""
        rows = index.searchable
        images = [index.entries[i]["path"] for i in rows]
        vectors = index.embeddings[rows]
        search = config.search
        offsets = scorer.photo_offsets(vectors) if search.ranking == "qb_cosine" and len(rows) else None
        if search.first_stage == "milvus":
            from wsense.serving.milvus_store import MilvusFirstStage, collection_name

            first_stage = MilvusFirstStage(search.milvus_uri or str(Path(config.cache_dir) / "milvus.db"),
                                           search.milvus_collection or collection_name(index_dir.resolve()),
                                           fingerprint, index.entries, index.embeddings, rows, offsets,
                                           search.faiss_threshold, search.faiss_nprobe)
        else:
            first_stage = FirstStage(vectors, search.first_stage, search.faiss_threshold, search.faiss_nprobe,
                                     offsets=offsets)
        embeddings = np.ascontiguousarray(vectors, dtype=np.float32)
        return cls(
            index, images, {name: row for row, name in enumerate(images)},
            [index.entries[i].get("meta") or unknown_metadata(images[n]) for n, i in enumerate(rows)],
            {index.entries[i]["path"]: index.entries[i]["sha256"] for i in rows},
            {entry["path"] for entry in index.excluded}, embeddings, first_stage,
            # The fusion head's per-image terms, kept for an exactly searched catalog (a FAISS-sized one would need
            # two thirds of its embeddings' memory again; there they are computed for the shortlist per query).
            scorer.fusion_image_part(embeddings) if first_stage.method == "exact" and len(rows) else None)

    def meta(self, name: str) -> dict | None:
        """A searchable photo's metadata (None for a name that is not one)."""
        row = self.row_of.get(name)
        return None if row is None else self.metadata[row]

    def check_versions(self) -> set[str]:
        """The image check versions of the photos' verdicts ("none" for a photo never checked)."""
        return {(entry.get("check") or {}).get("version") or "none" for entry in self.index.entries}

    def allowed(self, filters: MetadataFilter) -> np.ndarray:
        """Which photos the filters allow (kept for the last FILTER_MASKS_KEPT filters)."""
        masks = self.filter_masks
        if filters not in masks:
            if len(masks) >= FILTER_MASKS_KEPT:
                masks.pop(next(iter(masks)))
            masks[filters] = np.array([filters.allows(meta) for meta in self.metadata], dtype=bool)
        return masks[filters]


class LiveCatalog:
    """The catalog under `image_dir`, indexed incrementally in `index_dir` (or an index folder opened as it is),
    kept current while serving.

    Searches hold `search_lock` while they run, and a new catalog replaces the old one under it: a search sees one
    catalog from start to end. `photo_lock`: one thread at a time runs the image tower and the image check (a
    refresh, an uploaded example)."""

    def __init__(self, scorer, fingerprint: str, image_dir: str | Path | None, index_dir: str | Path | None,
                 descriptions: Descriptions | None = None, rebuild: bool = False,
                 checker: PhotoScreener | None = None, photo_batches=None):
        config = self.config = scorer.config
        if image_dir is None and index_dir is None:
            raise WsenseError("search needs an image folder or an index folder")
        if index_dir is None:
            index_dir = default_index_dir(config, Path(image_dir), fingerprint)
        self.scorer, self.fingerprint, self.index_dir = scorer, fingerprint, Path(index_dir)
        self.image_dir, self.descriptions, self.photo_batches = image_dir, descriptions, photo_batches
        self._checker = checker
        self.search_lock, self.photo_lock = threading.RLock(), threading.Lock()
        # Served from disk (search.first_stage: compressed): an index opened as it is is not loaded.
        self.stored = config.search.first_stage == "compressed"
        if image_dir is not None:
            index, report = update_index(image_dir, index_dir, scorer, fingerprint, self.checker, descriptions,
                                         rebuild=rebuild, photo_batches=photo_batches)
            print(report, file=sys.stderr)
        else:
            index = None if self.stored else CatalogIndex.load(index_dir, fingerprint)
        if index is not None and not index.searchable:
            raise WsenseError(f"{index.root}: no photos to search (jpg, jpeg, png, webp)")
        self.current = self._ready(index)
        if image_dir is None:
            self._warn_if_checked_by_another_check(self.current)

    @property
    def checker(self) -> PhotoScreener:
        """The image check run on new photos: the one given, else the fitted check of safety.check (loaded on
        first use: an index opened as it is may never need it)."""
        if self._checker is None:
            self._checker = PhotoScreener.from_config(self.config)
        return self._checker

    @checker.setter
    def checker(self, checker: PhotoScreener) -> None:
        self._checker = checker

    def refresh(self) -> IndexReport:
        """Bring the catalog up to date with its folder (what `wsense serve --watch` does on every change): new and
        changed photos are embedded and go through the legal filter and the image check, the index is saved
        atomically, and only then does the new catalog replace the old one, between two searches. A catalog
        opened from an index folder alone has no folder to follow."""
        if self.image_dir is None:
            raise WsenseError(f"{self.index_dir}: opened without its image folder; nothing to refresh from")
        with self.photo_lock:
            index, report = update_index(self.image_dir, self.index_dir, self.scorer, self.fingerprint, self.checker,
                                         self.descriptions, photo_batches=self.photo_batches)
            catalog = self._ready(index)
        with self.search_lock:
            self.current = catalog
        return report

    def _ready(self, index: CatalogIndex | None) -> "Catalog | StoredCatalog":
        """The committed index made ready to search: loaded (`index`), or served from its store and compressed
        first stage (search.first_stage: compressed)."""
        if self.stored:
            return StoredCatalog(self.index_dir, self.scorer, self.config, self.fingerprint)
        return Catalog.ready(index, self.scorer, self.config, self.index_dir, self.fingerprint)

    def look_at(self, path: str | Path) -> np.ndarray | str:
        """A photo from outside the catalog (an upload): its embedding, or why the image check keeps it out.
        Nothing of it is kept (no cache entry, no index row)."""
        with self.photo_lock:
            features = self.scorer.upload_features(path)
            # A frozen model's first backbone gives the check's own features: one pass, and no torch for the check.
            shared = self.checker.shared_columns(self.scorer.config)
            check = self.checker.screen_transient(path, features[:, :shared] if shared else None)
            if check.verdict.child:
                return f"image check: {check.verdict.reason}"
            return self.scorer.embed_features(features)[0]

    def _warn_if_checked_by_another_check(self, catalog) -> None:
        """An index opened as it is keeps its verdicts; say so when the configured check would give others."""
        if self._checker is not None:
            version = self._checker.version
        elif (Path(self.config.safety.check) / CHECK_FILE).is_file():
            version = configured_classifier(self.config).version
        else:
            return
        if catalog.check_versions() - {version}:
            print(f"warning: {self.index_dir}: some photos were checked by another version of the image check than "
                  f"{version}; `wsense index {catalog.index.root} --index-dir {self.index_dir}` re-checks them",
                  file=sys.stderr)
