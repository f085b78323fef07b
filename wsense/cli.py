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


def _config(args: argparse.Namespace):
    from wsense.config import load_config

    config = load_config(args.config)
    if args.data_dir:
        config.data.dir = args.data_dir
    if getattr(args, "output_dir", None):
        config.training.output_dir = args.output_dir
    if getattr(args, "mode", None):
        config.training.mode = args.mode
    if getattr(args, "epochs", None):
        config.training.epochs = args.epochs
    return config


def _train(args: argparse.Namespace) -> int:
    from wsense.training import train

    config = _config(args)
    result = train(config, resume=args.resume, cpu=args.cpu, val_fold=None if args.no_validation else
                   config.training.val_fold)
    print(f"best epoch {result.best_epoch}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in result.best.items() if k.startswith("val_")))
    print(f"best checkpoint: {result.output_dir / 'best'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from wsense.evaluation.report import merge_rows, read_report, write_report

    config = _config(args)
    notes: list[str] = []
    if args.checkpoint or args.cross_validate:
        from wsense.evaluation.trained import cross_validate_training, evaluate_checkpoint

        rows = []
        if args.cross_validate:
            rows.append(cross_validate_training(config, cpu=args.cpu, resume=args.resume))
        if args.checkpoint:
            rows += evaluate_checkpoint(args.checkpoint, config if args.data_dir else None)
    else:
        from wsense.evaluation.frozen import run_frozen_baselines

        rows, notes = run_frozen_baselines(config, models=args.models)
    out = Path(args.out or config.reports_dir)
    json_path, md_path = write_report(out, merge_rows(read_report(out), rows), notes)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


def _search(args: argparse.Namespace) -> int:
    from wsense.data import load_data
    from wsense.search import DISCLAIMER, SearchEngine

    config = _config(args)
    descriptions = None
    image_dir = args.images
    if image_dir is None:
        # The test catalog: its captions are the known descriptions for the legal filter.
        data = load_data(config.data_dir)
        image_dir = data.test_image_dir
        descriptions = data.test_queries.rename(columns={"query_text": "text"})[["image", "text"]]
    if args.top_k < 1 or args.top_k > 100:
        raise WsenseError(f"--top-k must be between 1 and 100, got {args.top_k}")
    engine = SearchEngine(args.checkpoint, image_dir, descriptions, candidates=args.candidates)
    queries = args.queries
    if args.batch:
        path = Path(args.batch)
        if not path.is_file():
            raise WsenseError(f"{path}: batch file not found")
        queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not queries:
        raise WsenseError("no query: give one as an argument or use --batch FILE")
    for query in queries:
        result = engine.search(query, args.top_k)
        if args.json or args.batch:
            print(json.dumps(result.to_dict(), ensure_ascii=False))
        elif result.refused:
            print(f"{DISCLAIMER} ({result.reason})")
        else:
            for item in result.results:
                print(f"{item['score']:.3f}  {engine.root / item['image']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsense", description="Text-to-image search for photographers.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-query", help="legal filter: is a query allowed? one JSON line per query")
    check.add_argument("queries", nargs="*", help="queries to check (default: one per line on stdin)")
    check.set_defaults(run=_check_query)

    def common(command: argparse.ArgumentParser) -> None:
        command.add_argument("--config", help="YAML config (default: configs/default.yaml)")
        command.add_argument("--data-dir", help="data directory (overrides the config and WSENSE_DATA_DIR)")

    train = commands.add_parser("train", help="train the relevance model (Accelerate; CPU or GPU)")
    common(train)
    train.add_argument("--resume", action="store_true", help="continue the run in training.output_dir")
    train.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    train.add_argument("--output-dir", help="run folder (default: training.output_dir)")
    train.add_argument("--mode", choices=["frozen", "partial", "full"], help="override training.mode")
    train.add_argument("--epochs", type=int, help="override training.epochs")
    train.add_argument("--no-validation", action="store_true",
                       help="train on every fold (no held-out images; the last epoch is kept as best)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "evaluate", help="report rows -> reports/report.{md,json}: baselines by default, or a trained model")
    common(evaluate)
    evaluate.add_argument("--out", help="report directory (default: reports_dir of the config)")
    evaluate.add_argument("--models", nargs="+", help="only these baselines (default: baselines.models)")
    evaluate.add_argument("--checkpoint", help="test retrieval of this checkpoint folder (e.g. runs/default/best)")
    evaluate.add_argument("--cross-validate", action="store_true",
                          help="grouped 5-fold cross-validation of the whole training run of --config")
    evaluate.add_argument("--resume", action="store_true", help="with --cross-validate: resume unfinished folds")
    evaluate.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    evaluate.add_argument("--output-dir", help="with --cross-validate: run folder (default: training.output_dir)")
    evaluate.add_argument("--mode", choices=["frozen", "partial", "full"], help="override training.mode")
    evaluate.add_argument("--epochs", type=int, help="override training.epochs")
    evaluate.set_defaults(run=_evaluate)

    search = commands.add_parser("search", help="find the photos that best match a description")
    common(search)
    search.add_argument("queries", nargs="*", help="scene descriptions")
    search.add_argument("--checkpoint", default="runs/default/best", help="trained model (default: %(default)s)")
    search.add_argument("--images", help="catalog folder (default: the data set's test images)")
    search.add_argument("--top-k", type=int, default=1, help="how many photos (default: 1)")
    search.add_argument("--candidates", type=int, default=100, help="first-stage shortlist for re-ranking")
    search.add_argument("--json", action="store_true", help="one JSON line per query")
    search.add_argument("--batch", help="file with one query per line; one JSON line per query, in order")
    search.set_defaults(run=_search)
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
