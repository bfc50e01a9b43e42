"""The pytest plugin: its fixtures in this suite, and in a user's project with no conftest."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from grok_imagine_async import AsyncGrokImagine, RateLimit
from grok_imagine_async.testing import Emulator, EmulatorConfig
from grok_imagine_async.testing.pytest_plugin import TEST_TIME_SCALE

pytest_plugins = ["pytester"]

USER_TESTS = Path(__file__).parents[1] / "plugin_user" / "test_with_no_conftest.py"

# anyio runs a test on every backend installed (trio too, where a developer has it): the
# counts below are asyncio's.
ASYNCIO = ("-k", "not trio")


def test_default_config_is_the_service_scaled_down(grok_emulator_config: EmulatorConfig) -> None:
    assert grok_emulator_config.time_scale == TEST_TIME_SCALE
    assert grok_emulator_config.rate_limits()["test-token"] == RateLimit(100, 60 / TEST_TIME_SCALE)
    assert grok_emulator_config.seed is not None


@pytest.mark.grok_emulator(time_scale=10, seed=5)
def test_marker_settings_update_the_defaults(grok_emulator_config: EmulatorConfig) -> None:
    assert grok_emulator_config.time_scale == 10
    assert grok_emulator_config.period == pytest.approx(6.0)
    assert grok_emulator_config.seed == 5


@pytest.mark.grok_emulator(EmulatorConfig(seed=2, window="fixed"), seed=3)
def test_marker_config_replaces_the_defaults(grok_emulator_config: EmulatorConfig) -> None:
    assert grok_emulator_config.time_scale == 1.0
    assert grok_emulator_config.window == "fixed"
    assert grok_emulator_config.seed == 3


@pytest.mark.anyio
@pytest.mark.grok_emulator(tokens={"k": "100/2s"}, time_scale=50)
async def test_client_follows_the_emulator(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    assert grok_client.limiter.limit == RateLimit(100, 2.0)
    assert grok_client.settings.expected_duration == pytest.approx(30 / 50)
    task = await grok_client.generate_and_wait("a kite")
    assert task.succeeded
    assert grok_emulator.statistics().rate_limited == 0


@pytest.mark.anyio
async def test_the_factory_makes_more_clients_like_grok_client(
    grok_client: AsyncGrokImagine,
    grok_client_factory: Callable[..., AsyncGrokImagine],
    grok_emulator: Emulator,
    tmp_path: Path,
) -> None:
    rerun = grok_client_factory()
    assert rerun is not grok_client and rerun.limiter is not grok_client.limiter
    assert rerun.settings == grok_client.settings
    for client in (grok_client, rerun):  # the docs' example: two runs of one journal
        async with client.generate_many(["a kite"], journal=tmp_path / "j.db") as results:
            assert [r.ok async for r in results] == [True]
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
@pytest.mark.real_time
async def test_env_fixture_points_a_default_client_at_the_served_emulator(
    grok_emulator_env: Mapping[str, str], grok_emulator: Emulator
) -> None:
    assert grok_emulator_env["GROK_IMAGINE_BASE_URL"].startswith("http://127.0.0.1:")
    async with AsyncGrokImagine() as client:  # everything from the environment
        assert client.settings.expected_duration == pytest.approx(30 / TEST_TIME_SCALE)
        assert client.limiter.limit == grok_emulator.config.rate_limits()["test-token"]
        task = await client.generate_and_wait("a lantern")
    assert task.succeeded
    assert grok_emulator.statistics().requests_by_endpoint["POST /v1/generate"] == 1


def test_a_user_project_needs_no_conftest(pytester: pytest.Pytester) -> None:
    shutil.copy(USER_TESTS, pytester.path / USER_TESTS.name)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly", *ASYNCIO)
    result.assert_outcomes(passed=3)


def test_overriding_the_config_fixture_replaces_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from grok_imagine_async.testing import EmulatorConfig

        @pytest.fixture
        def grok_emulator_config():
            return EmulatorConfig(tokens={"mine": "enterprise"}, time_scale=500, period=0.12)

        @pytest.mark.anyio
        async def test_it(grok_client, grok_emulator):
            assert grok_client.limiter.limit.requests == 5000
            assert (await grok_client.generate_and_wait("x")).succeeded
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly", *ASYNCIO)
    result.assert_outcomes(passed=1)


def test_a_marker_given_anything_but_one_config_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from grok_imagine_async.testing import EmulatorConfig

        @pytest.mark.grok_emulator(EmulatorConfig(), EmulatorConfig())
        def test_two(grok_emulator_config):
            pass

        @pytest.mark.grok_emulator({"seed": 1})
        def test_a_dict(grok_emulator_config):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "E * TypeError: grok_emulator marker takes one EmulatorConfig, got (EmulatorConfig(*",
            "E * TypeError: grok_emulator marker takes one EmulatorConfig, got ({'seed': 1},)",
        ],
        consecutive=False,
    )
