"""Atomic file writes (a crash mid-write leaves the previous file intact, never a half-written one), and caches kept
as folders of shards (a save writes what it adds, not the whole cache)."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target` (replace_dir), on failure it is
    removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def replace_dir(tmp: Path, target: Path) -> None:
    """Put folder `tmp` at `target`; the old `target` is removed only once the new one is in place."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


class ShardFolder:
    """A cache of key -> item kept as a folder of shard files (`path` without its suffix): each `add` writes,
    atomically, a shard of its own, and past `max_shards` shards they are merged into one (another process's too,
    read then: nothing it added is lost). A single file at `path` (the earlier layout) is read as one more shard and
    merged away with the rest. `read(file)` gives a shard's items (None: damaged); `write(file, items)` writes one."""

    def __init__(self, path: str | Path, read: Callable[[Path], dict | None], write: Callable[[Path, dict], None],
                 max_shards: int = 32):
        self.path, self.folder = Path(path), Path(path).with_suffix("")
        self.read, self.write, self.max_shards = read, write, max_shards

    def shards(self) -> list[Path]:
        return ([self.path] if self.path.is_file() else []) + sorted(self.folder.glob(f"*{self.path.suffix}"))

    def load(self) -> tuple[dict, list[Path]]:
        """(every shard's items, the shards that could not be read)."""
        items, damaged = {}, []
        for shard in self.shards():
            found = self.read(shard)
            if found is None:
                damaged.append(shard)
            else:
                items.update(found)
        return items, damaged

    def add(self, items: dict) -> None:
        """Write `items` as a shard without reading the others (merged past max_shards)."""
        if not items:
            return
        self._write(items)
        shards = self.shards()
        if len(shards) > self.max_shards:
            merged: dict = {}
            for shard in shards:
                merged.update(self.read(shard) or {})
            kept = self._write(merged)
            for shard in shards:
                if shard != kept:
                    shard.unlink(missing_ok=True)

    def _write(self, items: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = self.folder / f"{time.time_ns():020d}-{os.getpid()}{self.path.suffix}"
        with atomic_path(shard) as tmp:
            self.write(tmp, items)
        return shard
