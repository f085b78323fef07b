"""The index store: one SQLite database per index folder (`index.sqlite`), a row per photo.

SQLite carries what the index needs of a store: transactions (a run killed at any point leaves the last committed
version, and a reader never sees half of one), rows that are written only where they changed, and a file a server
opens without reading it whole. Why SQLite and not Lance or a home-made format: docs/experiments.md (issue 30).

Tables:
- `info`: the store's format, the model's fingerprint, the catalog folder, the committed version (0: an indexing
  run has started but never finished; no index yet), the embeddings' width and type.
- `photos`: the committed index. path, size, mtime_ns, sha256; the metadata columns (wsense.serving.metadata: all
  NULL for an entry read before metadata); the image check's version and verdict; why the legal filter keeps the
  photo out (NULL: searchable); the embedding (float32 bytes, or another of config.INDEX_DTYPES in a store made so); the
  version that last wrote the row; a digest of all of it, so a save rewrites only the rows that changed.
- `progress`: what a run in progress has embedded so far (path, size, mtime_ns, sha256, fingerprint, embedding),
  committed every `embedding.commit_every` photos; the rerun of a killed run takes its photos from there. It is
  emptied in the transaction that commits the index.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from wsense.config import INDEX_DTYPES
from wsense.errors import WsenseError

STORE_FILE = "index.sqlite"
STORE_FORMAT = "wsense-store-1"
META_COLUMNS = ("folder", "width", "height", "orientation", "taken", "camera", "lens")  # photo_metadata's fields
_ROW_COLUMNS = ("path", "size", "mtime_ns", "sha256", *META_COLUMNS, "meta_known", "check_version", "check_verdict",
                "excluded", "embedding", "version", "digest")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, folder TEXT, width INTEGER, height INTEGER, orientation TEXT, taken TEXT, camera TEXT,
    lens TEXT, meta_known INTEGER NOT NULL, check_version TEXT, check_verdict TEXT, excluded TEXT,
    embedding BLOB NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS progress (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, fingerprint TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS photos_camera ON photos (camera) WHERE excluded IS NULL;
"""


# How a store may keep its embeddings (config.INDEX_DTYPES). float16 halves the disk. int10 takes 5/16 of it, for
# catalogs of millions whose disk counts: a float32 scale, then each component in 511ths of the largest, 10 bits (its
# 8 high bits a byte each, then its 2 low bits four to a byte); cosines within about 3e-4. Why 10 bits and not 8:
# docs/experiments.md.
_LOW_SHIFTS = np.array([0, 2, 4, 6], np.uint8)


