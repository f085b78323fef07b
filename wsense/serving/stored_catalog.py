"""The catalog of an index served from its store and compressed first stage without loading either
(search.first_stage: compressed), so that start-up and memory do not grow with the catalog.

It answers what wsense.serving.catalog.Catalog answers, a photo at a time: a row is a searchable photo's place
among the compressed stage's row ids (wsense.serving.compressed, `rows.npy`); names, embeddings, hashes and
metadata are read from the store (wsense.serving.store) by row id when a search needs them, and the filters'
photos come from the stage's masks. Reads go through the stage (wsense.serving.compressed.CompressedStage): its
connection, one snapshot of the store (the version the stage was built for), and its lock.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wsense.serving.compressed import CompressedFirstStage
from wsense.serving.index import open_store
from wsense.serving.metadata import MetadataFilter, unknown_metadata
from wsense.serving.store import META_COLUMNS


class StoredCatalog:
    """One committed index, ready to search from disk: what LiveCatalog replaces as a whole when it changes."""
    fusion_image_part = None  # computed for the shortlist per query, as for any first stage but exact search

    def __init__(self, index_dir: str | Path, scorer, config, fingerprint: str):
        info = open_store(index_dir, fingerprint)
        offsets_of = scorer.photo_offsets if config.search.ranking == "qb_cosine" else None
        self.first_stage = CompressedFirstStage(index_dir, offsets_of, config.search.faiss_nprobe)
        # The parts hold the stage, never the catalog: no reference cycle keeps a replaced catalog, and the read
        # transaction of its stage's connection, alive until a garbage collection.
        stage = self.stage = self.first_stage.stage
        self.index = StoredIndex(stage, Path(info["root"]), info["fingerprint"])
        self.images = StoredNames(stage)
        self.row_of = self.images
        self.embeddings = StoredEmbeddings(stage)
        self.sha256 = StoredHashes(stage)
        self.excluded = KeptOut(stage)

    def meta(self, name: str) -> dict | None:
        """A searchable photo's metadata (None for a name that is not one)."""
        found = query(self.stage, f"SELECT meta_known, {', '.join(META_COLUMNS)} FROM photos WHERE path = ? AND "
                      "excluded IS NULL", (name,))
        if not found:
            return None
        known, *values = found[0]
        return dict(zip(META_COLUMNS, values)) if known else unknown_metadata(name)

    def allowed(self, filters: MetadataFilter) -> np.ndarray:
        """Which photos (rows) the filters allow (the stage keeps the masks of its last filters)."""
        return self.stage.allowed(filters)[3]

    def check_versions(self) -> set[str]:
        """The image check versions of the photos' verdicts ("none" for a photo never checked)."""
        return {version or "none" for (version,) in query(self.stage, "SELECT DISTINCT check_version FROM photos")}


def query(stage, sql: str, params=()) -> list[tuple]:
    """Rows of the store, read through the stage's connection (its snapshot) under its lock."""
    with stage.lock:
        return stage.db.execute(sql, params).fetchall()


class StoredIndex:
    """What a server reads of the index itself: its folder, model, and the photos kept out."""

    def __init__(self, stage, root: Path, fingerprint: str):
        self.stage, self.root, self.fingerprint = stage, root, fingerprint

    @property
    def excluded(self) -> list[dict]:
        """The photos the legal filter keeps out, each with its reason (`excluded`), by path."""
        return [{"path": path, "excluded": why} for path, why in query(
            self.stage, "SELECT path, excluded FROM photos WHERE excluded IS NOT NULL ORDER BY path")]


class StoredNames:
    """The searchable photos' names by row (`names[row]`, `len`, `name in names`), and a name's row (`get`)."""

    def __init__(self, stage):
        self.stage = stage

    def __len__(self) -> int:
        return len(self.stage.rows)

    def __getitem__(self, row: int) -> str:
        return self.stage.paths([self.stage.rows[row]])[0]

    def get(self, name: str) -> int | None:
        found = query(self.stage, "SELECT rowid FROM photos WHERE path = ? AND excluded IS NULL", (name,))
        if not found:
            return None
        row = int(np.searchsorted(self.stage.rows, found[0][0]))
        return row if row < len(self.stage.rows) and self.stage.rows[row] == found[0][0] else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


class StoredEmbeddings:
    """The searchable photos' embeddings by row (`embeddings[rows]`, float32), read from the store."""

    def __init__(self, stage):
        self.stage = stage
        self.shape = (len(stage.rows), stage.info["dim"])

    def __getitem__(self, rows) -> np.ndarray:
        vectors = self.stage.embeddings(self.stage.rows[np.atleast_1d(np.asarray(rows, np.int64))])
        return vectors[0] if np.ndim(rows) == 0 else vectors


class StoredHashes:
    """name -> content hash of a searchable photo (`get`)."""

    def __init__(self, stage):
        self.stage = stage

    def get(self, name: str, default=None):
        found = query(self.stage, "SELECT sha256 FROM photos WHERE path = ? AND excluded IS NULL", (name,))
        return found[0][0] if found else default


class KeptOut:
    """The names the legal filter keeps out (`name in kept_out`, `len`)."""

    def __init__(self, stage):
        self.stage = stage

    def __contains__(self, name: object) -> bool:
        return bool(query(self.stage, "SELECT 1 FROM photos WHERE path = ? AND excluded IS NOT NULL", (name,)))

    def __len__(self) -> int:
        return query(self.stage, "SELECT count(*) FROM photos WHERE excluded IS NOT NULL")[0][0]
