"""The `wsense` command line: `wsense <command> --help` lists each command's options."""
from __future__ import annotations

import sys

from wsense.errors import WsenseError


def main(argv: list[str] | None = None) -> int:
    from wsense.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except WsenseError as error:
        print(f"wsense: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wsense: interrupted", file=sys.stderr)
        return 130
