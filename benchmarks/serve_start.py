"""`wsense serve` as a user starts it: seconds to the first answer, resident memory, and whether libtorch is loaded.

Starts `python -m wsense.cli serve` (the data set's 100 test photos, their index built already) in a subprocess,
asks `/api/search` until it answers, then sends 50 searches (new queries, each through the text tower) and one photo
upload to `/api/similar`, and reads the server's /proc: resident memory (VmRSS) after the searches and after the
upload, its peak (VmHWM), and whether a libtorch library is mapped. Then the issue's two decompression bombs go to
`/api/similar` (a grey PNG of 13,000 x 13,000 and one of 30,000 x 30,000 pixels, a few hundred KB each): their status,
seconds, how far they raised the server's peak memory, and whether a search still answers after them. With
`--before COMMIT` the same runs first on that commit's tree (a git worktree), on the same index; the runs alternate,
`--runs` of each.

    python benchmarks/serve_start.py [--before main] [--runs 2] [--port 8765] [--upload camera.jpg]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def get(url: str, data: bytes | None = None, kind: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": kind} if kind else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def bomb_png(side: int) -> bytes:
    """A valid grey PNG of side x side pixels, all zero: a few hundred KB that decode to side**2 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer, row = zlib.compressobj(9), bytes(side + 1)  # each row: filter byte 0, then the pixels
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def one_run(tree: Path, port: int, queries: list[str], upload: Path, bombs: dict[str, bytes]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    began = time.perf_counter()
    # The tree's own wsense first on the path, run from this repository (its runs/ and .cache/: the same checkpoint
    # and index for every tree).
    launch = f"import sys; sys.path.insert(0, {str(tree)!r}); from wsense.cli import main; sys.exit(main(sys.argv[1:]))"
    # One client sends the 50 searches at once: over the default rate limit, where the tree has one.
    unlimited = ["--rate-limit", "none"] if "--rate-limit" in (tree / "wsense/cli/parser.py").read_text() else []
    server = subprocess.Popen([sys.executable, "-c", launch, "serve", "--port", str(port), *unlimited], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"{tree}: wsense serve stopped:\n{server.stderr.read().decode()[-2000:]}")
            try:
                code, _ = get(f"{base}/api/search?q={quote('a dog runs on the grass')}&k=5")
                if code == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        first = time.perf_counter() - began
        for query in queries:
            code, body = get(f"{base}/api/search?q={quote(query)}&k=5")
            assert code == 200 and b'"results"' in body, (code, body[:200])
        after_searches = status(server.pid)
        torch_after_searches = torch_mapped(server.pid)
        code, body = get(f"{base}/api/similar?k=5", upload.read_bytes(), "image/jpeg")
        assert code == 200 and b'"results"' in body, (code, body[:200])
        after_upload = status(server.pid)
        torch_after_upload = torch_mapped(server.pid)
        refused = {}
        for name, bomb in bombs.items():
            start = time.perf_counter()
            code, _ = get(f"{base}/api/similar?k=5", bomb, "image/png")
            refused[name] = {"status": code, "seconds": round(time.perf_counter() - start, 2)}
        code, _ = get(f"{base}/api/search?q={quote('a red bicycle against a wall')}&k=5")
        return {"first_answer_s": round(first, 2), "rss_after_50_searches_mb": round(after_searches["VmRSS"]),
                "rss_after_upload_mb": round(after_upload["VmRSS"]), "peak_mb": round(after_upload["VmHWM"]),
                "libtorch_after_searches": torch_after_searches, "libtorch_after_upload": torch_after_upload,
                "bombs": refused, "bombs_raised_peak_mb": round(status(server.pid)["VmHWM"] - after_upload["VmHWM"]),
                "search_after_bombs": code}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="a commit to measure too (e.g. main)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--upload", type=Path, help="the JPEG to upload (default: the first training photo); e.g. a "
                        "24-megapixel camera file")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from wsense.config import load_config
    from wsense.data import load_data

    data = load_data(load_config().data_dir, check_images=False)
    queries = data.test_queries["query_text"].drop_duplicates().tolist()[100:150]
    upload = args.upload or data.train_image_dir / sorted(data.train_images)[0]
    bombs = {f"{side}x{side}": bomb_png(side) for side in (13_000, 30_000)}
    with tempfile.TemporaryDirectory(prefix="wsense-serve-start-") as folder:
        trees = {"now": REPO}
        if args.before:
            trees = {"before": Path(folder) / "before", **trees}
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(trees["before"]), args.before],
                           check=True, capture_output=True)
        try:
            results: dict[str, list[dict]] = {name: [] for name in trees}
            for run in range(args.runs):
                for name, tree in trees.items():
                    results[name].append(one_run(tree, args.port, queries, upload, bombs))
                    print(name, json.dumps(results[name][-1]), flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["before"])],
                               capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
