"""This folder stands for a user's project: anyio's own default event loop, as a user has,
not the suite's virtual time (``tests/conftest.py``), which would hide what the plugin does
on the loop a user runs."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
