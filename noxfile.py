"""Development sessions. ``nox`` with no arguments runs lint, typecheck and tests.

The same command is what ``.ci/run`` runs on a fresh clone.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

ALL_EXTRAS = ".[emulator,cli,fastapi,redis,otel,otel-prometheus]"
TEST_DEPS = ["pytest>=8", "pytest-timeout", "hypothesis>=6", "psutil"]
# Pinned: a new ruff or mypy release may add rules or change formatting, and CI on a fresh
# clone must not turn red for code nobody touched. Bump them deliberately.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install(MYPY, ALL_EXTRAS)
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, against the in-process and uvicorn-served emulator."""
    session.install(ALL_EXTRAS, *TEST_DEPS)
    session.run("pytest", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Regenerate the committed benchmark tables (not part of the default run)."""
    session.install(ALL_EXTRAS, "matplotlib", "psutil")
    session.run("python", "-m", "benchmarks", *session.posargs)
