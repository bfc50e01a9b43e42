"""``grok-imagine emulator``: serve the local emulator of the API with uvicorn.

Example:
    $ grok-imagine emulator --port 8000 --plan pro --time-scale 10 --fail-rate 0.1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .common import PLANS, plan_name

if TYPE_CHECKING:
    from ..testing import EmulatorConfig

ENV_HINTS = ("GROK_IMAGINE_BASE_URL", "GROK_IMAGINE_API_KEY", "GROK_IMAGINE_PLAN")


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
            "faults) with uvicorn. Prints the base URL and the token to use."
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    add("--port", type=int, default=8000, help="port, 0 for any free one (default: %(default)s)")
    add("--token", default="test-token", help="accepted bearer token (default: %(default)s)")
    add("--plan", default="free", type=plan_name, choices=PLANS, help="quota of the token")
    add(
        "--time-scale",
        type=_positive,
        default=1.0,
        help="divide generation times, the rate-limit window and slow delays (default: 1)",
    )
    add("--period", type=_positive, default=60.0, help="rate-limit window in seconds, unscaled")
    add(
        "--window",
        choices=["sliding", "fixed", "gcra"],
        default="sliding",
        help="how the quota is counted: a sliding or fixed window, or gcra, a leaky bucket "
        "refilled at the plan's rate (default: %(default)s)",
    )
    add(
        "--burst",
        type=_count,
        default=1,
        help="requests the gcra bucket holds when full (default: %(default)s)",
    )
    add("--reset-format", choices=["seconds", "unix"], default="seconds", help="X-RateLimit-Reset")
    add("--vocabulary", choices=["default", "reseller", "upper"], default="default")
    add("--median", type=_positive, default=30.0, help="median generation time in seconds")
    add("--fail-rate", type=_rate, default=0.0, help="fraction of tasks that fail")
    add("--error-rate", type=_rate, default=0.0, help="fraction of requests answered HTTP 500")
    add("--body-error-rate", type=_rate, default=0.0, help="HTTP 200 with an error code")
    add("--drop-rate", type=_rate, default=0.0, help="connections closed without an answer")
    add("--slow-rate", type=_rate, default=0.0, help="fraction of answers delayed")
    add("--slow-seconds", type=_positive, default=30.0, help="delay of a slow answer (unscaled)")
    add(
        "--result-ttl",
        type=_positive,
        default=86_400.0,
        help="seconds result URLs stay valid after completion, unscaled (default: 86400)",
    )
    add("--seed", type=int, default=None, help="seed for reproducible durations and faults")
    add("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
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
    return EmulatorConfig(
        tokens={args.token: args.plan},
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
        write("  to point the client at it:")
        for name, value in zip(ENV_HINTS, (url, args.token, args.plan), strict=True):
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
