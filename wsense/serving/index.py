"""The catalog index: every photo under a folder embedded once by the trained image tower.

An index folder holds `embeddings.npy` (one projected, L2-normalised row per photo) and `index.json` (the
photos' relative paths, sizes, modification times and content hashes, the model's fingerprint, and which
photos the legal filter keeps out of results). It is written atomically; a second run embeds only new or
changed photos and drops deleted ones. Unreadable photos are reported and skipped, and tried again next run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wsense.config import SearchConfig
from wsense.data import IMAGE_EXTENSIONS
from wsense.errors import WsenseError
from wsense.io import atomic_dir, file_sha256
from wsense.safety.filters import child_images
from wsense.serving.scoring import RelevanceScorer

INDEX_FORMAT = "wsense-index-1"
EMBEDDINGS_FILE, META_FILE = "embeddings.npy", "index.json"
EXCLUDED_BY_DESCRIPTION = "description mentions a child"
EXCLUDED_BY_IMAGE_CHECK = "image resembles child prompts"


def catalog_files(root: Path) -> list[str]:
    """Image files under `root` (recursive), as sorted paths relative to it."""
    if not root.is_dir():
        raise WsenseError(f"{root}: image folder not found")
    real_root = root.resolve()
    # A link that leads out of the catalog folder is not part of the catalog.
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.resolve().is_relative_to(real_root))


@dataclass
class IndexReport:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    excluded_by_description: int = 0
    excluded_by_image_check: int = 0

    def __str__(self) -> str:
        lines = [f"index: {self.added} added, {self.changed} changed, {self.removed} removed, "
                 f"{self.unchanged} unchanged, {len(self.skipped)} unreadable (skipped)",
                 f"legal filter: {self.excluded_by_description} photos kept out by their descriptions, "
                 f"{self.excluded_by_image_check} by the image check"]
        lines += [f"  skipped {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


@dataclass
class CatalogIndex:
    root: Path
    fingerprint: str
    entries: list[dict]  # path, size, mtime_ns, sha256, excluded (None or the reason)
    embeddings: np.ndarray

    @property
    def searchable(self) -> list[int]:
        return [i for i, entry in enumerate(self.entries) if not entry.get("excluded")]

    def save(self, directory: str | Path) -> None:
        with atomic_dir(directory) as tmp:
            np.save(tmp / EMBEDDINGS_FILE, self.embeddings.astype(np.float32))
            meta = {"format": INDEX_FORMAT, "fingerprint": self.fingerprint, "root": str(self.root.resolve()),
                    "entries": self.entries}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, fingerprint: str | None = None) -> "CatalogIndex":
        directory = Path(directory)
        if not (directory / META_FILE).is_file() or not (directory / EMBEDDINGS_FILE).is_file():
            raise WsenseError(f"{directory}: no index here; build one with `wsense index IMAGE_FOLDER --index-dir "
                              f"{directory}`")
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            embeddings = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise WsenseError(f"{directory}: damaged index ({type(exc).__name__}); rebuild it with "
                              "`wsense index IMAGE_FOLDER --rebuild`") from None
        if meta.get("format") != INDEX_FORMAT or len(meta.get("entries", [])) != len(embeddings):
            raise WsenseError(f"{directory}: damaged or foreign index; rebuild it with `wsense index IMAGE_FOLDER "
                              "--rebuild`")
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise WsenseError(f"{directory}: index was built by another model (fingerprint {meta['fingerprint']}, "
                              f"this model {fingerprint}); rebuild it with `wsense index {meta['root']} --index-dir "
                              f"{directory} --rebuild`")
        return cls(Path(meta["root"]), meta["fingerprint"], meta["entries"], embeddings)


def update_index(root: str | Path, directory: str | Path, scorer: RelevanceScorer, fingerprint: str,
                 search: SearchConfig, descriptions: pd.DataFrame | None = None, rebuild: bool = False
                 ) -> tuple[CatalogIndex, IndexReport]:
    """Bring the index of `root` up to date: embed new and changed photos, drop deleted ones, re-apply the
    legal filter, and save atomically."""
    root, directory = Path(root), Path(directory)
    previous = None
    if not rebuild and (directory / META_FILE).exists():
        previous = CatalogIndex.load(directory, fingerprint)
    old = ({entry["path"]: (entry, previous.embeddings[i]) for i, entry in enumerate(previous.entries)}
           if previous else {})
    report = IndexReport()
    files = catalog_files(root)
    keep: dict[str, tuple[dict, np.ndarray]] = {}
    to_embed: list[str] = []
    hashes: dict[str, str] = {}
    for path in files:
        stat = (root / path).stat()
        entry = old.get(path, (None, None))[0]
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            keep[path] = old[path]
            continue
        hashes[path] = file_sha256(root / path)
        if entry and entry["sha256"] == hashes[path]:
            keep[path] = ({**entry, "mtime_ns": stat.st_mtime_ns}, old[path][1])
            continue
        to_embed.append(path)
    report.removed = len(set(old) - set(files))
    report.unchanged = len(keep)
    catalog_path = {root / path: path for path in to_embed}
    done, vectors, skipped = scorer.embed_photos(list(catalog_path), skip_unreadable=True, desc="indexing")
    report.skipped += [(catalog_path[file], why) for file, why in skipped]
    for file, vector in zip(done, vectors.numpy()):
        path = catalog_path[file]
        stat = (root / path).stat()
        if path in old:
            report.changed += 1
        else:
            report.added += 1
        keep[path] = ({"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hashes[path]},
                      vector)
    paths = sorted(keep)
    entries = [dict(keep[p][0], excluded=None) for p in paths]
    dim = scorer.model.text_projection.out_features
    embeddings = np.stack([keep[p][1] for p in paths]).astype(np.float32) if paths else np.zeros((0, dim), np.float32)
    _apply_legal_filter(entries, embeddings, scorer, search, descriptions, report)
    index = CatalogIndex(root, fingerprint, entries, embeddings)
    index.save(directory)
    return index, report


def _apply_legal_filter(entries: list[dict], embeddings: np.ndarray, scorer: RelevanceScorer, search: SearchConfig,
                        descriptions: pd.DataFrame | None, report: IndexReport) -> None:
    described = child_images(descriptions) if descriptions is not None and len(descriptions) else set()
    if len(entries) and search.child_prompts:
        prompts = scorer.embed_texts(search.child_prompts)
        child_score = scorer.relevance(prompts, torch.from_numpy(embeddings)).max(dim=0).values.numpy()
    else:
        child_score = np.zeros(len(entries))
    for entry, score in zip(entries, child_score):
        name = entry["path"]
        if name in described or Path(name).name in described:
            entry["excluded"] = EXCLUDED_BY_DESCRIPTION
            report.excluded_by_description += 1
        elif score >= search.child_threshold:
            entry["excluded"] = EXCLUDED_BY_IMAGE_CHECK
            report.excluded_by_image_check += 1


def read_descriptions(path: str | Path) -> pd.DataFrame:
    """A CSV of (image, text) descriptions for the catalog legal filter."""
    path = Path(path)
    if not path.is_file():
        raise WsenseError(f"{path}: descriptions file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise WsenseError(f"{path}: cannot parse descriptions CSV ({str(exc).strip().splitlines()[-1]})") from None
    missing = [c for c in ("image", "text") if c not in frame.columns]
    if missing:
        raise WsenseError(f"{path}: missing column(s) {', '.join(missing)} (need image,text)")
    return frame[["image", "text"]]
