"""One task: ``grok-imagine generate PROMPT --out DIR`` and ``grok-imagine status TASK_ID``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .._errors import (
    AmbiguousSubmitError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    TaskFailedError,
)
from .._models import GenerationRequest, Task, TaskStatus
from .._settings import Limits, prompt_problem
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    add_connection_options,
    check_folder,
    command_line,
    connect,
    describe_failure,
    error,
    for_cli,
    printable,
    rejected_token,
    run_until_interrupted,
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``generate`` and ``status`` subcommands."""
    parser = subparsers.add_parser(
        "generate",
        help="generate one video and download it",
        description="Generate one video (40 credits), wait for it and download it into DIR. "
        "Prints the saved paths. Exit status: 0 done, 1 failed, 2 bad options, 130 Ctrl-C.",
    )
    add = parser.add_argument
    # fmt: off
    add("prompt", metavar="PROMPT", help="what to generate")
    add("--out", required=True, metavar="DIR", help="folder for the video(s)")
    add("--mode", default="normal", metavar="MODE",
        help="fun, normal or spicy (default: %(default)s)")
    add("--ratio", default="1:1", metavar="RATIO", help="2:3, 3:2 or 1:1 (default: %(default)s)")
    add("--image", action="append", metavar="URL",
        help="source image URL; repeat for several (default: none, text to video)")
    add("--allow-unlisted", action="store_true",
        help="accept modes and ratios the API does not document, such as 16:9 (default: refuse)")
    # fmt: on
    add_connection_options(parser)
    parser.set_defaults(handler=generate)

    parser = subparsers.add_parser(
        "status",
        help="show a task's status (and download its videos)",
        description="Show the status of one task (GET /v1/status). Exit status: 0 if it "
        "completed or is still running, 1 if it failed or is unknown, 2 on bad options.",
    )
    add = parser.add_argument
    add("task_id", type=_task_id, metavar="TASK_ID", help="the task id, e.g. task_123456789")
    add("--json", action="store_true", help="print the task as one JSON object")
    add("--download", metavar="DIR", help="if the task completed, download its videos into DIR "
        "(default: only show it)")  # fmt: skip
    add_connection_options(parser, emulate=False, sharing=False)
    parser.set_defaults(handler=status)


async def generate(args: argparse.Namespace) -> int:
    """Run ``grok-imagine generate``; return the exit status."""
    try:
        request = GenerationRequest(
            prompt=args.prompt,
            mode=args.mode,
            ratio=args.ratio,
            images=args.image,
            allow_unlisted=args.allow_unlisted,
        )
        if too_long := prompt_problem(request.prompt, Limits()):  # the CLI's client's limits
            raise UsageError(f"invalid request: {too_long}")
        check_folder(Path(args.out), "output folder")  # before the 40 credits
    except (InvalidRequestError, UsageError) as exc:
        raise UsageError(for_cli(f"{exc} (nothing was submitted)")) from None
    task_id: str | None = None
    endpoint, paths = "", list[Path]()

    async def work() -> None:
        nonlocal task_id, endpoint, paths
        async with connect(args) as connection:
            endpoint, client = connection.endpoint, connection.client
            task_id = await client.submit(request)
            print(f"submitted {task_id} ({endpoint}); waiting...", file=sys.stderr)
            paths = await client.download(await client.wait(task_id), args.out)

    try:
        interrupted = await run_until_interrupted(work)
    except AuthenticationError as exc:
        raise UsageError(rejected_token(exc, endpoint)) from None
    except AmbiguousSubmitError as exc:
        return error("generate", f"{exc}. Check your account before trying again.")
    except TaskFailedError as exc:
        return error("generate", exc)
    except APIError as exc:
        paid = f". {_paid_task(args, task_id)}" if task_id else ""
        return error("generate", f"{describe_failure(exc, endpoint)}{paid}")
    except OSError as exc:  # the task is paid: say how to fetch its video once space is made
        return error(
            "generate",
            f"the video could not be saved in {args.out}: {exc.strerror or exc}. "
            f"{_paid_task(args, task_id)}",
        )
    if interrupted:
        paid = _paid_task(args, task_id) if task_id else "Nothing was submitted: nothing paid."
        return error("generate", f"Interrupted. {paid}", EXIT_INTERRUPTED)
    for path in paths:
        print(path)
    return EXIT_OK


def _paid_task(args: argparse.Namespace, task_id: str | None) -> str:
    """What becomes of ``task_id``, paid for and not brought home: how to fetch its video."""
    if args.emulate:
        return f"Task {task_id} ended with the built-in emulator."
    argv = ["status", str(task_id), "--download", args.out]
    for option in ("base_url", "plan", "time_scale"):
        if (value := getattr(args, option)) is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    return (
        f"Task {task_id} is paid: `{command_line(argv)}` checks it and downloads its video "
        "without paying again (for about 24 hours after it completes)."
    )


def _task_id(text: str) -> str:
    """An argparse type: a task id, refused blank before a connection is made."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a task id cannot be blank")
    return text


async def status(args: argparse.Namespace) -> int:
    """Run ``grok-imagine status``; return the exit status."""
    if args.download:
        check_folder(Path(args.download), "download folder")
    endpoint = ""
    try:
        async with connect(args) as connection:
            endpoint = connection.endpoint
            task = await connection.client.get_task(args.task_id)
            files = []
            if args.download and task.succeeded:
                files = await connection.client.download(task, args.download)
    except NotFoundError:
        return error("status", f"no task {args.task_id!r} for this token")
    except AuthenticationError as exc:  # exit 2, as generate and batch
        raise UsageError(rejected_token(exc, endpoint)) from None
    except (APIError, OSError) as exc:  # an OSError names the file it could not write
        message = describe_failure(exc, endpoint)
        if isinstance(exc, OSError) and exc.filename is None and exc.filename2 is None:
            message = f"cannot save the videos in {args.download}: {message}"  # a full disk
        return error("status", message)
    if args.json:
        print(json.dumps({**task.model_dump(mode="json"), "files": [str(f) for f in files]}))
    else:
        print(describe(task))
        for path in files:
            print(f"  saved      {path}")
    sys.stdout.flush()
    return EXIT_FAILED if task.status is TaskStatus.FAILED else EXIT_OK


def describe(task: Task) -> str:
    """A few aligned lines about ``task``, for people."""
    lines = [f"{printable(task.task_id)}  {task.status.value} ({printable(task.raw_status)})"]
    if task.created_at is not None:
        lines.append(f"  created    {task.created_at.isoformat()}")
    if task.consumed_credits is not None:
        lines.append(f"  credits    {task.consumed_credits}")
    if task.request:
        prompt = printable(task.request.get("prompt", ""))
        lines.append(f"  prompt     {prompt[:100]}{'...' if len(prompt) > 100 else ''}")
    if task.error_message:
        failure = task.failure_class.value if task.failure_class else "unknown"
        lines.append(f"  error      {printable(task.error_message)} ({failure})")
    for i, url in enumerate(task.videos):
        lines.append(f"  {'videos' if i == 0 else '':<10} {printable(url)}")
    if task.status is TaskStatus.COMPLETED and not task.videos:
        lines.append("  error      completed without a video URL")
    return "\n".join(lines)
