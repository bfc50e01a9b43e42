"""httpx2 and httpx: the default client's library, clients of either family, no mixing.

Parametrized over the families installed: with httpx alone (the ``tests`` session) each
test runs on httpx; with httpx2 too (``tests_httpx2``) on both, and the mixing tests run.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest
from fakes import TOKEN, RecordingLimiter, Script, ok, task_data

from grok_imagine_async import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncGrokImagine,
    ConfigurationError,
    RetryPolicy,
    _http,
)
from grok_imagine_async.testing import Emulator, EmulatorConfig

BASE = "http://api.test"
NO_RETRY = RetryPolicy(attempts=0)
FAMILIES = [pytest.param(family, id=family.__name__) for family in _http.FAMILIES]
both = pytest.mark.skipif(len(_http.FAMILIES) < 2, reason="needs httpx2 installed beside httpx")


def client_on(family: ModuleType, script: Script, **kwargs: Any) -> AsyncGrokImagine:
    http = family.AsyncClient(transport=family.MockTransport(script))
    return AsyncGrokImagine(
        api_key=TOKEN,
        base_url=BASE,
        http_client=http,
        limiter=RecordingLimiter(),
        retry=NO_RETRY,
        **kwargs,
    )


def in_family(family: ModuleType, answer: Any) -> Any:
    """``answer`` (a fakes ``Response``) rebuilt as ``family``'s."""
    return family.Response(answer.status_code, headers=answer.headers.raw, content=answer.content)


def test_the_default_client_is_on_httpx2_when_installed_else_httpx() -> None:
    expected = "httpx2" if importlib.util.find_spec("httpx2") is not None else "httpx"
    client = AsyncGrokImagine(api_key=TOKEN)
    assert type(client._http).__module__.partition(".")[0] == expected
    assert _http.lib.__name__ == expected


def test_no_process_wide_alias_is_installed() -> None:
    import grok_imagine_async.testing  # noqa: F401  (everything that could install one)

    assert sys.modules["httpx"].__name__ == "httpx"
    assert sys.modules.get("httpcore") is None or sys.modules["httpcore"].__name__ == "httpcore"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.anyio
async def test_a_client_of_either_family_is_used_as_it_is(family: ModuleType) -> None:
    script = Script(in_family(family, ok(task_data())))
    async with client_on(family, script) as client:
        task = await client.get_task("task_1")
    assert task.succeeded
    assert script.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ConnectError", APIConnectionError),
        ("ConnectTimeout", APITimeoutError),
        ("PoolTimeout", APITimeoutError),
        ("ReadTimeout", APITimeoutError),
        ("WriteTimeout", APITimeoutError),
        ("ReadError", APIConnectionError),
        ("WriteError", APIConnectionError),
        ("RemoteProtocolError", APIConnectionError),
        ("LocalProtocolError", APIConnectionError),
        ("UnsupportedProtocol", APIConnectionError),
        ("ProxyError", APIConnectionError),
        ("DecodingError", APIResponseValidationError),
    ],
)
@pytest.mark.anyio
async def test_every_transport_error_of_either_family_maps_into_our_tree(
    family: ModuleType, name: str, expected: type[Exception]
) -> None:
    failure = getattr(family, name)(f"failed near {TOKEN}")
    async with client_on(family, Script(failure)) as client:
        with pytest.raises(expected) as raised:
            await client.get_task("task_1")
    assert type(raised.value) is expected
    assert TOKEN not in str(raised.value)
    assert raised.value.__context__ is None  # the library's request (and its token) left behind


@both
@pytest.mark.parametrize("client_family", ["httpx", "httpx2"])
def test_a_client_on_a_transport_of_the_other_family_is_a_configuration_error(
    client_family: str,
) -> None:
    family = importlib.import_module(client_family)
    other = importlib.import_module("httpx2" if client_family == "httpx" else "httpx")
    http = family.AsyncClient(transport=other.MockTransport(Script()))
    with pytest.raises(ConfigurationError) as raised:
        AsyncGrokImagine(api_key=TOKEN, http_client=http)
    message = str(raised.value)
    assert f"{client_family}.AsyncClient" in message
    assert f"{other.__name__} transport (MockTransport)" in message


@both
def test_a_mounted_transport_of_the_other_family_is_a_configuration_error() -> None:
    import httpx
    import httpx2

    http = httpx2.AsyncClient(mounts={"http://cdn.test": httpx.MockTransport(Script())})
    with pytest.raises(ConfigurationError, match=r"httpx2\.AsyncClient.*httpx transport"):
        AsyncGrokImagine(api_key=TOKEN, http_client=http)


def test_an_http_client_of_neither_family_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="http_client must be an"):
        AsyncGrokImagine(api_key=TOKEN, http_client=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.anyio
async def test_a_timeout_of_either_family_is_taken(family: ModuleType) -> None:
    script = Script(ok(task_data()))
    http = _http.lib.AsyncClient(transport=_http.lib.MockTransport(script))
    client = AsyncGrokImagine(
        api_key=TOKEN, base_url=BASE, http_client=http, timeout=family.Timeout(7.0, connect=2.0)
    )
    async with client:
        await client.get_task("task_1")
    assert script.requests[0].extensions["timeout"] == {
        "connect": 2.0,
        "read": 7.0,
        "write": 7.0,
        "pool": 7.0,
    }
    assert AsyncGrokImagine(api_key=TOKEN, timeout=family.Timeout(3.0))._http.timeout.read == 3.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.anyio
async def test_the_emulator_transport_serves_a_client_of_either_family(
    family: ModuleType,
) -> None:
    emulator = Emulator(EmulatorConfig(tokens={"test-token": "enterprise"}))
    async with family.AsyncClient(
        transport=emulator.transport(),
        base_url="http://emulator.local",
        headers={"Authorization": "Bearer test-token"},
    ) as http:
        answer = await http.post("/v1/generate", json={"prompt": "a kite"})
        assert isinstance(answer, family.Response)
        assert answer.json()["code"] == 200
        with pytest.raises(family.RemoteProtocolError):
            await http.post("/v1/generate", json={"prompt": "x [fail:drop:1]"})
        with pytest.raises(family.ReadTimeout):
            await http.post("/v1/generate", json={"prompt": "y [slow:30]"}, timeout=5.0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "task_id",
    ["task_1", "a b+c", "x&task_id=y", "50%/é?#", " tab\tnew\nline ", "ñ/\u2028/😀"],
)
@pytest.mark.anyio
async def test_the_status_url_is_the_one_the_library_writes_from_params(
    family: ModuleType, task_id: str
) -> None:
    # The client writes the query itself (one URL parse a request, not two): the same bytes.
    script = Script(in_family(family, ok(task_data(task_id=task_id))))
    async with client_on(family, script) as client:
        await client.get_task(task_id)
    expected = family.Request("GET", f"{BASE}/v1/status", params={"task_id": task_id}).url
    assert str(script.requests[0].url) == str(expected)
    assert script.requests[0].url.params["task_id"] == task_id
