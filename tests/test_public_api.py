"""The package's public surface: every name in __all__ exists, is documented, and is sorted."""

from __future__ import annotations

import inspect

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
