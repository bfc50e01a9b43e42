"""The download host policy: literal addresses before sending, the connected address after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from grok_imagine_async._download import HostPolicy
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx

pytestmark = pytest.mark.real_time  # the served emulator runs in a thread


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://93.184.216.34/v.mp4", False),
        ("https://[2606:4700::1111]/v.mp4", False),
        ("https://cdn.example/v.mp4", False),  # a name: judged by the address reached
        ("http://127.0.0.1/v.mp4", True),
        ("http://127.9.9.9/v.mp4", True),
        ("http://100.64.0.1/v.mp4", True),  # carrier-grade NAT
        ("http://224.0.0.1/v.mp4", True),
        ("http://[fe80::1]/v.mp4", True),
        ("http://[fd00::1]/v.mp4", True),
        ("http://sub.localhost/v.mp4", True),
        ("http://LOCALHOST./v.mp4", True),
    ],
)
def test_literal_hosts_are_judged_before_sending(url: str, refused: bool) -> None:
    policy = HostPolicy(api_url="https://api.example")
    assert (policy.refusal(httpx.URL(url)) is not None) is refused


def test_allowed_hosts_and_the_api_host_pass() -> None:
    policy = HostPolicy(api_url="http://127.0.0.1:8000", extra=["[::1]", "Cdn.Internal."])
    for url in ("http://127.0.0.1:9/v", "http://[::1]/v", "http://cdn.internal/v"):
        assert policy.refusal(httpx.URL(url)) is None


@pytest.mark.anyio
async def test_a_real_connection_to_a_local_address_is_refused_after_connecting(
    grok_emulator_env: Mapping[str, str],
) -> None:
    # The address a real socket reached, as httpx reports it: here 127.0.0.1, standing in for a
    # public name that resolved to it (no name is resolved by this test).
    policy = HostPolicy(api_url="https://api.example")
    allowing = HostPolicy(api_url="https://api.example", extra=["videos.example"])
    video = httpx.URL("https://videos.example/v")
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{grok_emulator_env['GROK_IMAGINE_BASE_URL']}/v1/status") as response,
    ):
        reason = policy.refusal(video, response)
        allowed = allowing.refusal(video, response)
        everything = HostPolicy(api_url="https://api.example", extra=["*"])
        off = everything.refusal(video, response)
    assert reason is not None and "127.0.0.1" in reason
    assert allowed is None and off is None


def test_a_star_turns_the_policy_off() -> None:
    policy = HostPolicy(api_url="https://api.example", extra=["*"])
    assert policy.refusal(httpx.URL("http://127.0.0.1/v")) is None


def test_in_memory_answers_have_no_address_and_pass() -> None:
    response: Any = httpx.Response(200)
    policy = HostPolicy(api_url="https://api.example")
    assert policy.refusal(httpx.URL("https://videos.example/v"), response) is None
