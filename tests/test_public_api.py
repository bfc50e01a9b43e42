"""The package's public surface: curated, sorted, documented, each name in one place.

As httpx and anyio do: the names a user writes are in ``grok_imagine_async``, the extension
protocols only in ``grok_imagine_async.abc``, a batch's files and figures in
``grok_imagine_async.batch``, and each integration's names in its own module; every public
class says where it is imported from (``__module__``), and nothing is kept for compatibility.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import types
import typing
from pathlib import Path

import pytest

import grok_imagine_async
from grok_imagine_async import _errors

PUBLIC_MODULES = [
    "grok_imagine_async",
    "grok_imagine_async.abc",
    "grok_imagine_async.batch",
    "grok_imagine_async.fastapi",
    "grok_imagine_async.otel",
    "grok_imagine_async.redis",
    "grok_imagine_async.testing",
]

MAX_TOP_LEVEL_NAMES = 42


def _public(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _exported(module: types.ModuleType) -> dict[str, object]:
    return {name: getattr(module, name) for name in module.__all__}


def test_the_top_level_is_curated() -> None:
    assert len(grok_imagine_async.__all__) <= MAX_TOP_LEVEL_NAMES


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_unique_and_documented(name: str) -> None:
    module = _public(name)
    assert module.__all__ == sorted(set(module.__all__))
    for attribute, value in _exported(module).items():
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attribute} has no docstring"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_classes_say_where_they_are_imported_from(name: str) -> None:
    # So reprs, tracebacks and the reference say grok_imagine_async.JobResult, not the
    # private module that defines it.
    module = _public(name)
    for attribute, value in _exported(module).items():
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == name, f"{name}.{attribute}: {value.__module__}"
            assert getattr(importlib.import_module(value.__module__), value.__qualname__) is value


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_annotations_still_resolve_after_the_move(name: str) -> None:
    # get_type_hints (and pydantic, FastAPI) evaluate a class's annotations in its
    # __module__, which does not import what the private module did.
    module = _public(name)
    for value in _exported(module).values():
        if inspect.isclass(value):
            typing.get_type_hints(value)


def test_each_name_has_one_home() -> None:
    homes: dict[int, str] = {}
    for name in PUBLIC_MODULES:
        for attribute, value in _exported(_public(name)).items():
            if inspect.isclass(value) or inspect.isfunction(value):
                where = f"{name}.{attribute}"
                assert id(value) not in homes, f"{where} is also {homes[id(value)]}"
                homes[id(value)] = where


def test_the_protocols_live_only_in_abc() -> None:
    from grok_imagine_async import abc

    assert {"RateLimiter", "Permit", "Priority", "RateLimitFeedback", "LimiterStatistics",
            "JobStore", "StoreRecord", "StoreState", "Observer", "RequestAttempt",
            "JobScope", "SchedulerHook", "Clock"} <= set(abc.__all__)  # fmt: skip
    assert not set(abc.__all__) & set(grok_imagine_async.__all__)


def test_contract_names_are_exported() -> None:
    for name in (
        "AsyncGrokImagine",
        "GenerationRequest",
        "Task",
        "TaskStatus",
        "Plan",
        "PollPolicy",
        "JobScheduler",
        "JobSpec",
        "JobResult",
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
    homes = {
        "InputError": "grok_imagine_async.batch",
        "BacklogFullError": "grok_imagine_async.fastapi",
        "ProviderDownError": "grok_imagine_async.fastapi",
        "RedisUnavailableError": "grok_imagine_async.redis",
        "JobTakenOver": "grok_imagine_async.abc",  # a job store's word, for those who write one
    }
    errors = {
        n: c for n, c in vars(_errors).items() if isinstance(c, type) and issubclass(c, Exception)
    }
    extras = vars(_public("grok_imagine_async.fastapi"))  # the extras' errors live with them
    errors |= {n: c for n, c in extras.items() if n.endswith("Error") and n not in errors}
    assert len(errors) == 25
    for name, cls in errors.items():
        assert issubclass(cls, grok_imagine_async.GrokImagineError)
        assert "Raised when" in (cls.__doc__ or "") or "Raised on" in (cls.__doc__ or ""), name
        home = homes.get(name, "grok_imagine_async")
        assert getattr(_public(home), name) is cls, name


def test_all_lists_exactly_the_public_names() -> None:
    # As httpx's test does: whatever the package defines without an underscore is in __all__,
    # and nothing else is (submodules such as ``abc`` or ``fastapi`` are namespaces, not names).
    public = {
        name
        for name, value in vars(grok_imagine_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(grok_imagine_async.__all__) == public


def test_the_version_is_an_attribute_that_a_star_import_leaves_alone() -> None:
    from grok_imagine_async._version import __version__

    assert grok_imagine_async.__version__ == __version__
    assert "__version__" not in grok_imagine_async.__all__


@pytest.mark.parametrize("name", ["grok_imagine_async", "grok_imagine_async.fastapi"])
def test_no_name_is_kept_for_compatibility(name: str) -> None:
    # Nothing was released: a moved or removed name is gone, with no module __getattr__
    # serving it with a warning.
    module = _public(name)
    assert not hasattr(module, "__getattr__")
    for old in ("build_request", "SchedulerStoppedError", "backoff_delay", "Clock", "RateLimiter"):
        if old not in module.__all__:
            with pytest.raises(AttributeError):
                getattr(module, old)


def test_public_values_pickle_under_their_public_names(tmp_path: Path) -> None:
    from grok_imagine_async import abc

    values: list[object] = [
        grok_imagine_async.GenerationRequest(prompt="a fox", ratio="2:3"),
        grok_imagine_async.TaskStatus.COMPLETED,
        grok_imagine_async.RateLimit(100, 6.0),
        grok_imagine_async.JobSpec(grok_imagine_async.GenerationRequest(prompt="a fox")),
        grok_imagine_async.ConfigurationError("no API key"),
        abc.Priority.POLL,
    ]
    for value in values:
        data = pickle.dumps(value)
        assert type(value).__module__.encode() in data
        assert repr(pickle.loads(data)) == repr(value)
