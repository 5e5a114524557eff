"""The `farmer` command line: `farmer train|eval|sample|distill|bench`.

Each subcommand is a thin layer over the library: argparse flags map onto
the config dataclasses, and the work is done by library functions. This is
the only module that parses argv.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farmer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # ---- train / eval (training issue) ----
    # ---- sample / distill (sampling issue) ----
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
