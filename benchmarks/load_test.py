"""Load test of `/api/search`: concurrent clients against a live server, as a new user would try it.

The server (uvicorn, one process, the real checkpoint and the 100 test photos, `search.*` from the config) runs in
a subprocess; the clients are asyncio keep-alive HTTP/1.1 connections in this process, each sending the 500 test
queries in turn (k=5) and waiting for each answer before the next. Printed per run: requests/s, p50 / p99 latency,
errors, and the server's mean batch. Runs, `--seconds` each: what `wsense serve` does (queries batched, the query
cache on: after the first round every query is a repeat), the same without the cache (every request runs the text
tower), and one request at a time without the cache (as before batching); with 1 client and `--clients` clients.

    python benchmarks/load_test.py [--checkpoint runs/final/best] [--clients 32] [--seconds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np


def serve(args) -> None:
    """The server subprocess: the engine as `wsense serve` builds it, plus a route with the batcher's counters."""
    import uvicorn

    from wsense.config import load_config
    from wsense.data import load_data
    from wsense.safety.screener import load_or_fit_screener
    from wsense.serving.search import SearchEngine
    from wsense.serving.web import create_app

    config = load_config(args.config)
    config.search.query_cache = args.query_cache
    data = load_data(config.data_dir)
    engine = SearchEngine(args.checkpoint, data.test_image_dir, settings=config, checker=load_or_fit_screener(config))
    app = create_app(engine, max_batch=args.max_batch)
    app.add_api_route("/_batches", lambda: {"batches": app.state.batcher.batches,
                                            "requests": app.state.batcher.requests})
    gc.freeze()  # as wsense.serving.web.serve does
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


async def client(host: str, port: int, paths: list[str], start: int, stop_at: float, latencies: list[float],
                 errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    try:
        while time.perf_counter() < stop_at:
            path = paths[i % len(paths)]
            i += 1
            began = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if status != 200 or b'"results"' not in body:
                errors.append(f"{status} {body[:120]!r}")
    except (OSError, asyncio.IncompleteReadError) as error:
        errors.append(repr(error))
    finally:
        writer.close()


async def load(port: int, paths: list[str], clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    warm: list[float] = []
    await asyncio.gather(*(client("127.0.0.1", port, paths, 7 * c, time.perf_counter() + 1.0, warm, [])
                           for c in range(clients)))
    latencies: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    await asyncio.gather(*(client("127.0.0.1", port, paths, 13 * c, began + seconds, latencies, errors)
                           for c in range(clients)))
    return latencies, errors, time.perf_counter() - began


def get_json(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args, max_batch: int, query_cache: int, paths: list[str], clients_runs: tuple[int, ...]) -> None:
    port = free_port()
    command = [sys.executable, __file__, "--serve", "--port", str(port), "--max-batch", str(max_batch),
               "--query-cache", str(query_cache), "--checkpoint", args.checkpoint] + (
        ["--config", args.config] if args.config else [])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                get_json(port, "/_batches")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start:\n{server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        label = ("batched" if max_batch > 1 else "one at a time") + (", cache" if query_cache else ", no cache")
        for clients in clients_runs:
            before = get_json(port, "/_batches")
            latencies, errors, elapsed = asyncio.run(load(port, paths, clients, args.seconds))
            after = get_json(port, "/_batches")
            ms = np.array(latencies) * 1000
            batch = (after["requests"] - before["requests"]) / max(1, after["batches"] - before["batches"])
            print(f"{label:>24}, {clients:2d} client(s): {len(latencies) / elapsed:6.1f} requests/s, "
                  f"p50 {np.percentile(ms, 50):6.1f} ms, p99 {np.percentile(ms, 99):6.1f} ms, "
                  f"{len(errors)} errors, mean batch {batch:.1f} ({len(latencies)} requests in {elapsed:.1f} s)",
                  flush=True)
            for error in errors[:3]:
                print(f"    error: {error}")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/final/best")
    parser.add_argument("--config", help="search and runtime settings (default: configs/default.yaml)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (after 1 s warm-up)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-batch", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--query-cache", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    from wsense.config import load_config
    from wsense.data import load_data

    queries = load_data(load_config(args.config).data_dir).test_queries["query_text"].tolist()
    paths = ["/api/search?" + urlencode({"q": query, "k": 5}) for query in queries]
    if not Path(args.checkpoint).is_dir():
        raise SystemExit(f"{args.checkpoint}: no checkpoint (wsense search trains it on first use)")
    run(args, 64, 4096, paths, (1, args.clients))
    run(args, 64, 0, paths, (1, args.clients))
    run(args, 1, 0, paths, (args.clients,))


if __name__ == "__main__":
    main()
