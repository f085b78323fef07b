"""The first stage on Milvus (`search.first_stage: milvus`): the catalog's vectors in a Milvus collection, for
catalogs shared between machines or too large for one process. `search.milvus_uri` is a local file for Milvus Lite
(embedded, no server: what tests and a laptop use) or a cluster's URI (`http://host:19530`): the same code.

The collection mirrors the index (the index folder stays the record of what was embedded and checked): one row per
photo with its embedding (and, under the query-bank ranking, its offset as one more dimension, as FirstStage does
for FAISS), the legal filter's verdict and the metadata that filters push down. Each start or refresh upserts only
the rows whose content hash or offset changed and deletes those of photos gone. The fusion re-rank stays in the API
process, over the shortlist.
"""
from __future__ import annotations

import hashlib
import logging
import math
import sys
from collections import defaultdict

import numpy as np

from wsense.errors import WsenseError
from wsense.serving.metadata import MetadataFilter

FINGERPRINT_PROPERTY = "wsense.fingerprint"
MAX_LIMIT = 16_384  # Milvus answers at most this many hits per query
_clients: dict[str, object] = {}


def collection_name(index_dir) -> str:
    """A default collection name for an index folder (Milvus names: letters, digits and underscores)."""
    return "wsense_" + hashlib.sha256(str(index_dir).encode()).hexdigest()[:16]


def _client(uri: str):
    """One client per URI and process (Milvus Lite lets one process at a time open its file)."""
    if uri not in _clients:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise WsenseError("search.first_stage: milvus needs pymilvus and milvus-lite (pip install "
                              "'wsense[milvus]')") from None
        try:
            _clients[uri] = MilvusClient(uri, timeout=10)
        except Exception as error:  # noqa: BLE001 - pymilvus raises its own exception types, and others underneath
            raise WsenseError(f"cannot reach Milvus at {uri}: {str(error).splitlines()[0][:300]}") from None
    return _clients[uri]


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_expression(filters: MetadataFilter | None) -> str:
    """The Milvus filter for the photos a search may show. It may let through more than `filters.allows` (LIKE reads
    % and _ in a name as wildcards), never fewer: the engine applies the exact filter to what comes back."""
    parts = ["excluded == false"]
    if filters:
        if filters.folder:
            parts.append(f"(folder == {_quoted(filters.folder)} or folder like {_quoted(filters.folder + '/%')})")
        if filters.orientation:
            parts.append(f"orientation == {_quoted(filters.orientation)}")
        for field, wanted in (("camera", filters.camera), ("lens", filters.lens)):
            if wanted:
                parts.append(f"{field} like {_quoted('%' + wanted + '%')}")
        if filters.taken_from:
            parts.append(f"taken >= {_day(filters.taken_from.isoformat())}")
        if filters.taken_to:
            parts.append(f"taken <= {_day(filters.taken_to.isoformat())}")
        if filters.taken_from or filters.taken_to:
            parts.append("taken > 0")
    return " and ".join(parts)


def _day(iso: str | None) -> int:
    return int(iso[:10].replace("-", "")) if iso else 0


