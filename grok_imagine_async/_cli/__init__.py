"""The ``grok-imagine`` command line (minimal dispatcher; subcommands live in their modules)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import emulator


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen subcommand."""
    parser = argparse.ArgumentParser(prog="grok-imagine")
    subparsers = parser.add_subparsers(dest="command", required=True)
    emulator.register(subparsers)
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status
