"""The ``grok-imagine`` command line; each command module's ``register`` adds parsers whose
``handler`` returns the exit status."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from inspect import iscoroutinefunction

import anyio

from .._errors import ConfigurationError
from .._version import __version__
from . import batch, emulator, task
from .common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, error, leaf_error, note

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``grok-imagine`` argument parser, every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="grok-imagine",
        description="Generate videos with the Grok Imagine API: one, or thousands that survive "
        "a crash and resume without paying twice.",
        epilog="First try: grok-imagine batch examples/prompts.txt --emulate --out videos",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Not required: argparse would then say only "the following arguments are required:
    # COMMAND"; main() shows the commands instead.
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (batch, task, emulator):
        module.register(subparsers)
    for subparser in subparsers.choices.values():
        # "--api TOKEN" would pass for --api-key, and the resume line, which leaves out only
        # the full spelling, would then print the token.
        subparser.allow_abbrev = False
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand ``argv`` (default: ``sys.argv[1:]``) names; return the exit status
    (an unforeseen error: one line on stderr, its traceback with ``--log-level debug``)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:  # what each command does, as --help shows it
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.argv = arguments  # for messages that repeat the command (never the token)
    debug = args.command != "emulator" and args.log_level == "debug"
    # The emulator's --log-level is uvicorn's.
    with nullcontext() if args.command == "emulator" else _logging_to_stderr(args.log_level):
        try:
            handler = args.handler  # the emulator's is not async: uvicorn runs its own loop
            code: int = anyio.run(handler, args) if iscoroutinefunction(handler) else handler(args)
        except (UsageError, ConfigurationError) as exc:  # nothing was submitted
            return error(args.command, exc, EXIT_USAGE)
        except KeyboardInterrupt:  # where signals cannot be received (Windows), or before
            note("grok-imagine: interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:  # the last resort: one line, not a page of traceback
            if debug:
                traceback.print_exc()
            leaf = leaf_error(exc)
            hint = "" if debug else " (run again with --log-level debug for the details)"
            return error(args.command, f"unexpected error: {type(leaf).__name__}: {leaf}{hint}")
    return code


@contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """Log to stderr at ``level`` while the command runs, then restore."""
    logger = logging.getLogger("grok_imagine_async")
    handler = logging.StreamHandler(sys.stderr)  # the default format: the message alone
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
