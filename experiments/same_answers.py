"""Do two commits give the same answers to the same queries? Runs `search.py --batch` of a commit's tree (a git
worktree) and of this tree on the same checkpoint, index and queries, and compares, per query, the refusal, the
photos in order, the total and the JSON's score kind; scores for their order down each list, and how far the scores of
the same photos in the same answers are apart.

    python experiments/same_answers.py --before eb2cc01 [--queries 500] [--top-k 10]

Needs the data set (WSENSE_DATA_DIR) and the search checkpoint (search.checkpoint). Prints a summary and exits 1
where any answer differs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def answers(tree: Path, queries: Path, index_dir: Path, checkpoint: Path, top_k: int, extra: list[str]) -> list[dict]:
    """One JSON answer per query from `tree`'s own search.py (its own wsense package first on the path)."""
    command = [sys.executable, str(tree / "search.py"), "--batch", str(queries), "--top-k", str(top_k),
               "--index-dir", str(index_dir), "--checkpoint", str(checkpoint), *extra]
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{tree}: search.py failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with (e.g. eb2cc01)")
    parser.add_argument("--queries", type=int, default=500, help="test queries to ask, first ones (default 500)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--checkpoint", default=str(REPO / "runs" / "final" / "best"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from wsense.config import load_config
    from wsense.data import load_data

    data = load_data(load_config().data_dir, check_images=False)
    texts = data.test_queries["query_text"].drop_duplicates().head(args.queries).tolist()
    texts += ["two boys on the beach", "a 7-year-old at the fair", "newborn photo shoot", "девочка с шариком"]
    with tempfile.TemporaryDirectory(prefix="wsense-same-answers-") as folder:
        folder = Path(folder)
        before = folder / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)
        try:
            queries = folder / "queries.txt"
            queries.write_text("\n".join(texts) + "\n", encoding="utf-8")
            runs = {}
            for name, tree in (("before", before), ("now", REPO)):
                # Each tree its own index of the same photos: the index format may differ between commits.
                for extra in ([], ["--min-score", "0.0"]):
                    key = (name, bool(extra))
                    runs[key] = answers(tree, queries, folder / f"index-{name}", Path(args.checkpoint),
                                        args.top_k, extra)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)],
                           capture_output=True)
    differ, rising, score_gaps = [], 0, []
    for cut in (False, True):
        for old, new in zip(runs[("before", cut)], runs[("now", cut)]):
            same = (old["refused"] == new["refused"] and [r["image"] for r in old["results"]] ==
                    [r["image"] for r in new["results"]] and old["score"] == new["score"]
                    and (cut or old["total"] == new["total"]))
            if not same:
                differ.append((cut, old["query"]))
            else:
                score_gaps += [abs(a["score"] - b["score"]) for a, b in zip(old["results"], new["results"])]
            scores = [r["score"] for r in new["results"]]
            rising += scores != sorted(scores, reverse=True)
    asked = len(texts)
    print(f"{asked} queries (+ the same with --min-score 0.0), top {args.top_k}, {args.before} vs this tree: "
          f"{len(differ)} answers differ in refusal, photos or their order; {rising} lists whose scores rise now; "
          f"scores of the same photos: {sum(gap > 0 for gap in score_gaps)} of {len(score_gaps)} differ, by at most "
          f"{max(score_gaps, default=0):.4f}")
    for cut, query in differ[:10]:
        print(f"  differs{' (min-score 0)' if cut else ''}: {query}")
    return 1 if differ or rising else 0


if __name__ == "__main__":
    sys.exit(main())
