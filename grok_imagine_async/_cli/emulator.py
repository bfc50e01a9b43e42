"""``grok-imagine emulator``: serve the local emulator of the API with uvicorn.

Example:
    $ grok-imagine emulator --port 8000 --plan pro --time-scale 10 --fail-rate 0.1

It prints the ``export`` lines (quota as text, time scale) that make an unmodified client
follow it: see :func:`grok_imagine_async.testing.client_environment`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._limiting.plans import RateLimit
from .common import plan as _plan

if TYPE_CHECKING:
    from ..testing import EmulatorConfig


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``emulator`` subcommand; its handler is stored as ``args.handler``."""
    parser = subparsers.add_parser(
        "emulator",
        help="serve a local emulator of the Grok Imagine API",
        description=(
            "Serve a local emulator of the Grok Imagine API (rate limits, task lifecycle, "
            "faults) with uvicorn. Prints the environment (GROK_IMAGINE_BASE_URL, _API_KEY, "
            "_PLAN, _TIME_SCALE) under which an unmodified client talks to it at its pace."
        ),
    )
    add = parser.add_argument
    add(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="interface to listen on (default: %(default)s)",
    )
    add(
        "--port",
        type=int,
        default=8000,
        metavar="PORT",
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    add(
        "--token",
        default="test-token",
        metavar="TOKEN",
        help="the accepted bearer token (default: %(default)s)",
    )
    add(
        "--plan",
        type=_plan,
        default="free",
        metavar="PLAN",
        help="the token's quota: free, pro, enterprise (requests per --period), or a quota "
        "such as 100/6s, used as is (default: %(default)s)",
    )
    add(
        "--time-scale",
        type=_positive,
        default=1.0,
        metavar="K",
        help="run K times faster than real time: generation times, the plan's window, slow "
        "answers and result lifetimes are divided by K (default: %(default)g)",
    )
    add(
        "--period",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="a plan's rate-limit window, before --time-scale (default: %(default)g)",
    )
    add(
        "--window",
        choices=["sliding", "fixed", "gcra"],
        default="sliding",
        metavar="KIND",
        help="how the quota is counted: a sliding or fixed window, or gcra, a leaky bucket "
        "refilled at the plan's rate (default: %(default)s)",
    )
    add(
        "--burst",
        type=_count,
        default=1,
        metavar="N",
        help="requests the gcra bucket holds when full (default: %(default)s)",
    )
    add(
        "--reset-format",
        choices=["seconds", "unix"],
        default="seconds",
        metavar="FORMAT",
        help="X-RateLimit-Reset as seconds until the reset or as a Unix time "
        "(seconds or unix; default: %(default)s)",
    )
    add(
        "--vocabulary",
        choices=["default", "reseller", "upper"],
        default="default",
        metavar="WORDS",
        help="task status words: default (pending/processing/completed), reseller "
        "(queued/running/success) or upper (PENDING...); default: %(default)s",
    )
    add(
        "--median",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="median generation time, before --time-scale (default: %(default)g)",
    )
    add(
        "--fail-rate",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="fraction of tasks that fail (default: %(default)g)",
    )
    add(
        "--error-rate",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="fraction of requests answered HTTP 500 (default: %(default)g)",
    )
    add(
        "--body-error-rate",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="fraction of requests answered HTTP 200 with an error code in the body "
        "(default: %(default)g)",
    )
    add(
        "--drop-rate",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="fraction of connections closed without an answer (default: %(default)g)",
    )
    add(
        "--slow-rate",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="fraction of answers delayed by --slow-seconds (default: %(default)g)",
    )
    add(
        "--slow-seconds",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="delay of a slow answer, before --time-scale (default: %(default)g)",
    )
    add(
        "--result-ttl",
        type=_positive,
        default=86_400.0,
        metavar="SECONDS",
        help="how long result URLs stay valid after completion, before --time-scale "
        "(default: %(default)g)",
    )
    add(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="seed for reproducible durations, ids and faults (default: random)",
    )
    add(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        metavar="LEVEL",
        help="uvicorn's log level: critical, error, warning, info or debug (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    """The :class:`~grok_imagine_async.testing.EmulatorConfig` the parsed options describe."""
    from ..testing import EmulatorConfig, FaultConfig

    scale = args.time_scale
    faults = FaultConfig(
        server_error_rate=args.error_rate,
        body_error_rate=args.body_error_rate,
        drop_rate=args.drop_rate,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds / scale,
        task_failure_rate=args.fail_rate,
    )
    # A plan tier counts requests per (scaled) --period; a quota text is what it says.
    quota: str | RateLimit = RateLimit.parse(args.plan) if "/" in args.plan else args.plan
    return EmulatorConfig(
        tokens={args.token: quota},
        period=args.period / scale,
        window=args.window,
        burst=args.burst,
        reset_format=args.reset_format,
        duration_median=args.median,
        time_scale=scale,
        vocabulary=args.vocabulary,
        faults=faults,
        result_ttl=args.result_ttl / scale,
        seed=args.seed,
    )


def run(args: argparse.Namespace, *, out: Callable[[str], None] | None = None) -> int:
    """Serve the emulator until interrupted; returns the exit status."""
    write = out or (lambda line: print(line, flush=True))
    try:
        from ..testing import Emulator
        from ..testing._environment import client_environment
        from ..testing._server import serve_forever
    except ImportError as exc:
        print(f"grok-imagine emulator: {exc}", file=sys.stderr)
        return 1
    config = build_config(args)
    limit = config.rate_limits()[args.token]

    counting = f"{args.window} window"
    if args.window == "gcra":
        counting = f"leaky bucket of {args.burst}"

    def announce(url: str) -> None:
        write(f"Grok Imagine emulator listening on {url}")
        write(
            f"  token: {args.token} (plan {args.plan}: {limit.requests} requests per "
            f"{limit.period:g} s, {counting})"
        )
        write(f"  statistics: {url}/_emulator/stats")
        write("  to point the client at it, and make it keep the emulator's pace:")
        for name, value in client_environment(config, url, token=args.token).items():
            write(f"    export {name}={value}")

    try:
        serve_forever(
            Emulator(config),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            on_ready=announce,
        )
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after a clean shutdown
        return 0
    except OSError as exc:
        message = f"grok-imagine emulator: cannot listen on {args.host}:{args.port}: {exc}"
        print(message, file=sys.stderr)
        return 1
    return 0
