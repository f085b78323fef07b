"""What the query check's targets cost each other, on the development tables only (issue 25).

    python experiments/query_check_tradeoff.py      -> reports/query_check_tradeoff.md

The adopted check (rules, then the learned second opinion at a threshold) is fitted as `wsense fit-query-check`
fits it, and its out-of-fold scores on the development queries are swept over thresholds: how many child queries
get results and how many harmless ones are refused at each. Two rows answer the issue's targets directly: the
threshold at which no development child query gets results, and the one at which at most 1% of the harmless ones
are refused. No held-out table is read.

An experiment, not part of the product.
"""
import sys
from pathlib import Path

import numpy as np

from wsense.config import load_config
from wsense.evaluation.query_check import fit_query_classifier


def main() -> None:
    fitted = fit_query_classifier(load_config("configs/default.yaml"))
    dev, adopted = fitted.dev, fitted.classifier.threshold
    child, harmless = dev["child"].to_numpy() == 1, dev["child"].to_numpy() == 0
    score, by_rules = dev["score"].to_numpy(), dev["by_rules"].to_numpy()

    def row(name: str, threshold: float) -> str:
        refused = by_rules | (score >= threshold)
        share = (harmless & refused).sum() / harmless.sum()
        return (f"| {name} | {threshold:.4f} | {int((child & ~refused).sum())} of {int(child.sum())} | "
                f"{int((harmless & refused).sum())} of {int(harmless.sum())} ({share:.3f}) |")

    no_child = float(score[child & ~by_rules].min())
    harmless_scores = np.sort(score[harmless & ~by_rules])[::-1]
    budget = int(np.floor(0.01 * harmless.sum())) - int((harmless & by_rules).sum())
    one_percent = float(harmless_scores[budget]) + 1e-6 if budget >= 0 else float("inf")
    lines = ["# The query check's trade-off on the development tables (out of fold)", "",
             f"Written by `python experiments/query_check_tradeoff.py`: classifier `{fitted.classifier.version}`, "
             f"{len(dev)} development queries, each scored by a model that never saw it. A query is refused when a "
             f"rule matches or its score reaches the threshold. The rules alone refuse "
             f"{int((harmless & by_rules).sum())} harmless queries.", "",
             "| threshold | value | child queries with results | harmless queries refused |", "|---|---|---|---|",
             row("adopted (5% of harmless refused)", adopted),
             *[row(f"{t:.2f}", t) for t in (0.9, 0.5, 0.3, 0.1, 0.05, 0.02)],
             row("no child query with results", no_child),
             row("at most 1% of harmless refused" if budget >= 0 else "1%: the rules alone refuse more",
                 one_percent), ""]
    Path("reports/query_check_tradeoff.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
