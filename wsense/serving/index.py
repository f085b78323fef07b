"""The catalog index: every photo under a folder embedded once by the trained image tower.

An index folder holds one store (wsense.serving.store: `index.sqlite`), a row per photo: its relative path, size,
modification time and content hash, its metadata, the image check's verdict with the check's version, why the
legal filter keeps it out of results (if it does) and its projected, L2-normalised embedding; with the model's
fingerprint. A second run embeds only new or changed photos and drops deleted ones, and re-checks (without
re-embedding) the photos whose verdict came from another version of the image check; it commits the new version in
one transaction, rewriting only the rows that changed. Unreadable photos are reported and skipped, and tried again
next run.

While a run embeds, it commits its work every `embedding.commit_every` photos (the store's progress table). A run
that is killed leaves the previous index as it was, or none, never half of one; the next run takes every photo
whose size, modification time and content hash still match a committed one from there and embeds only the rest.
An index folder of the earlier format (`index.json` and `embeddings.npy`) is moved into a store when first opened.
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Union

import numpy as np

from wsense.data import IMAGE_EXTENSIONS
from wsense.errors import WsenseError
from wsense.io import file_sha256
from wsense.safety.screener import PhotoScreener
from wsense.safety.filters import child_images
from wsense.safety.reviews import Review, read_reviews
from wsense.safety.rules import mentions_child
from wsense.serving.scoring import RelevanceScorer
from wsense.serving.metadata import photo_metadata, unknown_metadata
from wsense.serving.store import IndexStore
from wsense.serving.thumbnails import ensure_thumbnails

if TYPE_CHECKING:
    # pandas (75 MB, 0.4 s to import) only where a table is read: a server over its index never needs it
    import pandas as pd

INDEX_FORMAT = "wsense-index-1"  # the earlier format: index.json and embeddings.npy, moved into a store on first open
EMBEDDINGS_FILE, META_FILE, PROGRESS_DIR = "embeddings.npy", "index.json", "progress"
EXCLUDED_BY_DESCRIPTION = "description mentions a child"
EXCLUDED_BY_IMAGE_CHECK = "image check"
EXCLUDED_BY_REVIEW = "review"


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
    excluded_by_review: int = 0  # photos a person reviewed as showing a child (safety.reviews)
    released_by_review: int = 0  # photos the image check keeps out that a person reviewed as showing none
    resumed: int = 0  # of those added or changed, the photos an interrupted run had embedded and committed
    checked: int = 0  # photos the image check looked at in this run (new, changed, or checked by another version)
    check_version: str = ""
    thumbnails: int = 0  # thumbnails made in this run

    def __str__(self) -> str:
        lines = [f"index: {self.added} added, {self.changed} changed, {self.removed} removed, "
                 f"{self.unchanged} unchanged, {len(self.skipped)} unreadable (skipped); "
                 f"{self.thumbnails} thumbnails made" + (f"; {self.resumed} embedded by an interrupted run, taken "
                                                         "from its progress" if self.resumed else ""),
                 f"legal filter: {self.excluded_by_description} photos kept out by their descriptions, "
                 f"{self.excluded_by_image_check} by the image check ({self.check_version}; {self.checked} "
                 "checked in this run)" + (f", {self.excluded_by_review} by a review; {self.released_by_review} "
                                           "shown that the check keeps out, by a review"
                                           if self.excluded_by_review or self.released_by_review else "")]
        lines += [f"  skipped {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


@dataclass
class CatalogIndex:
    root: Path
    fingerprint: str
    entries: list[dict]  # path, size, mtime_ns, sha256, meta (wsense.serving.metadata), check (the image check's
    # verdict), excluded (None or why)
    embeddings: np.ndarray

    @property
    def searchable(self) -> list[int]:
        return [i for i, entry in enumerate(self.entries) if not entry.get("excluded")]

    @property
    def excluded(self) -> list[dict]:
        """The entries the legal filter keeps out of results, each with its reason (`excluded`)."""
        return [entry for entry in self.entries if entry.get("excluded")]

    def save(self, directory: str | Path, dtype: str | None = None) -> int:
        """Commit this index as the folder's next version (only changed rows are written); returns the version.
        `dtype`: how a new store keeps the embeddings (config.INDEX_DTYPES; an existing store keeps its own)."""
        return IndexStore(directory).write(self.root, self.fingerprint, self.entries, self.embeddings, dtype)

    @classmethod
    def load(cls, directory: str | Path, fingerprint: str | None = None) -> "CatalogIndex":
        open_store(directory)
        info, entries, embeddings = IndexStore(directory).read()
        check_fingerprint(directory, info, fingerprint)
        return cls(Path(info["root"]), info["fingerprint"], entries, embeddings)


def open_store(directory: str | Path, fingerprint: str | None = None) -> dict[str, str]:
    """The info of the index store in `directory` (an index of the earlier format moved into one first); an error
    where there is none, or where another model than `fingerprint` built it."""
    directory = Path(directory)
    store = IndexStore(directory)
    if not store.exists() and (directory / META_FILE).is_file():
        migrate_legacy(directory)
    if store.committed_version() == 0:
        raise no_index_here(directory)
    info = store.info()
    check_fingerprint(directory, info, fingerprint)
    return info


def check_fingerprint(directory: Path, info: dict[str, str], fingerprint: str | None) -> None:
    if fingerprint is not None and info["fingerprint"] != fingerprint:
        raise WsenseError(f"{directory}: index was built by another model (fingerprint {info['fingerprint']}, "
                          f"this model {fingerprint}); rebuild it with `wsense index {info['root']} --index-dir "
                          f"{directory} --rebuild`")


def no_index_here(directory: Path) -> WsenseError:
    return WsenseError(f"{directory}: no index here; build one with `wsense index IMAGE_FOLDER --index-dir "
                       f"{directory}`")


def remove_legacy_files(directory: Path) -> None:
    """The files of the earlier format, once the store holds the index (an interrupted run's progress shards
    included: their photos are embedded again)."""
    for name in (META_FILE, EMBEDDINGS_FILE):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / PROGRESS_DIR, ignore_errors=True)


def index_exists(directory: str | Path) -> bool:
    """Whether `directory` holds an index: a committed store, or one of the earlier format."""
    directory = Path(directory)
    return IndexStore(directory).committed_version() > 0 or (directory / META_FILE).is_file()


def migrate_legacy(directory: Path) -> None:
    """Move an index of the earlier format (index.json, embeddings.npy, progress shards) into a store: committed
    first, the old files removed after, so a kill in between leaves an index that opens."""
    if not (directory / EMBEDDINGS_FILE).is_file():
        raise no_index_here(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        embeddings = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise WsenseError(f"{directory}: damaged index ({type(exc).__name__}); rebuild it with "
                          "`wsense index IMAGE_FOLDER --rebuild`") from None
    if (not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT
            or len(meta.get("entries", [])) != len(embeddings)):
        raise WsenseError(f"{directory}: damaged or foreign index; rebuild it with `wsense index IMAGE_FOLDER "
                          "--rebuild`")
    IndexStore(directory).write(Path(meta["root"]), meta["fingerprint"], meta["entries"], embeddings)
    remove_legacy_files(directory)
    print(f"{directory}: index moved into {IndexStore(directory).path.name} ({len(embeddings)} photos)",
          file=sys.stderr)


def update_index(root: str | Path, directory: str | Path, scorer: RelevanceScorer, fingerprint: str,
                 checker: PhotoScreener, descriptions: Descriptions | None = None, rebuild: bool = False,
                 photo_batches=None) -> tuple[CatalogIndex, IndexReport]:
    """Bring the index of `root` up to date: embed new and changed photos, drop deleted ones, run the image check
    where its verdict is missing or stale, re-apply the legal filter, and save atomically. `photo_batches`: what
    embeds the photos, batch by batch (default: `scorer.photo_batches` in this process; or RayPhotoBatches)."""
    root, directory = Path(root), Path(directory)
    reviews = read_reviews(scorer.config.safety.reviews)  # a damaged file is named before any photo is embedded
    previous = None
    if not rebuild and index_exists(directory):
        previous = CatalogIndex.load(directory, fingerprint)
    old = ({entry["path"]: (entry, previous.embeddings[i]) for i, entry in enumerate(previous.entries)}
           if previous else {})
    store = IndexStore(directory)
    if rebuild:
        store.clear_progress()
    committed = store.progress(fingerprint)
    report = IndexReport(check_version=checker.version)
    files = catalog_files(root)
    keep: dict[str, tuple[dict, np.ndarray]] = {}
    to_embed: list[str] = []
    hashes: dict[str, str] = {}
    stats: dict[str, tuple[int, int]] = {}  # (size, mtime_ns) of the photos to embed, as first seen
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
        stats[path] = (stat.st_size, stat.st_mtime_ns)
    report.removed = len(set(old) - set(files))
    report.unchanged = len(keep)
    for path in to_embed:  # embedded by a run that did not finish, and unchanged since
        size, mtime, sha, vector = committed.get(path, (None, None, None, None))
        if (size, mtime, sha) == (*stats[path], hashes[path]):
            keep[path] = ({"path": path, "size": size, "mtime_ns": mtime, "sha256": sha}, vector)
            report.resumed += 1
    to_embed = [path for path in to_embed if path not in keep]
    catalog_path = {root / path: path for path in to_embed}
    # A frozen model's pooled features are the check's own: handed over, the backbone runs once per photo.
    shared = checker.shared_columns(scorer.config)
    pending: list[tuple[tuple[str, int, int, str], np.ndarray]] = []

    def commit_pending() -> None:
        store.commit_progress(fingerprint, [record for record, _ in pending],
                              np.stack([vector for _, vector in pending]))
        pending.clear()

    # The face models work on the same photos in a thread meanwhile: the check then finds their analyses cached.
    faces_ahead = checker.analyze_ahead(list(catalog_path), [hashes[path] for path in to_embed])
    try:
        for done, vectors, skipped, pooled in (photo_batches or scorer.photo_batches)(
                list(catalog_path), skip_unreadable=True, desc="indexing"):
            if shared and done and pooled is not None:
                checker.remember_features([hashes[catalog_path[file]] for file in done],
                                          np.asarray(pooled)[:, :shared])
            report.skipped += [(catalog_path[file], why) for file, why in skipped]
            for file, vector in zip(done, np.asarray(vectors)):
                path = catalog_path[file]
                stat = (root / path).stat()
                record = (path, stat.st_size, stat.st_mtime_ns, hashes[path])
                keep[path] = (dict(zip(("path", "size", "mtime_ns", "sha256"), record)), vector)
                pending.append((record, vector))
            if len(pending) >= scorer.config.embedding.commit_every:
                commit_pending()
        if pending:  # the image check and the thumbnails still to come can take as long again
            commit_pending()
    finally:
        faces_ahead.stop()
    report.added = sum(1 for path in keep if path not in old)
    report.changed = sum(1 for path in keep if path in old and keep[path][0]["sha256"] != old[path][0]["sha256"])
    paths = sorted(keep)
    entries = [dict(keep[p][0], excluded=None) for p in paths]
    for entry in entries:  # read once per new or changed photo (and for an index from before metadata)
        if "meta" not in entry:
            try:
                entry["meta"] = photo_metadata(root, entry["path"])
            except (OSError, SyntaxError, ValueError) as error:
                print(f"warning: {entry['path']}: metadata unreadable ({error})", file=sys.stderr)
                entry["meta"] = unknown_metadata(entry["path"])
    _run_image_check(root, entries, checker, report)
    dim = scorer.dim
    embeddings = np.stack([keep[p][1] for p in paths]).astype(np.float32) if paths else np.zeros((0, dim), np.float32)
    _apply_legal_filter(entries, descriptions, report, reviews)
    report.thumbnails = ensure_thumbnails(root, [entry for entry in entries if not entry["excluded"]],
                                          scorer.config.cache_dir)
    index = CatalogIndex(root, fingerprint, entries, embeddings)
    index.save(directory, scorer.config.embedding.index_dtype)
    remove_legacy_files(directory)  # an index of the earlier format, rebuilt: the store replaces it
    return index, report


def _run_image_check(root: Path, entries: list[dict], checker: PhotoScreener, report: IndexReport) -> None:
    """Give every entry the current check's verdict: photos checked by another version, or not at all, are
    checked now (faces and image features come from their caches where the photo was seen before)."""
    stale = [entry for entry in entries if (entry.get("check") or {}).get("version") != checker.version]
    results = checker.screen_photos([root / entry["path"] for entry in stale], hashes=[e["sha256"] for e in stale],
                                   skip_unreadable=True)
    for entry, result in zip(stale, results):
        if result.verdict is None:  # embedded, but too small or damaged for the check: never shown
            entry["check"] = {"version": checker.version, "child": True, "reason": f"cannot be checked: {result.error}"}
        else:
            entry["check"] = {"version": checker.version, **result.verdict.to_dict()}
    report.checked = len(stale)


Descriptions = Union["pd.DataFrame", Iterable[tuple[str, str]]]  # a table (columns image, text) or (image, text) pairs


def described_children(descriptions: Descriptions | None) -> set[str]:
    """The photos that any of their own descriptions says show a child."""
    if descriptions is None:
        return set()
    if hasattr(descriptions, "columns"):
        return child_images(descriptions) if len(descriptions) else set()
    return {image for image, text in descriptions if text and mentions_child(text)}


def _apply_legal_filter(entries: list[dict], descriptions: Descriptions | None, report: IndexReport,
                        reviews: dict[str, Review]) -> None:
    """Keep out each photo that its description, a person's review (by content) or else the image check says shows a
    child. A review overrules the check both ways; a description that mentions a child is not the photo's to review."""
    described = described_children(descriptions)
    for entry in entries:
        name, review = entry["path"], reviews.get(entry["sha256"])
        if name in described or Path(name).name in described:
            entry["excluded"] = EXCLUDED_BY_DESCRIPTION
            report.excluded_by_description += 1
        elif review is not None:
            entry["excluded"] = f"{EXCLUDED_BY_REVIEW}: {review.reason()}" if review.shows_child else None
            report.excluded_by_review += review.shows_child
            report.released_by_review += not review.shows_child and entry["check"]["child"]
        elif entry["check"]["child"]:
            entry["excluded"] = f"{EXCLUDED_BY_IMAGE_CHECK}: {entry['check']['reason']}"
            report.excluded_by_image_check += 1


def read_descriptions(path: str | Path) -> pd.DataFrame:
    """A CSV of (image, text) descriptions for the catalog legal filter."""
    path = Path(path)
    if not path.is_file():
        raise WsenseError(f"{path}: descriptions file not found")
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise WsenseError(f"{path}: cannot parse descriptions CSV ({str(exc).strip().splitlines()[-1]})") from None
    missing = [c for c in ("image", "text") if c not in frame.columns]
    if missing:
        raise WsenseError(f"{path}: missing column(s) {', '.join(missing)} (need image,text)")
    return frame[["image", "text"]]