def encode_embeddings(vectors: np.ndarray, dtype: str) -> list[bytes]:
    """Embeddings (rows x dim) as a store of `dtype` keeps them, a blob each."""
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    if dtype != "int10":
        return [row.tobytes() for row in vectors.astype(dtype)]
    n, dim = vectors.shape
    scales = (np.maximum(np.abs(vectors).max(axis=1, initial=0.0), 1e-30) / 511).astype(np.float32)
    levels = (np.round(vectors / scales[:, None]).astype(np.int16) + 512).astype(np.uint16)  # 1 .. 1023
    low = np.zeros((n, -(-dim // 4) * 4), np.uint8)
    low[:, :dim] = levels & 3
    packed = np.bitwise_or.reduce(low.reshape(n, -1, 4) << _LOW_SHIFTS, axis=2).astype(np.uint8)
    rows = np.hstack([scales[:, None].view(np.uint8), (levels >> 2).astype(np.uint8), packed])
    return [row.tobytes() for row in rows]


def decode_embeddings(blobs: list[bytes], dtype: str, dim: int) -> np.ndarray:
    """The float32 embeddings (rows x dim) of blobs a store of `dtype` keeps."""
    joined = b"".join(blobs)
    if dtype != "int10":
        return np.frombuffer(joined, dtype).reshape(len(blobs), dim).astype(np.float32)
    rows = np.frombuffer(joined, np.uint8).reshape(len(blobs), 4 + dim + -(-dim // 4))
    scales = rows[:, :4].copy().view(np.float32)
    low = ((rows[:, 4 + dim:, None] >> _LOW_SHIFTS) & 3).reshape(len(blobs), -(-dim // 4) * 4)[:, :dim]
    levels = (rows[:, 4:4 + dim].astype(np.int16) << 2 | low) - 512
    return levels.astype(np.float32) * scales


def damaged(directory: Path, why: str) -> WsenseError:
    return WsenseError(f"{directory}: damaged or foreign index ({why}); rebuild it with `wsense index IMAGE_FOLDER "
                       "--rebuild`")


class IndexStore:
    """The store of one index folder. Every call opens its own connection: a server's threads and an indexing run
    in the same process never share one."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / STORE_FILE

    def exists(self) -> bool:
        """Whether a store file is here (committed or not)."""
        return self.path.is_file()

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise WsenseError(f"{self.directory}: no index here")
        try:
            with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
                # Rows of a float32 embedding are about 1.8 KB: 4 KB pages would leave a fifth of the file empty
                # (set before anything is written; an existing store keeps its own).
                db.execute("PRAGMA page_size = 16384")
                db.execute("PRAGMA journal_mode=WAL")  # readers go on while a run commits
                db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
                if write:  # one transaction: a reader never sees a store without its format
                    db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} INSERT OR IGNORE INTO info VALUES "
                                     f"('format', '{STORE_FORMAT}'), ('version', '0'); COMMIT;")
                self._check_format(db)
                yield db
        except sqlite3.DatabaseError as error:  # not a database, a torn file, a foreign schema
            raise damaged(self.directory, f"{type(error).__name__}: {error}") from None

    def reader(self):
        """A connection to read the store with (a context manager; closed on leaving it)."""
        return self._connect()

    def _check_format(self, db: sqlite3.Connection) -> None:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        found = db.execute("SELECT value FROM info WHERE key = 'format'").fetchone() if "info" in tables else None
        if found is None or found[0] != STORE_FORMAT or not {"photos", "progress"} <= tables:
            raise damaged(self.directory, f"format {found[0] if found else 'unknown'}, expected {STORE_FORMAT}")

    # -- the committed index --------------------------------------------------------------------------
    def info(self) -> dict[str, str]:
        """format, version, and (once an index is committed) fingerprint and root."""
        with self._connect() as db:
            return dict(db.execute("SELECT key, value FROM info"))

    def committed_version(self) -> int:
        """The version of the committed index (0: none yet, or no store here)."""
        if not self.exists():
            return 0
        return int(self.info()["version"])

    def read(self) -> tuple[dict[str, str], list[dict], np.ndarray]:
        """The committed index: its info, the entries (sorted by path) and their embeddings (rows x dim)."""
        with self._connect() as db:
            db.execute("BEGIN")  # one snapshot: a run committing meanwhile is not half seen
            info = dict(db.execute("SELECT key, value FROM info"))
            rows = db.execute(f"SELECT {', '.join(_ROW_COLUMNS)} FROM photos ORDER BY path").fetchall()
            db.execute("COMMIT")
        entries, blobs = [], []
        for row in rows:
            values = dict(zip(_ROW_COLUMNS, row))
            entry = {key: values[key] for key in ("path", "size", "mtime_ns", "sha256")}
            if values["meta_known"]:
                entry["meta"] = {key: values[key] for key in META_COLUMNS}
            if values["check_verdict"] is not None:
                entry["check"] = json.loads(values["check_verdict"])
            entry["excluded"] = values["excluded"]
            entries.append(entry)
            blobs.append(values["embedding"])
        return info, entries, decode_embeddings(blobs, info.get("dtype", "float32"), int(info.get("dim", 0)))

    def write(self, root: Path, fingerprint: str, entries: list[dict], embeddings: np.ndarray,
              dtype: str | None = None) -> int:
        """Commit `entries` (with their embeddings) as the next version, in one transaction: rows that changed are
        rewritten, rows of photos no longer there deleted, the rest left as they are; the progress of the run that
        made them is dropped with it. Returns the new version."""
        return self.write_chunks(root, fingerprint, [(entries, embeddings)], dtype)

    def write_chunks(self, root: Path, fingerprint: str, chunks: Iterable[tuple[list[dict], np.ndarray]],
                     dtype: str | None = None) -> int:
        """`write` for a catalog given chunk by chunk (entries and their embeddings), so that one never needs all of
        a large catalog in memory. `dtype`: how a new store keeps the embeddings, one of INDEX_DTYPES (float32 by
        default); a store keeps the one it began with."""
        with self._connect(write=True) as db:
            # Paths arrive in no order the path index's pages follow: with the default 2 MB of cache, a 10M
            # catalog's inserts slowed threefold once that index outgrew it.
            db.execute("PRAGMA cache_size = -131072")
            db.execute("BEGIN IMMEDIATE")
            try:
                version = int(db.execute("SELECT value FROM info WHERE key = 'version'").fetchone()[0]) + 1
                kept = db.execute("SELECT value FROM info WHERE key = 'dtype'").fetchone()
                dtype = kept[0] if kept else dtype or "float32"
                if dtype not in INDEX_DTYPES:
                    raise WsenseError(f"{self.directory}: embeddings as {dtype}? {' or '.join(INDEX_DTYPES)}")
                stored = dict(db.execute("SELECT path, digest FROM photos"))
                dim = 0
                for entries, embeddings in chunks:
                    embeddings = np.asarray(embeddings, np.float32)
                    dim = embeddings.shape[1] if embeddings.ndim == 2 else dim
                    rows = []
                    for entry, blob in zip(entries, encode_embeddings(embeddings, dtype)):
                        row = _row(entry, blob, version)
                        if stored.pop(entry["path"], None) != row[-1]:
                            rows.append(row)
                    db.executemany(f"INSERT OR REPLACE INTO photos ({', '.join(_ROW_COLUMNS)}) VALUES "
                                   f"({', '.join('?' * len(_ROW_COLUMNS))})", rows)
                db.executemany("DELETE FROM photos WHERE path = ?", [(path,) for path in stored])
                db.execute("DELETE FROM progress")
                db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)", [
                    ("version", str(version)), ("fingerprint", fingerprint), ("root", str(Path(root).resolve())),
                    ("dim", str(dim)), ("dtype", dtype)])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return version

    # -- a run's progress ------------------------------------------------------------------------------
    def commit_progress(self, fingerprint: str, records: list[tuple[str, int, int, str]],
                        embeddings: np.ndarray) -> None:
        """Keep what a run has embedded so far: (path, size, mtime_ns, sha256) and the embedding of each."""
        if not records:
            return
        embeddings = np.asarray(embeddings, np.float32)
        with self._connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?, ?, ?)",
                           [(*record, fingerprint, vector.tobytes()) for record, vector in zip(records, embeddings)])
            db.execute("COMMIT")

    def progress(self, fingerprint: str) -> dict[str, tuple[int, int, str, np.ndarray]]:
        """path -> (size, mtime_ns, sha256, embedding) of every photo a run of this model committed and no index
        took in yet (another model's progress is passed over)."""
        if not self.exists():
            return {}
        with self._connect() as db:
            rows = db.execute("SELECT path, size, mtime_ns, sha256, embedding FROM progress WHERE fingerprint = ?",
                              (fingerprint,)).fetchall()
        return {path: (size, mtime, sha, np.frombuffer(blob, np.float32)) for path, size, mtime, sha, blob in rows}

    def progress_count(self) -> int:
        if not self.exists():
            return 0
        with self._connect() as db:
            return db.execute("SELECT count(*) FROM progress").fetchone()[0]

    def clear_progress(self) -> None:
        if self.exists():
            with self._connect(write=True) as db:
                db.execute("DELETE FROM progress")


def _row(entry: dict, blob: bytes, version: int) -> tuple:
    meta, check = entry.get("meta"), entry.get("check")
    values = (entry["path"], int(entry["size"]), int(entry["mtime_ns"]), entry["sha256"],
              *((meta or {}).get(key) for key in META_COLUMNS), int(meta is not None),
              (check or {}).get("version"), None if check is None else json.dumps(check, sort_keys=True),
              entry.get("excluded"), blob)
    digest = hashlib.sha256(json.dumps(values[:-1], default=str).encode() + blob).hexdigest()[:32]
    return (*values, version, digest)
