"""Git for the benchmarks: the commit measured (for a table's header), a commit's package."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.rstrip("\n") if done.returncode == 0 else ""


def code_state() -> str:
    """``commit <short hash>``, and the package files changed since it (if any)."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [
        line[3:] for line in _git("status", "--porcelain", "--", "grok_imagine_async").splitlines()
    ]
    if not changed:
        return f"commit {head}"
    return f"commit {head} with uncommitted changes to {', '.join(changed)}"


def extract(ref: str, into: Path) -> Path:
    """Extract ``grok_imagine_async`` as it was at ``ref`` under ``into`` (for PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "grok_imagine_async"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)  # our own repository's archive
    return into
