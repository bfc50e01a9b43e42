"""The suite's own rules, so that a new test module follows them without being told."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_the_event_loop_is_chosen_in_one_place() -> None:
    # tests/conftest.py's anyio_backend gives every test virtual time, or the real clock to a
    # test marked real_time; a module of its own choosing would drift from it. The folder
    # standing for a user's project keeps anyio's default loop (its own conftest.py).
    allowed = {TESTS / "conftest.py", TESTS / "plugin_user" / "conftest.py"}
    defining = sorted(
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if path not in allowed
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name == "anyio_backend"
    )
    assert defining == []
