"""Batch input files: the three formats, keys, defaults, and errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from grok_imagine_async import ConfigurationError, GenerationRequest, GrokImagineError
from grok_imagine_async._scheduling.inputs import InputError, JobFile
from grok_imagine_async._scheduling.jobs import request_key


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_text_one_prompt_per_line_skipping_blanks_and_comments(tmp_path: Path) -> None:
    path = write(tmp_path, "prompts.txt", "# my batch\n\na red fox\n   \n  a paper boat  \r\n")
    specs = list(JobFile(path))
    assert [s.request.prompt for s in specs] == ["a red fox", "a paper boat"]
    assert [s.request.mode for s in specs] == ["normal", "normal"]
    assert specs[0].key == request_key(GenerationRequest(prompt="a red fox"))


def test_repeated_prompts_get_distinct_stable_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "prompts.txt", "a cat\na dog\na cat\n")
    keys = [s.key for s in JobFile(path)]
    cat = request_key(GenerationRequest(prompt="a cat"))
    assert keys[0] == cat and keys[2] == f"{cat}-1"
    assert len(set(keys)) == 3
    assert keys == [s.key for s in JobFile(path)]  # the same file maps to the same jobs


def test_defaults_apply_only_where_the_line_is_silent(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.jsonl",
        '{"prompt": "one"}\n{"prompt": "two", "mode": "fun", "ratio": "2:3"}\n',
    )
    specs = list(JobFile(path, mode="spicy", ratio="3:2"))
    assert [(s.request.mode, s.request.ratio) for s in specs] == [
        ("spicy", "3:2"),
        ("fun", "2:3"),
    ]


def test_jsonl_all_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.jsonl",
        '{"id": "intro", "prompt": "a", "images": ["https://img.test/a.png"]}\n'
        "\n"
        '{"key": 7, "prompt": "b", "images": "https://img.test/b.png"}\n'
        '{"id": "x", "key": "x", "prompt": "c", "mode": null}\n',
    )
    specs = list(JobFile(path))
    assert [s.key for s in specs] == ["intro", "7", "x"]
    assert specs[0].request.images == ("https://img.test/a.png",)
    assert specs[1].request.images == ("https://img.test/b.png",)
    assert specs[2].request.mode == "normal"


def test_csv_with_header(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.csv",
        "ID,Prompt,ratio,images\n"
        'a,"a quoted, comma prompt",2:3,\n'
        "\n"
        'b,"a prompt on\ntwo lines",,https://img.test/1.png | https://img.test/2.png\n'
        'c,plain,,"[""https://img.test/3.png""]"\n',
    )
    specs = list(JobFile(path))
    assert [s.key for s in specs] == ["a", "b", "c"]
    assert specs[0].request.prompt == "a quoted, comma prompt"
    assert specs[0].request.ratio == "2:3"
    assert specs[1].request.ratio == "1:1"
    assert specs[1].request.images == ("https://img.test/1.png", "https://img.test/2.png")
    assert specs[2].request.images == ("https://img.test/3.png",)


def test_windows_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "prompt,id\r\none,a\r\n\r\ntwo,b\r\n")
    assert [(s.key, s.request.prompt) for s in JobFile(path)] == [("a", "one"), ("b", "two")]


def test_check_counts_jobs_and_collects_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "prompt,id\none,a\ntwo,b\n")
    summary = JobFile(path).check()
    assert (summary.jobs, summary.keys, summary.format) == (2, frozenset({"a", "b"}), "csv")


def test_format_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.data", '{"prompt": "x", "id": "j"}\n')
    assert [s.key for s in JobFile(path, format="jsonl")] == ["j"]
    with pytest.raises(ConfigurationError, match="format must be"):
        JobFile(path, format="yaml")  # type: ignore[arg-type]


# -- errors: file and line, and nothing yielded past them ------------------------------------


def error_of(path: Path, **options: object) -> InputError:
    with pytest.raises(InputError) as caught:
        JobFile(path, **options).check()  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, GrokImagineError) and isinstance(error, ValueError)
    assert error.path == path
    return error


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "x",}\n', 2, "bad JSON"),
        ("list.jsonl", '["a prompt"]\n', 1, "expected a JSON object, got list"),
        ("noprompt.jsonl", '{"prompt": "ok"}\n\n{"mode": "fun"}\n', 3, "missing prompt"),
        ("emptyprompt.jsonl", '{"prompt": "  "}\n', 1, "missing prompt"),
        ("nonstr.jsonl", '{"prompt": 3}\n', 1, "prompt: Input should be a valid string"),
        ("field.jsonl", '{"prompt": "a", "seed": 3}\n', 1, "unknown field 'seed'"),
        ("mode.jsonl", '{"prompt": "a", "mode": "silly"}\n', 1, "unknown mode 'silly'"),
        ("images.jsonl", '{"prompt": "a", "images": [1]}\n', 1, "images.0: Input should"),
        ("url.jsonl", '{"prompt": "a", "images": ["ftp://x/y"]}\n', 1, "http"),
        ("idkey.jsonl", '{"prompt": "a", "id": "x", "key": "y"}\n', 1, "disagree"),
        ("idtype.jsonl", '{"prompt": "a", "id": [1]}\n', 1, "id must be"),
        ("idname.jsonl", '{"prompt": "a", "id": "../.."}\n', 1, "no letter or digit"),
        ("column.csv", "prompt,colour\nred,blue\n", 1, "unknown column 'colour'"),
        ("twice.csv", "prompt,prompt\na,b\n", 1, "appears twice"),
        ("noprompt.csv", "id,mode\na,fun\n", 1, "no 'prompt' column"),
        ("wide.csv", "prompt,id\na,1\nb,2,3\n", 3, "3 values but the header names 2"),
        ("cell.csv", "id,prompt\n1,\n", 2, "missing prompt"),
        ("jsonimages.csv", 'prompt,images\na,"[1, 2]"\n', 2, "JSON list of URL strings"),
        ("ratio.txt", "fine\n\n# comment\nspicy one\n", None, None),
    ],
)
def test_errors_name_file_and_line(
    tmp_path: Path, name: str, text: str, line: int | None, problem: str | None
) -> None:
    path = write(tmp_path, name, text)
    if problem is None:  # the control case: this file is fine
        assert JobFile(path).check().jobs == 2
        return
    error = error_of(path)
    assert error.line == line
    assert problem in error.problem
    assert str(error).startswith(f"{path}:{line}: ")


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path, "jobs.jsonl", '{"id": "a", "prompt": "x"}\n\n{"id": "a", "prompt": "y"}\n'
    )
    error = error_of(path)
    assert error.line == 3
    assert "duplicate id 'a'" in error.problem and "line 1" in error.problem


def test_ids_that_would_share_a_file_name_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "id,prompt\nclip/1,x\nCLIP_1,y\n")
    error = error_of(path)
    assert error.line == 3
    assert "same file name" in error.problem and "line 2" in error.problem
    # x with two videos writes x_1.mp4 and x_2.mp4: an id x_2 would overwrite one, either way.
    for rows in ("x,a\nx_2,b\n", "x_2,b\nx,a\n"):
        error = error_of(write(tmp_path, "numbered.csv", f"id,prompt\n{rows}"))
        assert error.line == 3 and "same file name" in error.problem
    assert JobFile(write(tmp_path, "fine.csv", "id,prompt\nx_a,1\nx,2\nx2,3\n")).check().jobs == 3


def test_a_multiline_csv_cell_reports_the_line_its_row_starts_on(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", 'prompt,mode\n"two\nlines",fun\n"ok",weird\n')
    assert error_of(path).line == 4


def test_default_options_are_validated_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "prompts.txt", "a\n")
    assert "unknown ratio '4:3'" in error_of(path, ratio="4:3").problem
    assert JobFile(path, ratio="16:9", allow_unlisted=True).check().jobs == 1


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "prompts.txt", "# only a comment\n\n"))
    assert error.line is None and "no jobs" in error.problem
    assert "no jobs" in error_of(write(tmp_path, "empty.jsonl", "\n")).problem
    assert "expected a header row" in error_of(write(tmp_path, "empty.csv", "")).problem


def test_unreadable_files(tmp_path: Path) -> None:
    assert "cannot read" in error_of(tmp_path / "missing.txt").problem
    error = error_of(write(tmp_path, "latin1.txt", b"ok\ncaf\xe9\n"))
    assert error.line == 2 and "not UTF-8" in error.problem


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "\ufeffprompt,id\nx,1\n")
    assert [s.key for s in JobFile(path)] == ["1"]


def test_iteration_is_lazy_and_stops_at_the_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\nnot json\n')
    specs = iter(JobFile(path))
    assert next(specs).request.prompt == "a"
    assert next(specs).request.prompt == "b"
    with pytest.raises(InputError, match=r"jobs\.jsonl:3: bad JSON"):
        next(specs)
