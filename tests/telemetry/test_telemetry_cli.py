"""``grok-imagine batch --otel``: exports as the ``OTEL_*`` variables say, else says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grok_imagine_async._cli.common import EMULATOR_TOKEN

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk")

pytestmark = pytest.mark.integration


def run_batch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a kite\na forbidden kite [fail:content]\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GROK_IMAGINE_", "OTEL_"))}
    argv = ["batch", str(prompts), "--emulate", "--time-scale", "60", "--no-progress", "--otel"]
    return subprocess.run(
        [sys.executable, "-m", "grok_imagine_async._cli", *argv, "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def json_objects(text: str) -> list[dict[str, object]]:
    """The JSON documents the console exporters printed among the command's own lines."""
    decoder = json.JSONDecoder()
    found, at = [], text.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        found.append(value)
        at = text.find("{", end)
    return found


def test_console_exporters_receive_the_batchs_spans_and_metrics(tmp_path: Path) -> None:
    done = run_batch(
        tmp_path,
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="console",
        OTEL_SERVICE_NAME="nightly-videos",
    )
    assert done.returncode == 1, done.stderr  # one job was refused: exit status 1
    documents = json_objects(done.stdout)
    spans = [d for d in documents if "context" in d and "kind" in d]
    jobs = [s for s in spans if s["name"] == "generate_video"]
    assert len(jobs) == 2
    assert {s["name"] for s in spans} >= {"POST /v1/generate", "GET /v1/status"}
    assert all(s["resource"]["attributes"]["service.name"] == "nightly-videos" for s in spans)
    outcomes = sorted(s["attributes"]["grok_imagine.job.outcome"] for s in jobs)
    assert outcomes == ["completed", "failed"]
    metrics = [d for d in documents if "resource_metrics" in d]
    names = {
        m["name"]
        for doc in metrics
        for rm in doc["resource_metrics"]
        for sm in rm["scope_metrics"]
        for m in sm["metrics"]
    }
    assert {"http.client.request.duration", "grok_imagine.jobs.finished"} <= names
    assert EMULATOR_TOKEN not in done.stdout


def test_a_missing_exporter_is_named_with_what_to_install(tmp_path: Path) -> None:
    done = run_batch(tmp_path, OTEL_TRACES_EXPORTER="no-such-exporter")
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in done.stderr
    assert "no-such-exporter" in done.stderr
    assert not (tmp_path / "out" / "journal-emulated.db").exists()  # nothing was started
