"""What each `wsense` subcommand does: a thin call into the library, with the user's config."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
from pathlib import Path

from wsense.errors import WsenseError


def check_query(args: argparse.Namespace) -> int:
    from wsense.safety import check_queries

    queries = args.queries or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for query, verdict in zip(queries, check_queries(queries)):
        print(json.dumps({"query": query, "refused": verdict.refused, "reason": verdict.reason}, ensure_ascii=False))
    return 0


def fit_query_check(args: argparse.Namespace) -> int:
    from wsense.evaluation.query_check import write_query_check_report

    md_path = write_query_check_report(config_of(args), Path(args.out or "reports"))
    print(md_path.read_text(encoding="utf-8"))
    return 0


def check_image(args: argparse.Namespace) -> int:
    from wsense.safety.screener import load_or_fit_screener

    checker = load_or_fit_screener(config_of(args))
    failed = 0
    for result in checker.screen_photos(args.photos, skip_unreadable=True, progress=len(args.photos) > 20):
        failed += result.verdict is None
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    if failed:
        print(f"wsense: error: {failed} of {len(args.photos)} photo(s) could not be checked (see their \"error\")",
              file=sys.stderr)
    return 2 if failed else 0


def fit_check(args: argparse.Namespace) -> int:
    from wsense.safety.screener import fit_classifier_from_data

    check = fit_classifier_from_data(config_of(args)).check
    print(json.dumps({"check": check.version, "thresholds": check.thresholds, "fitted_on": check.fitted_on}))
    return 0


def review(args: argparse.Namespace) -> int:
    from wsense.io import file_sha256
    from wsense.safety.reviews import new_reviews, record_reviews

    configured = config_of(args).safety.reviews  # the file `wsense index` reads
    path = args.reviews or configured
    if not path:
        raise WsenseError("no reviews file: safety.reviews is null; pass --reviews FILE")
    missing = [photo for photo in args.photos if not Path(photo).is_file()]
    if missing:
        raise WsenseError(f"{missing[0]}: no such photo file" + (f" (and {len(missing) - 1} more)"
                                                                   if len(missing) > 1 else ""))
    reviews = new_reviews([(photo, file_sha256(photo)) for photo in args.photos], args.verdict, args.reviewer,
                          args.note)
    record_reviews(path, reviews)
    for item in reviews:
        print(json.dumps({"image": item.photo, "sha256": item.sha256, "verdict": item.verdict,
                          "reviewer": item.reviewer}, ensure_ascii=False))
    if configured and Path(configured).resolve() == Path(path).resolve():
        print(f"wsense: {len(reviews)} review(s) added to {path}; `wsense index FOLDER` applies them to that "
              "folder's index", file=sys.stderr)
    else:
        print(f"wsense: {len(reviews)} review(s) added to {path}; `wsense index` reads "
              f"{configured or 'no reviews file'} (safety.reviews): name this file there to apply them",
              file=sys.stderr)
    return 0


def config_of(args: argparse.Namespace):
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


def train(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from wsense.evaluation.trained import train_validated

    config = config_of(args)
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


def evaluate(args: argparse.Namespace) -> int:
    from wsense.evaluation.report import merge_rows, read_report, write_report

    config = config_of(args)
    if args.child_check or args.query_bank or args.reliability:
        if args.child_check:
            from wsense.evaluation.child_check import write_child_check_report as write
        elif args.reliability:
            from functools import partial

            from wsense.evaluation.reliability import write_reliability_report
            from wsense.models.calibration import CALIBRATION_FILE, shipped_calibration_path

            target = Path(args.checkpoint) / CALIBRATION_FILE if args.checkpoint else shipped_calibration_path()
            write = partial(write_reliability_report, calibration_path=target)
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


def search_checkpoint(args: argparse.Namespace, config) -> Path:
    """The checkpoint to search with: --checkpoint, or search.checkpoint, which starts as a copy of the search model
    shipped with wsense when it is missing (`python train.py --no-validation` trains one on the data set)."""
    if args.checkpoint:
        return Path(args.checkpoint)
    checkpoint = Path(config.search.checkpoint)
    if checkpoint.exists():
        return checkpoint
    if checkpoint.name != "best":  # a training run writes its checkpoint as OUTPUT_DIR/best
        raise WsenseError(f"{checkpoint}: search checkpoint not found; `python train.py --no-validation "
                          "--output-dir DIR` trains one as DIR/best")
    from wsense.models.shipped import copy_shipped_model

    copy_shipped_model(checkpoint)
    print(f"wsense: no search checkpoint at {checkpoint}: starting from the search model shipped with wsense "
          "(trained on the With Sense data set; `python train.py --no-validation` trains your own)", file=sys.stderr)
    return checkpoint


def engine_of(args: argparse.Namespace, config):
    """The search engine of the command line: an existing --index-dir alone is opened as it is; otherwise
    --images (default: the data set's test images, with their captions as descriptions) is indexed
    incrementally first. Search and runtime settings come from the user's config (--config)."""
    from wsense.serving.index import index_exists, read_descriptions
    from wsense.serving.search import SearchEngine

    descriptions = read_descriptions(args.descriptions) if getattr(args, "descriptions", None) else None
    image_dir = args.images
    existing_index = args.index_dir and index_exists(args.index_dir)
    if image_dir is None and not existing_index:
        from wsense.data import demo_catalog

        # The test queries' table alone: indexing opens every photo itself (and skips what it cannot read).
        image_dir, descriptions = demo_catalog(config.data_dir)
    checkpoint = search_checkpoint(args, config)
    checker = None
    if image_dir is not None:
        from wsense.safety.screener import load_or_fit_screener

        checker = load_or_fit_screener(config)
    photo_batches = None
    if getattr(args, "ray", False) or getattr(args, "ray_address", None) or getattr(args, "ray_gpus", False):
        from wsense.serving.ray_index import RayPhotoBatches

        photo_batches = RayPhotoBatches(checkpoint, config, args.ray_address, args.ray_workers,
                                        config.embedding.image_batch_size, gpus=args.ray_gpus)
    return SearchEngine(checkpoint, image_dir, descriptions, index_dir=args.index_dir,
                        rebuild=getattr(args, "rebuild", False), settings=config, checker=checker,
                        photo_batches=photo_batches)


def index(args: argparse.Namespace) -> int:
    engine = engine_of(args, config_of(args))
    print(f"{len(engine.images)} searchable photos in {engine.root}; index: {engine.index_dir}")
    if args.report:
        excluded = engine.index.excluded
        print(f"{len(excluded)} photo(s) kept out of results by the legal filter:")
        for entry in excluded:
            print(f"  {entry['path']}\t{entry['excluded']}")
    return 0


def search(args: argparse.Namespace) -> int:
    from wsense.serving.requests import check_paging, disclaimer

    config = config_of(args)
    check_paging(args.top_k, args.offset, args.min_score)  # before the model loads
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
    engine = engine_of(args, config)
    like = example_of(engine, args.like) if args.like is not None else None
    from wsense.serving.metadata import MetadataFilter

    filters = MetadataFilter.parse(args.folder, args.orientation, args.camera, args.lens, args.taken_from,
                                   args.taken_to)
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


def example_of(engine, photo: str):
    """--like: a photo of the catalog (by its path, or its name inside the catalog), or a photo file from elsewhere,
    which the image check looks at first."""
    path = Path(photo)
    if path.is_file():
        resolved, root = path.resolve(), Path(engine.root).resolve()
        if resolved.is_relative_to(root):
            return engine.example(resolved.relative_to(root).as_posix())
        return engine.uploaded_example(path, name=str(path))
    return engine.example(photo)


def serving_files_ready(args: argparse.Namespace, config) -> bool:
    """Whether the search checkpoint's serving files are there and name the image towers: a server then answers
    queries and uploads without torch."""
    from wsense.models.checkpoint import load_checkpoint_config, model_fingerprint
    from wsense.models.serving import serving_files_complete

    checkpoint = search_checkpoint(args, config)
    return serving_files_complete(checkpoint, load_checkpoint_config(checkpoint, config), model_fingerprint(checkpoint))


def prepare_serving(args: argparse.Namespace) -> None:
    """In a child process of `wsense serve`: what the server would make with torch, made and saved (the serving
    files, their image towers, the index of the folder), then exit."""
    try:
        engine = engine_of(args, config_of(args))
        engine.scorer.photos  # noqa: B018  (names the image towers in the serving files: uploads then need no torch)
    except WsenseError as error:
        print(f"wsense: error: {error}", file=sys.stderr)
        sys.exit(2)


def serve(args: argparse.Namespace) -> int:
    from wsense.serving.access import API_KEY_ENV
    from wsense.onnx_session import keep_memory_arenas
    from wsense.safety import check_query
    from wsense.serving.rate_limit import parse_rate
    from wsense.serving.web import serve

    parse_rate(args.rate_limit)  # a mistyped limit is named before the model loads
    if not serving_files_ready(args, config_of(args)):
        # Making them (and indexing) loads torch, which a process never gives back: a child process does it, and
        # the server then starts from what it wrote, without torch.
        print("wsense: preparing the model's serving files and the index in a child process", file=sys.stderr)
        child = multiprocessing.get_context("spawn").Process(target=prepare_serving, args=(args,))
        child.start()
        child.join()
        if child.exitcode:
            return child.exitcode
    keep_memory_arenas(False)  # a long-lived server gives an upload's activations back after it
    # The query check's sentence encoder loads (about a second) while the catalog does, on the other core.
    warm_up = threading.Thread(target=check_query, args=("warm-up query",), daemon=True)
    warm_up.start()
    engine = engine_of(args, config_of(args))
    warm_up.join()
    if args.compile:
        engine.scorer.compile_text_tower()
    print(f"serving {len(engine.images)} photos from {engine.root} at http://{args.host}:{args.port}/",
          file=sys.stderr)
    serve(engine, host=args.host, port=args.port, watch=args.watch,
          api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, rate_limit=args.rate_limit)
    return 0
