"""What the command line's end-to-end tests share: the emulator they run against, served on
127.0.0.1 30 times faster than the real service (the commands are told so with
``--time-scale 30``), and how they read what a run left."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from grok_imagine_async.testing import EmulatorConfig

SCALE = 30
TOKEN = "cli-test-token-SECRET"
FAST = EmulatorConfig(
    tokens={TOKEN: "pro"}, period=60 / SCALE, time_scale=SCALE, duration_sigma=0.2, seed=7
)


def fast_emulator(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` against :data:`FAST`, served on 127.0.0.1."""
    return pytest.mark.integration(pytest.mark.grok_emulator(FAST)(test))


def against(env: Mapping[str, str]) -> list[str]:
    """The connection options of the served emulator whose environment is ``env``."""
    url = env["GROK_IMAGINE_BASE_URL"]
    return ["--base-url", url, "--api-key", TOKEN, "--plan", "pro", "--time-scale", str(SCALE)]


def manifest(out: Path) -> list[dict[str, Any]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def prompts_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path
