"""Searches that arrive together run together: one worker thread takes every request waiting in the queue (up to
`max_batch`) and hands them to `engine.search_many`, which puts all their texts through the text tower in one
batch. A request that finds the worker idle runs at once, alone, so one client waits no longer than before; under
load the queue fills while a batch runs, and the next batch takes all of it. The worker is also the only thread
that touches the text tower and its tokenizer.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from wsense.serving.requests import SearchRequest


class QueryBatcher:
    def __init__(self, engine, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.engine = engine
        self.max_batch = max_batch
        self.batches = 0  # batches run, and requests in them: what a load test reads
        self.requests = 0
        self._queue: queue.SimpleQueue[tuple[SearchRequest, Future]] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="wsense-query-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: SearchRequest) -> Future:
        """A Future of the request's SearchResult (or its WsenseError as the exception)."""
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.batches += 1
            self.requests += len(batch)
            try:
                results = self.engine.search_many([request for request, _ in batch])
            except BaseException as error:  # noqa: BLE001 - every waiting request must hear of it
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
