"""`semsearch` command line: one subcommand per module, each registering its own parser."""

from __future__ import annotations

import argparse
import importlib
import sys

from semsearch.errors import UsageError

# Each module defines `register(subparsers)`; its parser's `func(args) -> int` runs it.
COMMAND_MODULES: list[str] = [
    "semsearch.local.cli",
    "semsearch.search",
    "semsearch.ingest",
    "semsearch.status",
    "semsearch.reembed",
    "semsearch.cost",
    "semsearch.train",
    "semsearch.evaluate",
    "semsearch.compare",
    "semsearch.embed",
    "semsearch.serve",
    "semsearch.package",
    "semsearch.loadtest",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semsearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UsageError as e:
        print(f"semsearch {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
