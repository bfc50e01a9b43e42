"""A second Ctrl-C exits at once, even while the first one's cleanup runs (shielded)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

SCRIPT = """
import anyio
import anyio.lowlevel
from grok_imagine_async._cli.common import run_until_interrupted

async def main():
    for _ in range(3):  # the signal watcher, started beside main, opens its receiver
        await anyio.lowlevel.checkpoint()
    try:
        print("working", flush=True)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            print("cleaning up", flush=True)
            await anyio.sleep(60)  # the in-flight POSTs and journal writes of a real batch

anyio.run(run_until_interrupted, main)
"""


@pytest.mark.integration
def test_a_second_signal_during_the_cleanup_exits_at_once_with_130() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "working\n"
            process.send_signal(signal.SIGINT)
            assert process.stdout.readline() == "cleaning up\n"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 130  # not KeyboardInterrupt inside the cleanup
        finally:
            process.kill()
