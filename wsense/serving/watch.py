"""Live catalog: `wsense serve --watch` follows the catalog folder while serving.

watchfiles reports what changed (inotify, FSEvents or ReadDirectoryChangesW; polling where the file system has none,
or with WATCHFILES_FORCE_POLLING=1 for network shares). A burst of changes (a card being copied) arrives as one set
once the folder has been quiet for `debounce_ms`, and each set brings one `SearchEngine.refresh`: new and changed
photos are embedded and checked (legal filter, image check) before the index is saved and the new catalog replaces
the old one between two searches. Until then the previous catalog is served whole; a photo still being written is
skipped as unreadable and taken when its last write arrives.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path

from watchfiles import Change, DefaultFilter, watch

from wsense.data import IMAGE_EXTENSIONS
from wsense.errors import WsenseError


class CatalogChanges(DefaultFilter):
    """The changes that can alter the catalog: photos, folders (one moved in or out carries photos with it) and
    anything removed; never the index's own files, wherever the user put them."""

    def __init__(self, ignore: list[Path]):
        paths = []
        for path in ignore:
            # The index is written as a hidden sibling folder that then takes its place (wsense.io.atomic_dir).
            paths += [str(path), str(path.parent / f".{path.name}.")]
        super().__init__(ignore_paths=paths)

    def __call__(self, change: Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        if change == Change.deleted:
            return True
        found = Path(path)
        return found.suffix.lower() in IMAGE_EXTENSIONS or found.is_dir()


class CatalogWatcher:
    """Refreshes `engine` on every change to its folder, from a background thread, until `stop`."""

    def __init__(self, engine, debounce_ms: int = 1600, log=None):
        if engine.live.image_dir is None:
            raise WsenseError("--watch needs the image folder (--images FOLDER): an index folder alone has none to "
                              "follow")
        self.engine = engine
        self.debounce_ms = debounce_ms
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.refreshes = 0  # how many times the catalog was brought up to date, and the last outcome
        self.refreshed_at: float | None = None
        self.last_report = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "CatalogWatcher":
        self._thread = threading.Thread(target=self._run, name="wsense-catalog-watcher", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        engine = self.engine
        ignore = [Path(engine.index_dir).resolve(), Path(engine.config.cache_dir).resolve()]
        changes = watch(Path(engine.live.image_dir).resolve(), watch_filter=CatalogChanges(ignore),
                        debounce=self.debounce_ms, stop_event=self._stop, raise_interrupt=False,
                        rust_timeout=500, yield_on_timeout=True)
        self.log(f"watching {engine.live.image_dir} for added, changed and removed photos")
        for found in changes:
            self._started.set()  # the first (empty) set arrives once the watch is in place
            if found:
                self.refresh(f"{len(found)} change(s)")

    def refresh(self, why: str) -> None:
        """One refresh; a failure is logged and the previous catalog stays in service."""
        began = time.perf_counter()
        try:
            report = self.engine.refresh()
        except WsenseError as error:
            self.last_error = str(error)
            self.log(f"catalog not refreshed ({why}): {error}")
            return
        except Exception:  # noqa: BLE001 - a watcher that dies silently would serve a stale catalog forever
            self.last_error = traceback.format_exc(limit=3)
            self.log(f"catalog not refreshed ({why}):\n{self.last_error}")
            return
        self.refreshes += 1
        self.refreshed_at, self.last_report, self.last_error = time.time(), report, None
        self.log(f"catalog refreshed ({why}, {time.perf_counter() - began:.1f} s): {len(self.engine.images)} photos "
                 f"searchable\n{report}")
