"""``grok-imagine emulator``: serve the local emulator of the API with uvicorn, and print the
``export`` lines under which an unmodified client follows it (``Emulator.environment``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..testing._config import Vocabulary
from .common import EXIT_OK, LOG_LEVELS, count, error, plan, positive, rate

if TYPE_CHECKING:
    from ..testing import EmulatorConfig


_B = " before --time-scale"
_WORDS = Vocabulary.names()
# (option, type or choices, default, metavar, help)
_OPTIONS: tuple[tuple[str, Callable[[str], Any] | tuple[str, ...], Any, str, str], ...] = (
    ("--host", str, "127.0.0.1", "HOST", "interface to listen on"),
    ("--port", int, 8000, "PORT", "port to listen on, 0 for any free one"),
    ("--token", str, "test-token", "TOKEN", "the accepted bearer token"),
    ("--plan", plan, "free", "PLAN", "the token's quota: free, pro, enterprise (requests per "
     "--period), or a quota such as 100/6s, used as is"),
    ("--time-scale", positive, 1.0, "K", "run K times faster than real time: generation "
     "times, the plan's window, slow answers and result lifetimes are divided by K"),
    ("--period", positive, 60.0, "SECONDS", f"a plan's rate-limit window,{_B}"),
    ("--window", ("sliding", "fixed", "gcra"), "sliding", "KIND", "how the quota is counted: "
     "a sliding or fixed window, or gcra, a leaky bucket refilled at the plan's rate"),
    ("--burst", count, 1, "N", "requests the gcra bucket holds when full"),
    ("--reset-format", ("seconds", "unix"), "seconds", "FORMAT",
     "X-RateLimit-Reset as seconds until the reset or as a Unix time (seconds or unix)"),
    ("--vocabulary", tuple(_WORDS), "default", "WORDS", "task status words: "
     + ", ".join(f"{name} ({words})" for name, words in _WORDS.items())),
    ("--median", positive, 30.0, "SECONDS", f"median generation time,{_B}"),
    ("--fail-rate", rate, 0.0, "RATE", "fraction of tasks that fail"),
    ("--error-rate", rate, 0.0, "RATE", "fraction of requests answered HTTP 500"),
    ("--body-error-rate", rate, 0.0, "RATE",
     "fraction of requests answered HTTP 200 with an error code in the body"),
    ("--drop-rate", rate, 0.0, "RATE", "fraction of connections closed without an answer"),
    ("--slow-rate", rate, 0.0, "RATE", "fraction of answers delayed by --slow-seconds"),
    ("--slow-seconds", positive, 30.0, "SECONDS", f"delay of a slow answer,{_B}"),
    ("--result-ttl", positive, 86_400.0, "SECONDS",
     f"how long result URLs stay valid after completion,{_B}"),
    ("--seed", int, None, "N", "seed for reproducible durations, ids and faults"),
    ("--log-level", LOG_LEVELS, "info", "LEVEL",
     "uvicorn's log level: critical, error, warning, info or debug"),
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``emulator`` subcommand."""
    parser = subparsers.add_parser(
        "emulator",
        help="serve a local emulator of the Grok Imagine API",
        description="Serve a local emulator of the Grok Imagine API (rate limits, task "
        "lifecycle, faults) with uvicorn. Prints the environment (GROK_IMAGINE_BASE_URL, "
        "_API_KEY, _PLAN, _TIME_SCALE) under which an unmodified client talks to it at its pace.",
    )
    for name, kind, default, metavar, text in _OPTIONS:
        shown = "%(default)g" if isinstance(default, float) else "%(default)s"
        shown = "random" if default is None else shown
        options: dict[str, Any] = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        parser.add_argument(
            name, default=default, metavar=metavar, help=f"{text} (default: {shown})", **options
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
    return EmulatorConfig(
        tokens={args.token: args.plan},  # a plan per (scaled) --period; a quota text as it says
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


def run(args: argparse.Namespace) -> int:
    """Serve the emulator until interrupted; return the exit status."""
    try:
        from ..testing import Emulator
        from ..testing._emulator import serve_forever
    except ImportError as exc:
        return error("emulator", exc)
    config = build_config(args)
    emulator = Emulator(config)
    limit = config.rate_limits()[args.token]
    counting = f"leaky bucket of {args.burst}" if args.window == "gcra" else f"{args.window} window"

    def announce(url: str) -> None:
        exports = emulator.environment(url, token=args.token).items()
        lines = [
            f"Grok Imagine emulator listening on {url}",
            f"  token: {args.token} (plan {args.plan}: {limit.requests} requests per "
            f"{limit.period:g} s, {counting})",
            f"  statistics: {url}/_emulator/stats",
            "  to point the client at it, and make it keep the emulator's pace:",
            *(f"    export {name}={value}" for name, value in exports),
        ]
        print("\n".join(lines), flush=True)

    try:
        serve_forever(
            emulator, host=args.host, port=args.port, log_level=args.log_level, on_ready=announce
        )
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after a clean shutdown
        pass
    except OSError as exc:
        return error("emulator", f"cannot listen on {args.host}:{args.port}: {exc}")
    return EXIT_OK
