"""The `wsense` command line's arguments: one subcommand per job."""
from __future__ import annotations

import argparse

from wsense.cli import commands as runners


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsense", description="Text-to-image search for photographers.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-query", help="legal filter: is a query allowed? one JSON line per query")
    check.add_argument("queries", nargs="*", help="queries to check (default: one per line on stdin)")
    check.set_defaults(run=runners.check_query)

    def common(command: argparse.ArgumentParser) -> None:
        command.add_argument("--config", help="YAML config (default: configs/default.yaml)")
        command.add_argument("--data-dir", help="data directory (overrides the config and WSENSE_DATA_DIR)")

    check_image = commands.add_parser(
        "check-image", help="legal filter: does a photo show a child? one JSON line per photo (image check)")
    common(check_image)
    check_image.add_argument("photos", nargs="+", help="photo files")
    check_image.set_defaults(run=runners.check_image)

    review = commands.add_parser(
        "review", help="legal filter: record what a person saw in photos, overruling the image check for them "
        "(applied by the next `wsense index`)")
    common(review)
    review.add_argument("photos", nargs="+", help="photo files, each looked at by the reviewer")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--no-child", dest="verdict", action="store_const", const="no_child",
                         help="no child under 16 is visible: show the photo even where the check keeps it out")
    verdict.add_argument("--child", dest="verdict", action="store_const", const="child",
                         help="a child under 16 is visible: keep the photo out of results")
    review.add_argument("--reviewer", required=True, help="who looked (kept with the review)")
    review.add_argument("--note", default="", help="what decided it (kept with the review)")
    review.add_argument("--reviews", help="reviews file (default: safety.reviews)")
    review.set_defaults(run=runners.review)

    fit_check = commands.add_parser("fit-check", help="fit the image check on the training photos (safety.check)")
    common(fit_check)
    fit_check.set_defaults(run=runners.fit_check)

    fit_query = commands.add_parser(
        "fit-query-check", help="fit the query check's learned second opinion on the development query table, "
        "measure it on the held-out ones (wsense/safety/query_classifier.npz, reports/query_check.md)")
    common(fit_query)
    fit_query.add_argument("--out", help="report folder (default: reports)")
    fit_query.set_defaults(run=runners.fit_query_check)

    train = commands.add_parser("train", help="train the relevance model (Accelerate; CPU or GPU)")
    common(train)
    train.add_argument("--resume", action="store_true", help="continue the run in training.output_dir")
    train.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    train.add_argument("--output-dir", help="run folder (default: training.output_dir)")
    train.add_argument("--mode", choices=["frozen", "partial", "full"], help="override training.mode")
    train.add_argument("--epochs", type=int, help="override training.epochs")
    train.add_argument("--no-validation", action="store_true",
                       help="train on every fold (no held-out images; the last epoch is kept as best)")
    train.set_defaults(run=runners.train)

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
                          help="fit the shown score's calibration on each --cross-validate fold's held-out expert "
                               "pairs (into --checkpoint, else the one shipped in wsense/models) and report what a "
                               "score has meant -> reports/reliability.{md,json,png}")
    evaluate.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    evaluate.add_argument("--output-dir", help="with --cross-validate: run folder (default: training.output_dir)")
    evaluate.add_argument("--mode", choices=["frozen", "partial", "full"], help="override training.mode")
    evaluate.add_argument("--epochs", type=int, help="override training.epochs")
    evaluate.set_defaults(run=runners.evaluate)

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
    index.set_defaults(run=runners.index)

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
    search.set_defaults(run=runners.search)

    serve = commands.add_parser("serve", help="the search web page and JSON API on localhost")
    catalog(serve)
    serve.add_argument("--images", help="catalog folder (default: the data set's test images)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--watch", action="store_true",
                       help="follow the image folder while serving: added, changed and removed photos are indexed "
                            "and checked, then searchable (or gone) without a restart")
    serve.add_argument("--api-key", help="every route but /healthz needs this key (default: $WSENSE_API_KEY; none: "
                                         "open, meant for localhost)")
    serve.add_argument("--rate-limit", default="20/second",  # a person paging through results sends a few
                       help="searches one client may send: N/second, N/minute or N/hour, or none (default: "
                            "%(default)s); photos and thumbnails are not counted")
    serve.add_argument("--compile", action="store_true",
                       help="torch.compile the text tower at start-up: faster queries after ~30 s")
    serve.set_defaults(run=runners.serve)
    return parser
