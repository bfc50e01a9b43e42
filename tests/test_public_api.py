"""The package's public surface: every name in __all__ exists, is documented, and is sorted."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import grok_imagine_async
from grok_imagine_async import _errors


def test_all_names_import_and_are_documented() -> None:
    for name in grok_imagine_async.__all__:
        obj = getattr(grok_imagine_async, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_all_is_sorted_and_unique() -> None:
    names = grok_imagine_async.__all__
    assert len(names) == len(set(names))
    assert names == sorted(names)


def test_contract_names_are_exported() -> None:
    for name in (
        "AsyncGrokImagine",
        "GenerationRequest",
        "Task",
        "TaskStatus",
        "Plan",
        "PollPolicy",
        "GrokImagineError",
        "APIError",
        "APIStatusError",
        "BadRequestError",
        "AuthenticationError",
        "RateLimitError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
        "AmbiguousSubmitError",
        "TaskFailedError",
    ):
        assert name in grok_imagine_async.__all__


def test_every_exception_descends_from_the_root_and_says_when_raised() -> None:
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert issubclass(cls, grok_imagine_async.GrokImagineError)
        assert "Raised when" in (cls.__doc__ or "") or "Raised on" in (cls.__doc__ or ""), name
        assert getattr(grok_imagine_async, name) is cls


def test_fastapi_all_is_sorted_and_every_name_is_documented() -> None:
    fastapi = pytest.importorskip("grok_imagine_async.fastapi")
    assert fastapi.__all__ == sorted(fastapi.__all__)
    for name in fastapi.__all__:
        obj = getattr(fastapi, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_one_name_per_thing_with_the_old_names_deprecated() -> None:
    fastapi = pytest.importorskip("grok_imagine_async.fastapi")
    assert fastapi.BacklogFullError is grok_imagine_async.BacklogFullError
    with pytest.warns(DeprecationWarning, match="SchedulerClosedError"):
        old = fastapi.SchedulerStoppedError
    assert old is grok_imagine_async.SchedulerClosedError
    assert "SchedulerStoppedError" not in fastapi.__all__
    with pytest.raises(AttributeError):
        fastapi.NoSuchName  # noqa: B018


def test_all_lists_exactly_the_public_names() -> None:
    # As httpx's test does: whatever the package defines without an underscore is in __all__,
    # and nothing else is (submodules such as ``abc`` or ``fastapi`` are namespaces, not names).
    public = {
        name
        for name, value in vars(grok_imagine_async).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
    }
    assert set(grok_imagine_async.__all__) == public


def test_abc_holds_the_extension_seams() -> None:
    from grok_imagine_async import abc

    assert abc.__all__ == sorted(abc.__all__)
    for name in abc.__all__:
        assert inspect.getdoc(getattr(abc, name)), name
        if name != "Clock":
            assert getattr(abc, name) is getattr(grok_imagine_async, name)
    assert {"RateLimiter", "Permit", "RateLimitFeedback", "LimiterStatistics", "Priority",
            "Journal", "JournalRecord", "JournalState"} <= set(abc.__all__)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "home", "attribute"),
    [
        ("backoff_delay", "grok_imagine_async._backoff", "backoff_delay"),
        ("request_key", "grok_imagine_async._scheduling.jobs", "request_key"),
        ("Clock", "grok_imagine_async.abc", "Clock"),
        ("LoopClock", "grok_imagine_async._clock", "LoopClock"),
        ("ManualClock", "grok_imagine_async.testing", "ManualClock"),
        ("SchedulerEvent", "grok_imagine_async._scheduling.jobs", "SchedulerEvent"),
    ],
)
def test_plumbing_exported_by_accident_warns_for_one_release(
    name: str, home: str, attribute: str
) -> None:
    assert name not in grok_imagine_async.__all__
    with pytest.warns(DeprecationWarning, match=f"grok_imagine_async.{name} is deprecated"):
        value = getattr(grok_imagine_async, name)
    assert value is getattr(importlib.import_module(home), attribute)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        grok_imagine_async.no_such_name  # noqa: B018
