"""Development sessions. ``nox`` with no arguments runs everything CI runs.

That is: lint, typecheck, the test suite on every supported Python found on the machine
(3.10 to 3.13: on ``PATH`` or installed by pyenv; missing ones are skipped) on httpx, the
unit and component tests on httpx2 (which a default client then uses), the plugin check in a
fresh venv, and the documentation build. ``.ci/run`` runs exactly this on a
fresh clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "tests_httpx2", "plugin", "docs"]
nox.options.reuse_existing_virtualenvs = True
# uv builds a session's environment in seconds where pip takes half a minute (nine sessions on
# a fresh clone); without uv installed beside nox, virtualenv and pip as before.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # the versions pyproject.toml claims
FULL_PYTHON = "3.11"  # the one that also runs the integration tests (see tests())
EXTRAS = "emulator,cli,fastapi,redis,otel,otel-prometheus"
ALL_EXTRAS = f".[{EXTRAS}]"
TEST_DEPS = ["pytest>=8", "pytest-timeout", "pytest-xdist>=3", "hypothesis>=6", "psutil"]
# Most tests run on virtual time (the emulator's clock, not the machine's): their outcome does
# not depend on load, so they run on every core. The ones on the real clock (threads, servers,
# Redis, OS processes) run one at a time in two xdist groups meanwhile (tests/conftest.py),
# mostly waiting on sockets and processes while the other workers compute; the few that
# measure rates on the wall clock run last, alone on the machine.
PYTEST = ["pytest", "-n", "auto", "--dist", "loadgroup"]
WALLCLOCK = "wallclock_rates"
# What only the full Python runs: processes and sockets, and the batches of thousands of jobs
# (a third of the unit tests' CPU; each scenario also runs smaller on every Python).
ONE_PYTHON = f"integration or large_batch or {WALLCLOCK}"
QUICK = ["--hypothesis-profile", "quick"]  # a quarter of the examples (tests/conftest.py)
# Pinned: a new ruff or mypy release may add rules or change formatting, and CI on a fresh
# clone must not turn red for code nobody touched. Bump them deliberately.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
DOCS_DEPS = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=0.26,<2"]
DOCS_ENV = {"NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor
PLUGIN_USER_TESTS = Path("tests/plugin_user/test_with_no_conftest.py")
# mypy checks against pinned versions of the typed dependencies (see the file's header).
TYPECHECK_PINS = Path(".ci/typecheck-pins.txt")


def _pyenv_bin_dirs(minors: list[str]) -> list[str]:
    """The ``bin`` folder of pyenv's newest installed patch release of each minor version.

    pyenv's shims answer ``python3.12`` only for the versions its configuration activates,
    so nox would skip the others as "interpreter not found". Their own ``bin`` folders on
    ``PATH`` make every installed version findable without touching the machine's pyenv
    settings. No pyenv: nothing added, nox uses what is on ``PATH``.
    """
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    versions = Path(root, "versions")
    found = []
    for minor in minors:
        patches = [
            path
            for path in versions.glob(f"{minor}.*")
            if path.name.removeprefix(f"{minor}.").isdigit() and (path / "bin").is_dir()
        ]
        if patches:
            newest = max(patches, key=lambda path: int(path.name.rsplit(".", 1)[1]))
            found.append(str(newest / "bin"))
    return found


os.environ["PATH"] = os.pathsep.join([*_pyenv_bin_dirs(PYTHONS), os.environ.get("PATH", "")])


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (pytest too: the package ships a pytest plugin)."""
    # httpx2 too: the seam's types (an AsyncClient of either library) are then both real.
    session.install(MYPY, f".[{EXTRAS},httpx2]", "pytest>=8", "-c", str(TYPECHECK_PINS))
    session.run("mypy")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, against the in-process and uvicorn-served emulator."""
    session.install(ALL_EXTRAS, *TEST_DEPS)
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    # The integration tests (real servers, OS processes, Redis kills) check how processes and
    # sockets behave, and the large batches how the scheduler's decisions add up over
    # thousands of jobs: neither depends on the interpreter, and they are most of the suite's
    # time. One Python runs them all and every property test's full Hypothesis examples; the
    # others run every other unit and component test, with a quarter of the examples.
    if session.python == FULL_PYTHON:
        session.run(*PYTEST, "-m", f"not {WALLCLOCK}")
        session.run("pytest", "-m", WALLCLOCK)
    else:
        session.run(*PYTEST, *QUICK, "-m", f"not ({ONE_PYTHON})")


@nox.session(python=FULL_PYTHON)
def tests_httpx2(session: nox.Session) -> None:
    """The unit and component tests with httpx2 installed beside httpx.

    A default client, the emulator's client and the test doubles (through
    ``grok_imagine_async._http``) are then on httpx2, and the tests of both families together
    (mixing refused, either family's errors mapped) run. The integration tests exercise
    sockets and processes, not the library's API: the ``tests`` session runs them, the large
    batches and the full Hypothesis examples on this Python.
    """
    session.install(f".[{EXTRAS},httpx2]", *TEST_DEPS)
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    session.run(*PYTEST, *QUICK, "-m", f"not ({ONE_PYTHON})")


@nox.session(reuse_venv=False)
def plugin(session: nox.Session) -> None:
    """The pytest plugin as a user gets it: a fresh venv, ``.[emulator]`` and pytest only.

    Runs a user's test file alone in an empty folder: no conftest.py, no anyio_backend.
    """
    session.install(".[emulator]", "pytest")
    # Outside the clone, so pytest finds none of this repository's configuration either.
    with tempfile.TemporaryDirectory(prefix="grok-imagine-plugin-") as project:
        shutil.copy(PLUGIN_USER_TESTS, project)
        session.chdir(project)
        session.run("pytest", "-p", "no:cacheprovider", "-v", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (MkDocs); any warning is an error."""
    session.install(*DOCS_DEPS, RUFF, ".")  # ruff formats the rendered signatures
    session.run("mkdocs", "build", "--strict", *session.posargs, env=DOCS_ENV)


@nox.session
def docs_serve(session: nox.Session) -> None:
    """Serve the documentation with live reload on http://127.0.0.1:8000 (not in CI)."""
    session.install(*DOCS_DEPS, RUFF, ".")
    session.run("mkdocs", "serve", *session.posargs, env=DOCS_ENV)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Regenerate the committed benchmark tables (not part of the default run)."""
    session.install(f".[{EXTRAS},httpx2]", "matplotlib", "psutil")  # httpx2: bench_overhead
    session.run("python", "-m", "benchmarks", *session.posargs)
