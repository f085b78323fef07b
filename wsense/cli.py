"""The `wsense` command line: one subcommand per job, each a thin call into the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wsense.errors import WsenseError


def _check_query(args: argparse.Namespace) -> int:
    from wsense.safety import check_query

    queries = args.queries or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for query in queries:
        verdict = check_query(query)
        print(json.dumps({"query": query, "refused": verdict.refused, "reason": verdict.reason}, ensure_ascii=False))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from wsense.config import load_config
    from wsense.evaluation.frozen import run_frozen_baselines
    from wsense.evaluation.report import merge_rows, read_report, write_report

    config = load_config(args.config)
    if args.data_dir:
        config.data.dir = args.data_dir
    rows, notes = run_frozen_baselines(config, models=args.models)
    out = Path(args.out or config.reports_dir)
    json_path, md_path = write_report(out, merge_rows(read_report(out), rows), notes)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsense", description="Text-to-image search for photographers.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-query", help="legal filter: is a query allowed? one JSON line per query")
    check.add_argument("queries", nargs="*", help="queries to check (default: one per line on stdin)")
    check.set_defaults(run=_check_query)

    evaluate = commands.add_parser("evaluate", help="frozen-embedding baselines -> reports/report.{md,json}")
    evaluate.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    evaluate.add_argument("--data-dir", help="data directory (overrides the config and WSENSE_DATA_DIR)")
    evaluate.add_argument("--out", help="report directory (default: reports_dir of the config)")
    evaluate.add_argument("--models", nargs="+", help="only these baselines (default: baselines.models)")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except WsenseError as error:
        print(f"wsense: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wsense: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
