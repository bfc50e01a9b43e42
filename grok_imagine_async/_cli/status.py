"""``grok-imagine status TASK_ID``: show one task, and optionally download its videos.

Example:
    $ grok-imagine status task_0a1b2c3d4e5f --download videos
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from .._errors import APIError, ConfigurationError, NotFoundError
from .._models import Task, TaskStatus
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_connection_options,
    connect,
    describe_failure,
    error,
)
from .preflight import PreflightError, check_folder
from .text import printable


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status",
        help="show a task's status (and download its videos)",
        description="Show the status of one task (GET /v1/status). Exit status: 0 if it "
        "completed or is still running, 1 if it failed or is unknown, 2 on bad options.",
    )
    parser.add_argument("task_id", metavar="TASK_ID", help="the task id, e.g. task_123456789")
    parser.add_argument("--json", action="store_true", help="print the task as one JSON object")
    parser.add_argument(
        "--download",
        metavar="DIR",
        help="if the task completed, download its videos into DIR (default: only show it)",
    )
    add_connection_options(parser, emulate=False, sharing=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``grok-imagine status``; return the exit status."""
    if args.download:
        try:
            check_folder(Path(args.download), "download folder")
        except PreflightError as exc:
            error("status", exc)
            return EXIT_USAGE
    return anyio.run(_status, args)


async def _status(args: argparse.Namespace) -> int:
    label = ""
    try:
        async with connect(args) as connection:
            label = connection.label
            task = await connection.client.get_task(args.task_id)
            files = []
            if args.download and task.succeeded:
                files = await connection.client.download(task, args.download)
    except ConfigurationError as exc:
        error("status", exc)
        return EXIT_USAGE
    except ValueError as exc:  # an empty task id
        error("status", exc)
        return EXIT_USAGE
    except NotFoundError:
        error("status", f"no task {args.task_id!r} for this token")
        return EXIT_FAILED
    except APIError as exc:
        error("status", describe_failure(exc, label))
        return EXIT_FAILED
    except OSError as exc:
        error("status", f"cannot save the videos in {args.download}: {exc.strerror or exc}")
        return EXIT_FAILED
    if args.json:
        data = task.model_dump(mode="json")
        data["files"] = [str(f) for f in files]
        print(json.dumps(data))
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
