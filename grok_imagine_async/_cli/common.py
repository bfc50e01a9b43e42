"""What the subcommands share: connection options and their client, exit codes, messages safe
for a terminal (never the token), checks of where they write, Ctrl-C."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .._client import AsyncGrokImagine
from .._errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
)
from .._files import folder_problem
from .._limiting.plans import Plan, resolve_rate_limit
from .._redact import redact_url
from .._settings import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_PLAN,
    ENV_TIME_SCALE,
    Settings,
    time_scale_from,
    with_redis_password,
)

if TYPE_CHECKING:
    from ..testing import Emulator

EXIT_OK = 0
EXIT_FAILED = 1  # a job failed (or the command's one task did)
EXIT_USAGE = 2  # bad options or input, a journal that cannot be used, a rejected token
EXIT_REFUSED = 3  # the batch stopped submitting: the provider refused its last jobs
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT) or SIGTERM

EMULATOR_TOKEN = "emulator-token"
EMULATE_TIME_SCALE = 5.0  # --emulate's speed: a 30 s generation takes 6 s
PLANS = tuple(p.value for p in Plan)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_N = TypeVar("_N", int, float)


def _checked(
    kind: Callable[[str], _N], valid: Callable[[_N], bool], rule: str, noun: str
) -> Callable[[str], _N]:
    """An argparse type: ``kind(text)`` that must be ``valid``, its errors said in words."""

    def check(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return check


positive = _checked(float, lambda v: v > 0, "must be positive", "a number")
count = _checked(int, lambda v: v >= 1, "must be at least 1", "a whole number")
at_least_0 = _checked(int, lambda v: v >= 0, "must be at least 0", "a whole number")
rate = _checked(float, lambda v: 0 <= v <= 1, "must be between 0 and 1", "a number")


def plan(text: str) -> str:
    """An argparse type: a plan name in any case, or a quota such as ``100/6s`` (as text)."""
    text = text.strip()
    try:
        resolve_rate_limit(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.lower() if text.lower() in PLANS else text


def add_connection_options(
    parser: argparse.ArgumentParser, *, emulate: bool = True, sharing: bool = True
) -> None:
    """Add the options every command connects with (``--redis-url``, ``--emulate`` if asked)."""
    add = parser.add_argument_group("connection").add_argument
    # fmt: off
    add("--api-key", metavar="TOKEN", help=f"API token (default: ${ENV_API_KEY}); never printed")
    add("--base-url", metavar="URL",
        help=f"API root (default: ${ENV_BASE_URL}, else the real service)")
    add("--plan", type=plan, metavar="PLAN", help="your rate limit: free, pro, enterprise, or a "
        f"quota such as 100/6s or 2000/min (default: ${ENV_PLAN}, else free)")
    if sharing:
        add("--redis-url", metavar="URL", help="share the token's rate limit with other "
            "processes through Redis (redis://...; default: not shared)")
    add("--time-scale", type=positive, metavar="K", help="the server runs K times faster than "
        "real time, like `grok-imagine emulator --time-scale K`: polls, retries and a plan's "
        f"window shrink to match (default: ${ENV_TIME_SCALE}, else 1"
        + (f"; {EMULATE_TIME_SCALE:g} with --emulate)" if emulate else ")"))
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="warning",
        metavar="LEVEL", help="what the library logs on stderr: critical, error, warning, info "
        "or debug (default: warning); debug also shows the traceback of an unexpected error")
    if emulate:
        add("--emulate", action="store_true", help="run against a built-in emulator of the "
            "API, in this process: no account, no cost, about "
            f"{EMULATE_TIME_SCALE:g}x faster than the real service")
    # fmt: on


@dataclass(frozen=True)
class Connection:
    """An open client; ``endpoint`` names where requests go (no password)."""

    client: AsyncGrokImagine
    endpoint: str
    time_scale: float
    emulator: Emulator | None = None

    @property
    def quota(self) -> str:
        """E.g. ``plan free: 100 requests per 60 s, 5x real time`` (in the server's time)."""
        limit, scale = self.client.limiter.limit, self.time_scale
        period = limit.period * scale
        plans = (f"plan {p.value}" for p in Plan if p.requests_per_minute == limit.requests)
        name = next(plans, "quota") if math.isclose(period, 60.0) else "quota"
        speed = f", {scale:g}x real time" if scale != 1 else ""
        return f"{name}: {limit.requests} requests per {period:g} s{speed}"


@asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[Connection]:
    """Open the client the options and ``GROK_IMAGINE_*`` describe (``Settings.from_env``);
    UsageError if they are wrong or an extra is missing."""
    emulated = bool(getattr(args, "emulate", False))
    base_url: str | None = args.base_url
    if emulated:
        try:
            from ..testing import Emulator, EmulatorConfig
            from ..testing._emulator import IN_PROCESS_BASE_URL
        except ImportError as exc:
            hint = 'the command line needs its extra: pip install "grok-imagine-async[cli]"'
            raise UsageError(f"--emulate: {hint} ({exc})") from None
        base_url = IN_PROCESS_BASE_URL
        given = {"--api-key": args.api_key, "--base-url": args.base_url}
        given["--redis-url"] = getattr(args, "redis_url", None)
        if ignored := [option for option, value in given.items() if value]:
            are = "is" if len(ignored) == 1 else "are"
            note(
                f"Note: --emulate uses its built-in emulator: {' and '.join(ignored)} {are} "
                "ignored (drop --emulate to connect with them)"
            )
    try:
        scale = time_scale_from(args.time_scale or (EMULATE_TIME_SCALE if emulated else None))
        settings = Settings.from_env(
            api_key=EMULATOR_TOKEN if emulated else args.api_key,
            base_url=base_url,
            plan=args.plan,
            time_scale=scale,
        )
    except ConfigurationError as exc:  # said in the command line's terms
        message = for_cli(str(exc))
        if "--api-key" in message and hasattr(args, "emulate"):
            message += " (or add --emulate to try the command without an account, at no cost)"
        raise UsageError(message) from None
    resubmit = getattr(args, "on_ambiguous", None) == "resubmit"
    options: dict[str, Any] = {
        "on_ambiguous_submit": "resubmit" if resubmit else "raise",
        "telemetry": getattr(args, "telemetry", None),  # batch --otel
    }
    state: Path | None = getattr(args, "emulator_state", None)  # set with --emulate only
    emulator: Emulator | None = None
    async with AsyncExitStack() as stack:
        if emulated:
            limit = settings.rate_limit
            config = EmulatorConfig(
                tokens={EMULATOR_TOKEN: limit}, period=limit.period, time_scale=scale
            )
            emulator = Emulator(config)
            if state is not None:  # kept also after Ctrl-C: what the demo's rerun resumes
                try:
                    emulator.load_tasks(state)  # on the loop: the emulator's clock is read there
                except FileNotFoundError:
                    pass  # a first run
                except (OSError, ConfigurationError) as exc:  # the jobs in flight start again, free
                    note(f"Warning: the emulator's tasks were not taken up: {exc}")
                stack.callback(_keep_tasks, emulator, state)
            options["http_client"] = await stack.enter_async_context(emulator.client(token=None))
        elif getattr(args, "redis_url", None):
            try:
                from ..redis._limiter import RedisRateLimiter
            except ImportError as exc:
                raise UsageError(
                    f'--redis-url needs the redis extra: pip install "grok-imagine-async[redis]" '
                    f"({exc})"
                ) from None
            url = with_redis_password(args.redis_url)
            limiter = RedisRateLimiter(url, limit=settings.rate_limit, api_key=settings.api_key)
            options["limiter"] = limiter

            async def close_limiter() -> None:  # to its end, also after Ctrl-C
                with anyio.CancelScope(shield=True):
                    await limiter.aclose()

            stack.push_async_callback(close_limiter)
        client = await stack.enter_async_context(AsyncGrokImagine(settings=settings, **options))
        endpoint = "built-in emulator" if emulated else redact_url(settings.base_url)
        yield Connection(client, endpoint, scale, emulator)


def _keep_tasks(emulator: Emulator, state: Path) -> None:
    try:
        emulator.save_tasks(state)
    except OSError as exc:
        note(f"Warning: cannot keep the emulator's tasks in {state}: {exc}")


def describe_failure(exc: BaseException | None, endpoint: str) -> str:
    """``exc`` for a person: a connection failure says where (a connection's ``endpoint``)."""
    if isinstance(exc, APITimeoutError):
        return f"no answer in time from {endpoint}: {exc}"
    if isinstance(exc, APIConnectionError):
        return f"cannot reach {endpoint}: {exc}"
    if isinstance(exc, OSError) and exc.strerror:  # a local file: name it, once
        path = exc.filename2 if exc.filename2 is not None else exc.filename
        return f"cannot write {path}: {exc.strerror}" if path is not None else exc.strerror
    return str(exc)


def rejected_token(exc: AuthenticationError, endpoint: str) -> str:
    """A refused token for a person: what the server said, and where the token comes from."""
    where = f" by {endpoint}" if endpoint else ""
    return f"{exc} (the API token was refused{where}: check --api-key or ${ENV_API_KEY})"


def leaf_error(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (anyio's task groups)."""
    while (inner := getattr(exc, "exceptions", None)) and len(inner) == 1:
        exc = inner[0]
    return exc


def error(command: str, message: object, code: int = EXIT_FAILED) -> int:
    """Print ``grok-imagine <command>: <message>`` on stderr; return the exit status ``code``."""
    note(f"grok-imagine {command}: {printable(message)}")
    return code


_OPTION_WORDS = {
    "pass allow_unlisted=True": "use --allow-unlisted",
    "api_key=...": "--api-key TOKEN",
    f"the {ENV_API_KEY} environment variable": f"${ENV_API_KEY}",
}


def for_cli(message: str) -> str:
    """``message`` with the library's advice on keywords turned into the options to use."""
    for keyword, option in _OPTION_WORDS.items():
        message = message.replace(keyword, option)
    return message


def note(message: str) -> None:
    """Print a line for people on stderr (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


_URL_OPTIONS = ("--redis-url", "--journal", "--base-url")  # a password there is redacted


def command_line(argv: Sequence[str]) -> str:
    """``grok-imagine <argv>`` as a shell command, with no ``--api-key`` nor URL password."""
    kept: list[str] = []
    rest = iter(argv)
    for arg in rest:
        name, equals, value = arg.partition("=")
        if name == "--api-key":
            if not equals:
                next(rest, None)  # its value
        elif arg in _URL_OPTIONS:
            kept += [arg, *(redact_url(v) for v in [next(rest, None)] if v is not None)]
        else:
            kept.append(f"{name}={redact_url(value)}" if equals and name in _URL_OPTIONS else arg)
    return shlex.join(["grok-imagine", *kept])


async def run_until_interrupted(main: Callable[[], Awaitable[object]]) -> bool:
    """Run ``main`` until it returns or Ctrl-C / SIGTERM cancels it (a second exits at once);
    return whether it was interrupted."""
    interrupted = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal interrupted
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    if interrupted:
                        os._exit(EXIT_INTERRUPTED)
                    interrupted = True
                    scope.cancel()
        except NotImplementedError:  # Windows: KeyboardInterrupt reaches the caller instead
            await anyio.sleep_forever()

    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        work = anyio.CancelScope()  # not the group's: the watcher hears a second signal
        tg.start_soon(watch, work)
        with work:
            try:
                await main()
            except Exception as exc:  # re-raised below as itself, not in an ExceptionGroup
                failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return interrupted


# C0 (ESC starts colour, cursor and title sequences; CR rewrites), DEL, C1 (0x9B is a CSI on
# some terminals) and the bidirectional overrides (text shown reordered).
_CONTROLS = (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS}


def printable(text: object) -> str:
    """``str(text)`` with every control character escaped: server text is shown, not obeyed."""
    return str(text).translate(_ESCAPES)


class UsageError(Exception):
    """Bad options or input, said before anything is submitted: ``main`` prints it, exit 2."""


def check_folder(path: Path, what: str) -> None:
    """Create ``path`` if needed and check a file can be written there; else UsageError."""
    if (problem := folder_problem(path, what)) is not None:
        raise UsageError(problem)


def check_file_target(path: Path, what: str, *, checked: Path | None = None) -> None:
    """Check that ``path`` can be written as a file: no folder is there, and its folder is usable
    (probed unless it is ``checked``, the folder the caller has just probed)."""
    if path.is_dir():
        raise UsageError(f"the {what} {path} is a folder; a file is needed there")
    if path.parent != checked:
        check_folder(path.parent, f"{what}'s folder")
