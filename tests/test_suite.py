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


def test_property_tests_count_their_examples_through_the_profile() -> None:
    # fakes.examples(n) scales a test's Hypothesis examples to the loaded profile (nox's "quick"
    # on the Pythons that skip the integration run); a literal count would ignore it.
    literal = sorted(
        f"{path.relative_to(TESTS)}:{node.lineno}"
        for path in TESTS.rglob("*.py")
        if path != TESTS / "conftest.py"  # where the profiles are registered
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.keyword)
        and node.arg == "max_examples"
        and isinstance(node.value, ast.Constant)
    )
    assert literal == []
