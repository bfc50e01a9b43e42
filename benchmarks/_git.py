"""The commit a benchmark measures, named in its table's header."""

from __future__ import annotations

import subprocess
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
