"""``grok-imagine generate PROMPT --out DIR``: one video, start to finish.

Example:
    $ grok-imagine generate "a paper boat on a river at dawn" --ratio 3:2 --out videos
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from .._errors import (
    AmbiguousSubmitError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    TaskFailedError,
)
from .._limits import Limits, prompt_problem
from .._models import GenerationRequest
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_connection_options,
    command_line,
    connect,
    describe_failure,
    error,
    run_until_interrupted,
)
from .preflight import PreflightError, check_folder


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate",
        help="generate one video and download it",
        description="Generate one video (40 credits), wait for it and download it into DIR. "
        "Prints the saved paths. Exit status: 0 done, 1 failed, 2 bad options, 130 Ctrl-C.",
    )
    parser.add_argument("prompt", metavar="PROMPT", help="what to generate")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the video(s)")
    parser.add_argument(
        "--mode",
        default="normal",
        metavar="MODE",
        help="fun, normal or spicy (default: %(default)s)",
    )
    parser.add_argument(
        "--ratio", default="1:1", metavar="RATIO", help="2:3, 3:2 or 1:1 (default: %(default)s)"
    )
    parser.add_argument(
        "--image",
        action="append",
        metavar="URL",
        help="source image URL; repeat for several (default: none, text to video)",
    )
    parser.add_argument(
        "--allow-unlisted",
        action="store_true",
        help="accept modes and ratios the API does not document, such as 16:9 (default: refuse)",
    )
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``grok-imagine generate``; return the exit status."""
    try:
        request = GenerationRequest(
            prompt=args.prompt,
            mode=args.mode,
            ratio=args.ratio,
            images=args.image,
            allow_unlisted=args.allow_unlisted,
        )
        too_long = prompt_problem(request.prompt, Limits())  # the CLI's client's limits
        if too_long is not None:
            raise InvalidRequestError(f"invalid request: {too_long}", problems=(too_long,))
    except InvalidRequestError as exc:
        message = str(exc).replace("pass allow_unlisted=True", "use --allow-unlisted")
        error("generate", f"{message} (nothing was submitted)")
        return EXIT_USAGE
    try:  # before the 40 credits: a paid video must have somewhere to go
        check_folder(Path(args.out), "output folder")
    except PreflightError as exc:
        error("generate", f"{exc} (nothing was submitted)")
        return EXIT_USAGE
    return anyio.run(_generate, args, request)


async def _generate(args: argparse.Namespace, request: GenerationRequest) -> int:
    task_id: str | None = None
    emulated = False
    status_hint = label = ""

    async def work() -> list[Path]:
        nonlocal task_id, emulated, status_hint, label
        async with connect(args) as connection:
            emulated, label = connection.emulated, connection.label
            client = connection.client
            task_id = await client.submit(request)
            status_hint = command_line(_status_argv(args, task_id))
            print(f"submitted {task_id} ({connection.label}); waiting...", file=sys.stderr)
            task = await client.wait(task_id)
            return await client.download(task, args.out)

    try:
        paths, interrupted = await run_until_interrupted(work)
    except (ConfigurationError, AuthenticationError) as exc:
        error("generate", exc)
        return EXIT_USAGE
    except AmbiguousSubmitError as exc:
        error("generate", f"{exc}. Check your account before trying again.")
        return EXIT_FAILED
    except TaskFailedError as exc:
        error("generate", exc)
        return EXIT_FAILED
    except APIError as exc:
        where = f" (task {task_id}: check it with `{status_hint}`)" if task_id else ""
        error("generate", f"{describe_failure(exc, label)}{where}")
        return EXIT_FAILED
    except OSError as exc:  # the task is paid: say how to fetch its video once space is made
        again = (
            "The emulator's task ended with this process."
            if emulated
            else f"Its result stays available for about 24 hours: `{status_hint}` downloads it "
            "without paying again."
        )
        error(
            "generate",
            f"task {task_id} completed but its video could not be saved in {args.out}: "
            f"{exc.strerror or exc}. {again}",
        )
        return EXIT_FAILED
    if interrupted:
        if task_id is None:
            error("generate", "Interrupted before anything was submitted: nothing was paid.")
        elif emulated:
            error("generate", f"Interrupted. Task {task_id} ended with the built-in emulator.")
        else:
            error(
                "generate",
                f"Interrupted. Task {task_id} goes on generating. To check it and download its "
                f"video without paying again, run: {status_hint}",
            )
        return EXIT_INTERRUPTED
    assert paths is not None
    for path in paths:
        print(path)
    return EXIT_OK


def _status_argv(args: argparse.Namespace, task_id: str) -> list[str]:
    argv = ["status", task_id, "--download", args.out]
    for option in ("base_url", "plan", "time_scale"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    return argv
