"""The README's and the guides' code, run as written: the snippets stay the single source.

A python block right after ``<!-- readme-test: run -->`` is executed against the in-process
emulator on a virtual clock; one after ``<!-- readme-test: pytest -->`` is a file of a pytest
suite (its first line names it) and the suite is run in a subprocess.

The snippets construct ``AsyncGrokImagine`` themselves, with the key from the environment. To
reach the emulator without a socket they get, in their namespace only, the real client class
with the emulator's transport as ``http_client`` (exactly what the README's own pytest fixture
does), and ``anyio.run`` on the virtual-time loop; everything else is the library as shipped.
"""

from __future__ import annotations

import builtins
import io
import os
import re
import subprocess
import sys
import types
from collections.abc import Awaitable, Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import grok_imagine_async
from grok_imagine_async import AsyncGrokImagine
from grok_imagine_async.batch import InputError
from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The README is the site's front page (docs/index.md) too, and the guides repeat some of its
# snippets: every copy is read, and copies of one snippet must be the same code.
DOCUMENTS = [README, ROOT / "docs" / "index.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))]
TOKEN = "test-token"
_MARK = re.compile(r"<!-- readme-test: (run|pytest) -->")


@dataclass(frozen=True)
class Snippet:
    kind: str
    document: Path
    line: int  # of the first line of code, in the document
    code: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def snippets(kind: str) -> list[Snippet]:
    """The python blocks marked ``kind``; every python block for ``kind="any"``."""
    found: list[Snippet] = []
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        for number, text in enumerate(lines):
            mark = _MARK.fullmatch(text.strip())
            if kind == "any":
                if lines[number + 1 : number + 2] != ["```python"]:
                    continue
            elif mark is None or mark.group(1) != kind:
                continue
            fence = number + 1
            where = f"{document.relative_to(ROOT)}:{fence + 1}"
            assert lines[fence].strip() == "```python", f"{where}: expected ```python"
            end = lines.index("```", fence + 1)
            code = "\n".join(lines[fence + 1 : end]) + "\n"
            found.append(Snippet(kind, document, fence + 2, code))
    return found


def by_heading(words: str) -> Snippet:
    """The runnable snippet whose code mentions ``words`` (each test names what it runs)."""
    matching = [s for s in snippets("run") if words in s.code]
    assert matching, f"no runnable snippet contains {words!r}"
    codes = {s.code for s in matching}
    assert len(codes) == 1, (
        f"copies of the snippet with {words!r} differ: {[s.name for s in matching]}"
    )
    return matching[0]


# -- running a snippet -------------------------------------------------------------------------


class _Harness:
    """Runs one snippet against ``emulator``, in the current folder."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.http_clients: list[httpx.AsyncClient] = []

    def client_class(self) -> type[AsyncGrokImagine]:
        harness = self

        class EmulatedGrokImagine(AsyncGrokImagine):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                if "http_client" not in kwargs:
                    kwargs["http_client"] = harness.emulator.client(token=None)
                    harness.http_clients.append(kwargs["http_client"])
                super().__init__(*args, **kwargs)

        return EmulatedGrokImagine

    def anyio_module(self) -> types.ModuleType:
        module = types.ModuleType("anyio")
        module.__dict__.update(anyio.__dict__)

        def run(func: Callable[..., Awaitable[Any]], *args: Any, **_: Any) -> Any:
            return run_virtual(self._closing, func, *args)

        module.__dict__["run"] = run
        return module

    async def _closing(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        try:
            return await func(*args)
        finally:
            for http in self.http_clients:
                await http.aclose()
            self.http_clients.clear()

    def namespace(self) -> dict[str, Any]:
        package = types.ModuleType("grok_imagine_async")
        package.__dict__.update(grok_imagine_async.__dict__)
        package.__dict__["AsyncGrokImagine"] = self.client_class()
        anyio_module = self.anyio_module()
        real_import = builtins.__import__

        def snippet_import(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "grok_imagine_async":
                return package
            if name == "anyio":
                return anyio_module
            return real_import(name, *args, **kwargs)

        scope = dict(vars(builtins), __import__=snippet_import)
        return {"__builtins__": scope, "__name__": "__readme__"}

    def run(self, snippet: Snippet) -> str:
        """Execute ``snippet``, a complete script, and return what it printed."""
        namespace = self.namespace()
        printed = io.StringIO()
        with redirect_stdout(printed):
            source = "\n" * (snippet.line - 1) + snippet.code
            exec(compile(source, snippet.name, "exec"), namespace)
        return printed.getvalue()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Harness:
    for name in [n for n in os.environ if n.startswith("GROK_IMAGINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GROK_IMAGINE_API_KEY", TOKEN)  # "key from $GROK_IMAGINE_API_KEY"
    monkeypatch.chdir(tmp_path)
    return _Harness(Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=3)))


# -- the snippets --------------------------------------------------------------------------------


def test_every_marked_block_is_found() -> None:
    assert len(snippets("run")) >= 4
    assert [s.code.splitlines()[0] for s in snippets("pytest")] == ["# test_pipeline.py"]


@pytest.mark.parametrize("snippet", snippets("any"), ids=lambda s: s.name)
def test_every_python_block_is_a_module_that_takes_the_plan_from_the_environment(
    snippet: Snippet,
) -> None:
    compile(snippet.code, snippet.name, "exec")  # no top-level await or async with
    assert not re.search(r"AsyncGrokImagine\([^)]*plan=", snippet.code), (
        f"{snippet.name}: plan= overrides $GROK_IMAGINE_PLAN"
    )
    if re.search(r"^async def main", snippet.code, re.MULTILINE):
        assert "anyio.run(main)" in snippet.code, f"{snippet.name}: main() is never run"


def test_one_video_generates_downloads_and_pays_once(harness: _Harness, tmp_path: Path) -> None:
    printed = harness.run(by_heading("generate_and_wait("))
    stats = harness.emulator.statistics()
    assert stats.tasks_created == 1 and stats.credits_consumed == 40
    saved = sorted((tmp_path / "videos").iterdir())
    assert saved and all(path.stat().st_size > 0 for path in saved)
    assert str(saved[0]) in printed and "http" in printed  # the URLs, then the paths


def test_many_videos_skips_blank_lines_and_reports_every_paid_task(
    harness: _Harness, tmp_path: Path
) -> None:
    prompts = ["a red kite", "a blue whale", "a paper boat [fail:content]"]
    (tmp_path / "prompts.txt").write_text(
        f"# three clips\n{prompts[0]}\n\n{prompts[1]}\n   \n{prompts[2]}\n"
    )
    printed = harness.run(by_heading("generate_many("))
    stats = harness.emulator.statistics()
    assert dict(stats.tasks_per_prompt) == dict.fromkeys(prompts, 1)
    assert stats.credits_consumed == 40 * len(prompts)  # the refused one is charged too
    lines = printed.splitlines()
    assert len(lines) == len(prompts)  # one line per paid task: none is lost
    assert sum("failed: FailureClass.CONTENT_POLICY" in line for line in lines) == 1
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2 * 2  # two videos per task
    assert (tmp_path / "run.db").exists()

    again = harness.run(by_heading("generate_many("))  # the journal: nothing is paid twice
    assert harness.emulator.statistics().credits_consumed == 40 * len(prompts)
    assert sorted(again.splitlines()) == sorted(lines)


def test_many_videos_refuses_a_bad_line_before_the_first_credit(
    harness: _Harness, tmp_path: Path
) -> None:
    (tmp_path / "prompts.txt").write_bytes(b"a red kite\n\xff\xfe not text\n")
    with pytest.raises(InputError, match=r"prompts\.txt:2: not UTF-8"):
        harness.run(by_heading("generate_many("))
    assert harness.emulator.statistics().requests_total == 0


def test_the_scheduler_snippet_runs_one_job(harness: _Harness) -> None:
    harness.run(by_heading("JobScheduler(client)"))
    stats = harness.emulator.statistics()
    assert stats.tasks_created == 1 and stats.tasks_by_state["completed"] == 1


def test_the_rate_limiting_snippet_builds_its_clients(harness: _Harness) -> None:
    harness.run(by_heading("LocalRateLimiter(RateLimit(100, 6.0))"))
    assert harness.emulator.statistics().requests_total == 0  # building sends nothing


def test_the_pytest_example_passes_as_a_suite(tmp_path: Path) -> None:
    for snippet in snippets("pytest"):
        name = snippet.code.splitlines()[0].removeprefix("# ").strip()
        (tmp_path / name).write_text(snippet.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROK_IMAGINE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "not trio",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout  # on asyncio: anyio runs them on trio too where installed