class MilvusFirstStage:
    """FirstStage's search over a Milvus collection: rows of the engine's searchable photos, best first."""

    method = "milvus"

    def __init__(self, uri: str, collection: str, fingerprint: str, entries: list[dict], embeddings: np.ndarray,
                 searchable: list[int], offsets: np.ndarray | None = None, exact_below: int = 50_000,
                 nprobe: int = 64):
        """`entries`, `embeddings`: the whole index (kept-out photos too, marked); `searchable`: the index rows the
        engine searches, in its order; `offsets`: their query-bank offsets (None: plain cosine). A collection made
        for fewer than `exact_below` photos is searched exactly (FLAT), a larger one through an index (HNSW on a
        server, IVF_FLAT probing `nprobe` lists on Milvus Lite, which has no HNSW); the type is chosen when the
        collection is made."""
        self.uri, self.collection = uri, collection
        self.exact_below, self.nprobe, self.index_type = exact_below, nprobe, "FLAT"
        self.client = _client(uri)
        self.with_offsets = offsets is not None
        self.dim = embeddings.shape[1] + self.with_offsets
        self.row_of = {entries[i]["path"]: row for row, i in enumerate(searchable)}
        self.size = len(searchable)
        offset_of = dict(zip(searchable, offsets)) if offsets is not None else {}
        self._open(fingerprint, len(entries))
        self.upserted, self.deleted = self._sync(entries, embeddings, offset_of)

    def _open(self, fingerprint: str, size: int) -> None:
        from pymilvus import DataType, MilvusClient

        client, name = self.client, self.collection
        if client.has_collection(name):
            info = client.describe_collection(name)
            built_by = (info.get("properties") or {}).get(FINGERPRINT_PROPERTY)
            dims = [field["params"].get("dim") for field in info["fields"] if field["name"] == "vector"]
            if built_by != fingerprint:
                raise WsenseError(f"Milvus collection {name} at {self.uri} was built by another model (fingerprint "
                                  f"{built_by}, this model {fingerprint}); drop it or set search.milvus_collection")
            if dims != [self.dim]:  # the ranking changed (the query-bank offset is one more dimension)
                client.drop_collection(name)
        if not client.has_collection(name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("path", DataType.VARCHAR, is_primary=True, max_length=4096)
            schema.add_field("key", DataType.VARCHAR, max_length=128)  # content hash and offset: what changes a row
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("excluded", DataType.BOOL)
            for field in ("folder", "orientation", "camera", "lens"):
                schema.add_field(field, DataType.VARCHAR, max_length=4096)
            schema.add_field("taken", DataType.INT64)  # YYYYMMDD, 0 when unknown
            index = client.prepare_index_params()
            if size < self.exact_below:
                index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
            elif self.uri.startswith(("http://", "https://", "tcp://")):
                index.add_index(field_name="vector", index_type="HNSW", metric_type="IP",
                                params={"M": 16, "efConstruction": 200})
            else:
                index.add_index(field_name="vector", index_type="IVF_FLAT", metric_type="IP",
                                params={"nlist": max(1, int(math.sqrt(size)))})
            client.create_collection(name, schema=schema, index_params=index)
            client.alter_collection_properties(name, properties={FINGERPRINT_PROPERTY: fingerprint})
        described = client.describe_index(name, "vector") or {}
        self.index_type = described.get("index_type", "FLAT")
        client.load_collection(name)  # a reopened collection is searchable only once loaded

    def _stored_keys(self) -> dict[str, str]:
        # Milvus Lite keeps no server timestamp for iterators; pymilvus warns of it on every call, to no purpose here.
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
        keys = {}
        iterator = self.client.query_iterator(self.collection, batch_size=4096, filter='path != ""',
                                              output_fields=["path", "key"])
        while batch := iterator.next():
            keys.update((row["path"], row["key"]) for row in batch)
        iterator.close()
        return keys

    def _sync(self, entries: list[dict], embeddings: np.ndarray, offset_of: dict[int, float]) -> tuple[int, int]:
        stored = self._stored_keys()

        def row(i: int, entry: dict, key: str) -> dict:
            offset = float(offset_of.get(i, 0.0))
            meta = entry.get("meta") or {}
            return {"path": entry["path"], "key": key,
                    "vector": embeddings[i].tolist() + ([-offset] if self.with_offsets else []),
                    "excluded": bool(entry.get("excluded")), "folder": meta.get("folder") or "",
                    "orientation": meta.get("orientation") or "", "camera": (meta.get("camera") or "").lower(),
                    "lens": (meta.get("lens") or "").lower(), "taken": _day(meta.get("taken"))}

        changed = []  # (entry row, key) of the photos Milvus does not hold as they are now
        for i, entry in enumerate(entries):
            offset = float(offset_of.get(i, 0.0))
            key = f"{entry['sha256']}:x" if entry.get("excluded") else f"{entry['sha256']}:{offset:.7g}"
            if stored.get(entry["path"]) != key:
                changed.append((i, key))
        # Rows as Python lists only a thousand at a time: a million at once would hold about 12 GB of floats.
        for start in range(0, len(changed), 1000):
            self.client.upsert(self.collection, [row(i, entries[i], key) for i, key in changed[start:start + 1000]])
        gone = sorted(set(stored) - {entry["path"] for entry in entries})
        for start in range(0, len(gone), 1000):
            self.client.delete(self.collection, ids=gone[start:start + 1000])
        if changed or gone:
            self.client.flush(self.collection)  # Milvus Lite searches rows not yet flushed 20 to 50 times slower
            print(f"Milvus {self.collection}: {len(changed)} photos upserted, {len(gone)} deleted", file=sys.stderr)
        return len(changed), len(gone)

    def search(self, queries: np.ndarray, k: int, offset_weight: float | np.ndarray = 1.0,
               filters: list[MetadataFilter | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, engine rows), each (queries x k'), best first, padded with -1 where fewer photos qualify;
        `filters`: one per query (pushed down to Milvus with the legal exclusion)."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if self.with_offsets:
            weights = np.broadcast_to(np.asarray(offset_weight, np.float32).reshape(-1, 1), (len(queries), 1))
            queries = np.hstack([queries, weights])
        k = min(k, self.size, MAX_LIMIT)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        if k == 0:
            return scores, rows
        groups: dict[str, list[int]] = defaultdict(list)
        for i, wanted in enumerate(filters or [None] * len(queries)):
            groups[filter_expression(wanted)].append(i)
        for expression, members in groups.items():
            params = {"nprobe": self.nprobe} if self.index_type == "IVF_FLAT" else {"ef": max(64, k)} if (
                self.index_type == "HNSW") else {}
            hits = self.client.search(self.collection, data=queries[members].tolist(), limit=k, filter=expression,
                                      output_fields=["path"], search_params={"metric_type": "IP", "params": params})
            for i, found in zip(members, hits):
                known = [(hit["distance"], self.row_of[hit["entity"]["path"]]) for hit in found
                         if hit["entity"]["path"] in self.row_of]
                for j, (score, row) in enumerate(known):
                    scores[i, j], rows[i, j] = score, row
        return scores, rows
