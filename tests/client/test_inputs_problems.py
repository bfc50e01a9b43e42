"""``JobFile.check(max_problems=N)``: every bad line of a file in one pass, not only the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from grok_imagine_async import ConfigurationError, Limits
from grok_imagine_async.batch import InputError, JobFile


def lines_of(error: InputError) -> list[int | None]:
    return [problem.line for problem in error.problems]


def test_by_default_the_check_stops_at_the_first_problem(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\nnot json\n{"prompt": ""}\n')
    with pytest.raises(InputError) as caught:
        JobFile(path).check()
    assert caught.value.line == 2
    assert (lines_of(caught.value), caught.value.problem_count) == ([2], 1)


def test_every_kind_of_bad_line_is_gathered_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'{"prompt": "ok", "id": "a"}\n'
        b"not json\n"
        b"\xff\xfe\n"
        b'{"prompt": "x", "colour": "red"}\n'
        b"[1, 2]\n"
        b'{"prompt": "again", "id": "a"}\n'
        b'{"prompt": "fine", "ratio": "5:4"}\n'
        b'{"prompt": "last one is good"}\n'
    )
    with pytest.raises(InputError) as caught:
        JobFile(path).check(max_problems=20)
    error = caught.value
    assert lines_of(error) == [2, 3, 4, 5, 6, 7]
    assert error.problem_count == 6 and error is error.problems[0]
    problems = [p.problem for p in error.problems]
    assert problems[1].startswith("not UTF-8 text")
    assert problems[4] == "duplicate id 'a' (already used on line 1)"
    assert "5:4" in problems[5]


def test_the_problems_kept_are_bounded_and_all_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f"{{bad {n}\n" for n in range(30)) + '{"prompt": "good"}\n')
    with pytest.raises(InputError) as caught:
        JobFile(path).check(max_problems=5)
    assert lines_of(caught.value) == [1, 2, 3, 4, 5]
    assert caught.value.problem_count == 30


def test_a_csv_without_a_usable_header_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,colour\na kite,red\nx,y\n")
    with pytest.raises(InputError) as caught:
        JobFile(path).check(max_problems=20)
    assert (lines_of(caught.value), caught.value.problem_count) == ([1], 1)
    assert "unknown column 'colour'" in str(caught.value)


def test_iterating_still_raises_at_the_first_bad_line_after_the_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"one\ntwo\n\xff\nthree\n")
    specs = iter(JobFile(path))
    assert [next(specs).request.prompt, next(specs).request.prompt] == ["one", "two"]
    with pytest.raises(InputError, match=r"p\.txt:3: not UTF-8"):
        next(specs)


def test_a_clean_file_checks_as_before(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("one\n\n# two\nthree\n")
    summary = JobFile(path).check(max_problems=20)
    assert summary.jobs == 2
    with pytest.raises(ConfigurationError, match="max_problems"):
        JobFile(path).check(max_problems=0)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ('prompt,ratio\nok,1:1\n"unterminated,2:3\n', 3, "never closed (an unterminated quote)"),
        ('prompt,ratio\n"unterminated,2:3\nnext,1:1\n', 2, "never closed (an unterminated quote)"),
        ('prompt,ratio\n"a kite"at dawn,1:1\nfine,1:1\n', 2, "bad CSV"),
    ],
)
def test_malformed_csv_is_an_input_error_not_a_prompt(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        JobFile(path).check(max_problems=20)
    assert (caught.value.line, caught.value.problem_count) == (line, 1)
    assert problem in caught.value.problem


def test_a_quoted_prompt_over_several_lines_is_still_one_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('prompt,ratio\n"a kite,\nat dawn",2:3\n')
    assert [spec.request.prompt for spec in JobFile(path)] == ["a kite,\nat dawn"]


def test_a_prompt_the_client_would_refuse_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("short\n" + "x" * 6_000 + "\n")
    with pytest.raises(InputError) as caught:
        JobFile(path).check()
    assert caught.value.line == 2
    assert "6000 characters, more than 5000 (Limits.max_prompt_chars)" in caught.value.problem
    assert JobFile(path, limits=Limits(max_prompt_chars=6_000)).check().jobs == 2


def test_a_name_template_names_each_job_and_must_tell_them_apart(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "A red kite, over the dunes at dawn!", "id": "kite"}\n{"prompt": "an owl"}\n'
    )
    summary = JobFile(path, name="{index:02d}-{slug}-{key}").check()
    owl = next(key for key in summary.keys if key != "kite")
    assert summary.file_stem("kite") == "01-a-red-kite-over-the-dunes-at-dawn-kite"
    assert summary.file_stem(owl) == f"02-an-owl-{owl}"
    assert JobFile(path).check().file_stem("kite") == "kite"  # the default: the key
    for bad in ("{slug}", "{key}-{colour}", "{key"):
        with pytest.raises(ConfigurationError, match="name template"):
            JobFile(path, name=bad)
