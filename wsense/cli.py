"""The `wsense` command line: one subcommand per job, each a thin call into the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wsense.errors import WsenseError


def _check_query(args: argparse.Namespace) -> int:
    from wsense.safety import check_queries

    queries = args.queries or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for query, verdict in zip(queries, check_queries(queries)):
        print(json.dumps({"query": query, "refused": verdict.refused, "reason": verdict.reason}, ensure_ascii=False))
    return 0


def _fit_query_check(args: argparse.Namespace) -> int:
    from wsense.evaluation.query_check import write_query_check_report

    md_path = write_query_check_report(_config(args), Path(args.out or "reports"))
    print(md_path.read_text(encoding="utf-8"))
    return 0


def _check_image(args: argparse.Namespace) -> int:
    from wsense.safety.checker import load_or_fit_check

    checker = load_or_fit_check(_config(args))
    failed = 0
    for result in checker.check_photos(args.photos, skip_unreadable=True, progress=len(args.photos) > 20):
        failed += result.verdict is None
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    if failed:
        print(f"wsense: error: {failed} of {len(args.photos)} photo(s) could not be checked (see their \"error\")",
              file=sys.stderr)
    return 2 if failed else 0


def _fit_check(args: argparse.Namespace) -> int:
    from wsense.safety.checker import fit_check_from_data

    check = fit_check_from_data(_config(args)).check
    print(json.dumps({"check": check.version, "thresholds": check.thresholds, "fitted_on": check.fitted_on}))
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
    from accelerate import PartialState

    from wsense.evaluation.trained import train_validated

    config = _config(args)
    if args.no_validation:
        config.training.val_fold = None
    result = train_validated(config, resume=args.resume, cpu=args.cpu)
    if not PartialState().is_main_process:
        return 0
    validation = ", ".join(f"{k} {v:.4f}" for k, v in result.best.items() if k.startswith("val_"))
    print(f"best epoch {result.best_epoch}: {validation}" if validation
          else f"kept the last epoch ({result.best_epoch}): no validation fold")
    print(f"best checkpoint: {result.output_dir / 'best'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from wsense.evaluation.report import merge_rows, read_report, write_report

    config = _config(args)
    if args.child_check or args.query_bank or args.reliability:
        if args.child_check:
            from wsense.evaluation.child_check import write_child_check_report as write
        elif args.reliability:
            from wsense.evaluation.reliability import write_reliability_report as write
        else:
            from wsense.evaluation.query_bank import validate_query_bank as write
        md_path = write(config, Path(args.out or config.reports_dir))
        print(md_path.read_text(encoding="utf-8"))
        return 0
    notes, topic = None, "frozen"
    if args.validate_multilingual and not args.checkpoint:
        raise WsenseError("--validate-multilingual needs --checkpoint")
    if args.checkpoint or args.cross_validate:
        from wsense.evaluation.trained import NOTES, cross_validate_training, evaluate_checkpoint

        rows, notes, topic = [], list(NOTES), "trained"
        if args.cross_validate:
            rows.append(cross_validate_training(config, cpu=args.cpu, resume=args.resume))
        if args.checkpoint:
            rows += evaluate_checkpoint(args.checkpoint, config)
        if args.validate_multilingual:
            from wsense.evaluation.multilingual import NOTE, validate_multilingual

            rows += validate_multilingual(args.checkpoint, config)
            notes.append(NOTE)
    else:
        from wsense.evaluation.frozen import run_frozen_baselines

        rows, notes = run_frozen_baselines(config, models=args.models)
    out = Path(args.out or config.reports_dir)
    json_path, md_path = write_report(out, merge_rows(read_report(out), rows), notes, topic)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


def _search_checkpoint(args: argparse.Namespace, config) -> Path:
    """The checkpoint to search with: --checkpoint, or search.checkpoint, which is trained here on first use (every
    allowed photo, no validation fold) when it is missing."""
    if args.checkpoint:
        return Path(args.checkpoint)
    checkpoint = Path(config.search.checkpoint)
    if checkpoint.exists():
        return checkpoint
    if checkpoint.name != "best":  # a training run writes its checkpoint as OUTPUT_DIR/best
        raise WsenseError(f"{checkpoint}: search checkpoint not found; `python train.py --no-validation "
                          "--output-dir DIR` trains one as DIR/best")
    import copy
    import time

    from wsense.training import train

    run = copy.deepcopy(config)
    run.training.val_fold = None
    run.training.output_dir = str(checkpoint.parent)
    resume = (checkpoint.parent / "last").exists()
    print(f"wsense: no search checkpoint at {checkpoint}: {'resuming' if resume else 'training'} it now on every "
          f"allowed photo ({run.training.epochs} epochs, {run.training.mode} towers; once, about 3 to 5 minutes "
          "on 2 CPU cores, most of it embedding the 1,100 photos)", file=sys.stderr)
    start = time.perf_counter()
    train(run, resume=resume)
    print(f"wsense: trained {checkpoint} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return checkpoint


def _engine(args: argparse.Namespace, config):
    """The search engine of the command line: an existing --index-dir alone is opened as it is; otherwise
    --images (default: the data set's test images, with their captions as descriptions) is indexed
    incrementally first. Search and runtime settings come from the user's config (--config)."""
    from wsense.serving.index import META_FILE, read_descriptions
    from wsense.serving.search import SearchEngine

    descriptions = read_descriptions(args.descriptions) if getattr(args, "descriptions", None) else None
    image_dir = args.images
    existing_index = args.index_dir and (Path(args.index_dir) / META_FILE).is_file()
    if image_dir is None and not existing_index:
        from wsense.data import load_data

        data = load_data(config.data_dir)
        image_dir = data.test_image_dir
        descriptions = data.test_queries.rename(columns={"query_text": "text"})[["image", "text"]]
    checkpoint = _search_checkpoint(args, config)
    checker = None
    if image_dir is not None:
        from wsense.safety.checker import load_or_fit_check

        checker = load_or_fit_check(config)
    photo_batches = None
    if getattr(args, "ray", False) or getattr(args, "ray_address", None) or getattr(args, "ray_gpus", False):
        from wsense.serving.ray_index import RayPhotoBatches

        photo_batches = RayPhotoBatches(checkpoint, config, args.ray_address, args.ray_workers,
                                        config.embedding.image_batch_size, gpus=args.ray_gpus)
    return SearchEngine(checkpoint, image_dir, descriptions, index_dir=args.index_dir,
                        rebuild=getattr(args, "rebuild", False), settings=config, checker=checker,
                        photo_batches=photo_batches)


def _index(args: argparse.Namespace) -> int:
    engine = _engine(args, _config(args))
    print(f"{len(engine.images)} searchable photos in {engine.root}; index: {engine.index_dir}")
    if args.report:
        excluded = engine.index.excluded
        print(f"{len(excluded)} photo(s) kept out of results by the legal filter:")
        for entry in excluded:
            print(f"  {entry['path']}\t{entry['excluded']}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from wsense.serving.search import disclaimer

    config = _config(args)
    if not 1 <= args.top_k <= 100:
        raise WsenseError(f"--top-k must be between 1 and 100, got {args.top_k}")
    queries, expected = args.queries, None
    if args.batch:
        path = Path(args.batch)
        if not path.is_file():
            raise WsenseError(f"{path}: batch file not found")
        queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.demo:
        from wsense.data import load_data

        sample = load_data(config.data_dir).test_queries.sample(10, random_state=args.seed)
        queries, expected = sample["query_text"].tolist(), sample["image"].tolist()
    if not queries and args.like is None:
        raise WsenseError("no query: give one as an argument, or use --like PHOTO, --batch FILE or --demo")
    engine = _engine(args, config)
    like = _example(engine, args.like) if args.like is not None else None
    from wsense.serving.metadata import PhotoFilter

    filters = PhotoFilter.parse(args.folder, args.orientation, args.camera, args.lens, args.taken_from, args.taken_to)
    options = {"offset": args.offset, "min_score": args.min_score, "like": like, "negatives": args.negatives,
               "like_weight": args.like_weight, "negative_weight": args.not_weight, "filters": filters or None}
    results = [engine.search(query, args.top_k, **options) for query in queries or [""]]
    for i, result in enumerate(results):
        if args.json or args.batch:
            print(json.dumps(result.to_dict(), ensure_ascii=False))
        elif result.refused:
            print(f"{result.query or result.like!r}: {disclaimer(result.query)} ({result.reason})")
        else:
            for item in result.results:
                print(f"{item['score']:.3f}  {engine.root / item['image']}" + (f"  ({result.query})" if
                                                                               len(results) > 1 else ""))
            if expected:
                if expected[i] not in engine.images:
                    hit = "kept out of the catalog by the legal filter"
                else:
                    hit = "found" if any(item["image"] == expected[i] for item in result.results) else "missed"
                print(f"       expected {expected[i]}: {hit}")
    if args.html:
        from wsense.serving.contact_sheet import write_contact_sheet

        # An expected photo that the legal filter keeps out of the catalog is never shown either.
        shown = [truth if truth in engine.images else None for truth in expected] if expected else None
        print(f"wrote {write_contact_sheet(args.html, engine.root, results, shown)}", file=sys.stderr)
    return 0


def _example(engine, photo: str):
    """--like: a photo of the catalog (by its path, or its name inside the catalog), or a photo file from elsewhere,
    which the image check looks at first."""
    path = Path(photo)
    if path.is_file():
        resolved, root = path.resolve(), Path(engine.root).resolve()
        if resolved.is_relative_to(root):
            return engine.example(resolved.relative_to(root).as_posix())
        return engine.uploaded_example(path, name=str(path))
    return engine.example(photo)


def _serve(args: argparse.Namespace) -> int:
    from wsense.serving.web import serve

    engine = _engine(args, _config(args))
    if args.compile:
        engine.scorer.compile_text_tower()
    print(f"serving {len(engine.images)} photos from {engine.root} at http://{args.host}:{args.port}/",
          file=sys.stderr)
    serve(engine, host=args.host, port=args.port, watch=args.watch)
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

    check_image = commands.add_parser(
        "check-image", help="legal filter: does a photo show a child? one JSON line per photo (image check)")
    common(check_image)
    check_image.add_argument("photos", nargs="+", help="photo files")
    check_image.set_defaults(run=_check_image)

    fit_check = commands.add_parser("fit-check", help="fit the image check on the training photos (safety.check)")
    common(fit_check)
    fit_check.set_defaults(run=_fit_check)

    fit_query = commands.add_parser(
        "fit-query-check", help="fit the query check's learned second opinion on the development query table, "
        "measure it on the held-out ones (wsense/safety/query_classifier.npz, reports/query_check.md)")
    common(fit_query)
    fit_query.add_argument("--out", help="report folder (default: reports)")
    fit_query.set_defaults(run=_fit_query_check)

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
    evaluate.add_argument("--checkpoint", help="test retrieval of this checkpoint folder (e.g. runs/final/best)")
    evaluate.add_argument("--cross-validate", action="store_true",
                          help="grouped 5-fold cross-validation of the whole training run of --config")
    evaluate.add_argument("--resume", action="store_true", help="with --cross-validate: resume unfinished folds")
    evaluate.add_argument("--validate-multilingual", action="store_true",
                          help="with --checkpoint: also English vs Russian retrieval of the validation fold's "
                               "held-out training captions (the map fitted without them)")
    evaluate.add_argument("--child-check", action="store_true",
                          help="the image check instead: cross-validated and test recall and false positives, ROC "
                               "curves -> reports/child_check.{md,json,png}")
    evaluate.add_argument("--query-bank", action="store_true",
                          help="the query-bank ranking on each --cross-validate fold's validation photos, by beta "
                               "and weight -> reports/query_bank.{md,json}")
    evaluate.add_argument("--reliability", action="store_true",
                          help="what a relevance score has meant: each --cross-validate fold's scores of its held-out "
                               "expert pairs against the experts -> reports/reliability.{md,json,png}")
    evaluate.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    evaluate.add_argument("--output-dir", help="with --cross-validate: run folder (default: training.output_dir)")
    evaluate.add_argument("--mode", choices=["frozen", "partial", "full"], help="override training.mode")
    evaluate.add_argument("--epochs", type=int, help="override training.epochs")
    evaluate.set_defaults(run=_evaluate)

    def catalog(command: argparse.ArgumentParser) -> None:
        common(command)
        command.add_argument("--checkpoint", help="trained model (default: search.checkpoint, runs/final/best)")
        command.add_argument("--index-dir", help="index folder (default: in cache_dir, one per image folder)")
        command.add_argument("--descriptions", help="CSV image,text: photos described as showing children "
                                                    "are kept out of results")

    index = commands.add_parser("index", help="embed every photo under a folder (incremental)")
    catalog(index)
    index.add_argument("images", nargs="?", help="image folder (default: the data set's test images)")
    index.add_argument("--rebuild", action="store_true", help="embed everything again (after a model change)")
    index.add_argument("--ray", action="store_true", help="embed on Ray: started on this machine with --ray-workers "
                       "CPU workers, unless --ray-address names a cluster")
    index.add_argument("--ray-address", help="join this Ray cluster (ray://host:10001 or host:6379); implies --ray")
    index.add_argument("--ray-workers", type=int, default=2, help="photo-embedding actors (default: %(default)s)")
    index.add_argument("--ray-gpus", action="store_true",
                       help="with --ray: one GPU per actor (as many actors as the cluster has GPUs, at most)")
    index.add_argument("--report", action="store_true",
                       help="list the photos kept out of results, each with its reason")
    index.set_defaults(run=_index)

    search = commands.add_parser("search", help="find the photos that best match a description")
    catalog(search)
    search.add_argument("queries", nargs="*", help="scene descriptions")
    search.add_argument("--images", help="catalog folder (default: the data set's test images)")
    search.add_argument("--top-k", type=int, default=1, help="how many photos (default: 1)")
    search.add_argument("--like", metavar="PHOTO", help="more like this photo (of the catalog, or a file from "
                        "elsewhere, which the image check looks at first); with queries, both count")
    search.add_argument("--like-weight", type=float, default=1.0,
                        help="weight of --like beside a query (default: %(default)s)")
    search.add_argument("--not", dest="negatives", action="append", default=[], metavar="TEXT",
                        help="away from this description (repeatable)")
    search.add_argument("--not-weight", type=float, default=0.5, help="weight of each --not (default: %(default)s)")
    search.add_argument("--min-score", type=float, help="leave out photos scoring below this (0 to 1)")
    search.add_argument("--offset", type=int, default=0, help="skip this many photos of the ranking (paging)")
    search.add_argument("--folder", help="only photos under this subfolder of the catalog")
    search.add_argument("--orientation", choices=["landscape", "portrait", "square"], help="only photos shown so")
    search.add_argument("--camera", help="only photos whose EXIF camera contains this text (any case)")
    search.add_argument("--lens", help="only photos whose EXIF lens contains this text (any case)")
    search.add_argument("--taken-from", metavar="YYYY-MM-DD", help="only photos taken on or after this day (EXIF)")
    search.add_argument("--taken-to", metavar="YYYY-MM-DD", help="only photos taken on or before this day (EXIF)")
    search.add_argument("--json", action="store_true", help="one JSON line per query")
    search.add_argument("--batch", help="file with one query per line; one JSON line per query, in order")
    search.add_argument("--html", help="also write a contact sheet with thumbnails and scores to this file")
    search.add_argument("--demo", action="store_true", help="10 random test queries, each beside its expected image")
    search.add_argument("--seed", type=int, default=0, help="which 10 queries --demo draws")
    search.set_defaults(run=_search)

    serve = commands.add_parser("serve", help="the search web page and JSON API on localhost")
    catalog(serve)
    serve.add_argument("--images", help="catalog folder (default: the data set's test images)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--watch", action="store_true",
                       help="follow the image folder while serving: added, changed and removed photos are indexed "
                            "and checked, then searchable (or gone) without a restart")
    serve.add_argument("--compile", action="store_true",
                       help="torch.compile the text tower at start-up: faster queries after ~30 s")
    serve.set_defaults(run=_serve)
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
