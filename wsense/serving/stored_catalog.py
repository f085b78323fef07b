"""The catalog of an index served from its store and compressed first stage without loading either
(search.first_stage: compressed), so that start-up and memory do not grow with the catalog.

It answers what wsense.serving.catalog.Catalog answers, a photo at a time: a row is a searchable photo's place
among the compressed stage's row ids (wsense.serving.compressed, `rows.npy`); names, embeddings, hashes and
metadata are read from the store (wsense.serving.store) by row id when a search needs them, and the filters'
photos come from the stage's bitmaps. Reads share the stage's connection (one snapshot of the store: the version
the stage was built for) and its lock.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wsense.serving.compressed import CompressedFirstStage
from wsense.serving.index import open_store
from wsense.serving.metadata import MetadataFilter, unknown_metadata
from wsense.serving.store import META_COLUMNS, decode_embeddings


class StoredCatalog:
    """One committed index, ready to search from disk: what LiveCatalog replaces as a whole when it changes."""
    fusion_image_part = None  # computed for the shortlist per query, as for any first stage but exact search

    def __init__(self, index_dir: str | Path, scorer, config, fingerprint: str):
        info = open_store(index_dir, fingerprint)
        offsets_of = scorer.photo_offsets if config.search.ranking == "qb_cosine" else None
        self.first_stage = CompressedFirstStage(index_dir, offsets_of, config.search.faiss_nprobe)
        # The parts hold the reader, never the catalog: no reference cycle keeps a replaced catalog, and the
        # read transaction of its stage's connection, alive until a garbage collection.
        reader = self.reader = StoreReader(self.first_stage.stage, info.get("dtype", "float32"), int(info["dim"]))
        self.rows, self.query = reader.rows, reader.query
        self.index = StoredIndex(reader, Path(info["root"]), info["fingerprint"])
        self.images = StoredNames(reader)
        self.row_of = self.images
        self.embeddings = StoredEmbeddings(reader)
        self.sha256 = StoredHashes(reader)
        self.excluded = KeptOut(reader)
        self.filter_masks: dict[MetadataFilter, np.ndarray] = {}

    def meta(self, name: str) -> dict | None:
        """A searchable photo's metadata (None for a name that is not one)."""
        found = self.query(f"SELECT meta_known, {', '.join(META_COLUMNS)} FROM photos WHERE path = ? AND "
                           "excluded IS NULL", (name,))
        if not found:
            return None
        known, *values = found[0]
        return dict(zip(META_COLUMNS, values)) if known else unknown_metadata(name)

    def allowed(self, filters: MetadataFilter) -> np.ndarray:
        """Which photos (rows) the filters allow: the stage's bitmap of their row ids, read at the rows."""
        if filters not in self.filter_masks:
            _, _, bits = self.first_stage.stage.allowed(filters)
            if len(self.filter_masks) >= 16:
                self.filter_masks.pop(next(iter(self.filter_masks)))
            by_id = np.unpackbits(bits, bitorder="little").astype(bool)
            self.filter_masks[filters] = by_id[np.asarray(self.rows)]
        return self.filter_masks[filters]

    def check_versions(self) -> set[str]:
        """The image check versions of the photos' verdicts ("none" for a photo never checked)."""
        return {version or "none" for (version,) in self.query("SELECT DISTINCT check_version FROM photos")}


class StoreReader:
    """The stage's connection to the store, under its lock, and its row ids (a row's place -> row id)."""

    def __init__(self, stage, dtype: str, dim: int):
        self.stage, self.rows, self.dtype, self.dim = stage, stage.rows, dtype, dim

    def query(self, sql: str, params=()) -> list[tuple]:
        with self.stage.lock:
            return self.stage.db.execute(sql, params).fetchall()

    def row_ids(self, rows) -> np.ndarray:
        return np.asarray(self.rows[np.asarray(rows, np.int64)], np.int64)


class StoredIndex:
    """What a server reads of the index itself: its folder, model, and the photos kept out."""

    def __init__(self, reader: StoreReader, root: Path, fingerprint: str):
        self.reader, self.root, self.fingerprint = reader, root, fingerprint

    @property
    def excluded(self) -> list[dict]:
        """The photos the legal filter keeps out, each with its reason (`excluded`), by path."""
        return [{"path": path, "excluded": why} for path, why in self.reader.query(
            "SELECT path, excluded FROM photos WHERE excluded IS NOT NULL ORDER BY path")]


class StoredNames:
    """The searchable photos' names by row (`names[row]`, `len`, `name in names`), and a name's row (`get`)."""

    def __init__(self, reader: StoreReader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader.rows)

    def __getitem__(self, row: int) -> str:
        row_id = int(self.reader.rows[row])
        return self.reader.query("SELECT path FROM photos WHERE rowid = ?", (row_id,))[0][0]

    def get(self, name: str) -> int | None:
        found = self.reader.query("SELECT rowid FROM photos WHERE path = ? AND excluded IS NULL", (name,))
        if not found:
            return None
        row = int(np.searchsorted(self.reader.rows, found[0][0]))
        return row if row < len(self.reader.rows) and self.reader.rows[row] == found[0][0] else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


class StoredEmbeddings:
    """The searchable photos' embeddings by row (`embeddings[rows]`, float32), read from the store."""

    def __init__(self, reader: StoreReader):
        self.reader = reader
        self.shape = (len(reader.rows), reader.dim)

    def __getitem__(self, rows) -> np.ndarray:
        single = np.ndim(rows) == 0
        ids = self.reader.row_ids(np.atleast_1d(rows))
        found = dict(self.reader.query(f"SELECT rowid, embedding FROM photos WHERE rowid IN "
                                        f"({', '.join('?' * len(ids))})", [int(i) for i in ids]))
        vectors = decode_embeddings([found[int(i)] for i in ids], self.reader.dtype, self.reader.dim)
        return vectors[0] if single else vectors


class StoredHashes:
    """name -> content hash of a searchable photo (`get`)."""

    def __init__(self, reader: StoreReader):
        self.reader = reader

    def get(self, name: str, default=None):
        found = self.reader.query("SELECT sha256 FROM photos WHERE path = ? AND excluded IS NULL", (name,))
        return found[0][0] if found else default


class KeptOut:
    """The names the legal filter keeps out (`name in kept_out`, `len`)."""

    def __init__(self, reader: StoreReader):
        self.reader = reader

    def __contains__(self, name: object) -> bool:
        return bool(self.reader.query("SELECT 1 FROM photos WHERE path = ? AND excluded IS NOT NULL", (name,)))

    def __len__(self) -> int:
        return self.reader.query("SELECT count(*) FROM photos WHERE excluded IS NOT NULL")[0][0]
