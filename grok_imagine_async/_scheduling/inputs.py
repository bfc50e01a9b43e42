"""Batch input files: prompts as text, JSONL or CSV, read lazily into keyed job specs."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .._download import safe_name
from .._errors import ConfigurationError, InputError, InvalidRequestError
from .._models import GenerationRequest
from .._settings import Limits, prompt_problem
from .jobs import JobSpec, request_key

__all__ = ["InputError", "InputFormat", "InputSummary", "JobFile"]

InputFormat = Literal["text", "jsonl", "csv"]
FIELDS = ("prompt", "mode", "ratio", "images", "id", "key")
_SUFFIXES: dict[str, InputFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_IMAGE_SEPARATORS = re.compile(r"[\s|]+")
_NUMBERED = re.compile(r"(.+)_[0-9]+")


@dataclass(frozen=True, slots=True)
class InputSummary:
    """What a full pass over an input file found (see :meth:`JobFile.check`).

    Attributes:
        stems: The file stem of each job whose stem is not its key (see ``JobFile(name=)``).
    """

    path: Path
    format: InputFormat
    jobs: int
    keys: frozenset[str]
    stems: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def file_stem(self, key: str) -> str:
        """The stem of job ``key``'s video files (a scheduler's ``file_stem=``)."""
        return self.stems.get(key, key)


class JobFile:
    """A batch input file, read lazily into :class:`JobSpec`\\ s; iterable any number of times.

    Formats (see the CLI guide): *text*, one prompt per line (blank lines and ``#`` comments
    skipped); *JSONL* (``.jsonl``, ``.ndjson``), objects with ``prompt`` and optionally
    ``mode``, ``ratio``, ``images``, ``id`` (or ``key``); *CSV*, a header naming those columns.
    A job without an id is keyed by its request, repeats numbered, the same on every run.
    Iterating raises :class:`InputError` at the first bad line: call :meth:`check` first.

    Args:
        format: ``"text"``, ``"jsonl"`` or ``"csv"``; default: from the extension.
        mode: Mode for jobs that do not set one (default ``"normal"``).
        ratio: Ratio for jobs that do not set one (default ``"1:1"``).
        allow_unlisted: Accept modes and ratios the provider does not document.
        name: How videos are named: a template of ``{key}``, ``{index}`` and ``{slug}`` that
            holds ``{key}`` or ``{index}`` (default ``"{key}"``).
        limits: The client's bounds (default ``Limits()``): a prompt they refuse is a bad line.

    Raises:
        ConfigurationError: If ``format`` or ``name`` is not one of those.

    Example:
        >>> jobs = JobFile("prompts.txt", ratio="3:2")  # doctest: +SKIP
        >>> jobs.check().jobs  # doctest: +SKIP
        20
        >>> async with client.generate_many(jobs, journal="run.db") as results:  # doctest: +SKIP
        ...     async for result in results: ...
    """

    def __init__(
        self,
        path: str | Path,
        *,
        format: InputFormat | None = None,
        mode: str | None = None,
        ratio: str | None = None,
        allow_unlisted: bool = False,
        name: str = "{key}",
        limits: Limits | None = None,
    ) -> None:
        self.path = Path(path)
        self._name = _name_template(name)
        if format is not None and format not in _READERS:
            raise ConfigurationError(f"format must be 'text', 'jsonl' or 'csv', got {format!r}")
        self.format: InputFormat = format or _SUFFIXES.get(self.path.suffix.lower(), "text")
        self._mode, self._ratio, self._allow_unlisted = mode, ratio, allow_unlisted
        self._limits = limits or Limits()

    def __repr__(self) -> str:
        return f"JobFile({str(self.path)!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[JobSpec]:
        for item in self._scan():
            if isinstance(item, InputError):
                raise item
            yield item[0]

    def check(self, *, max_problems: int = 1) -> InputSummary:
        """Read the whole file once, validating every line; submit nothing.

        Args:
            max_problems: How many bad lines to gather before raising.

        Raises:
            InputError: The first problem, naming the file and line (or a file with no job);
                its ``problems`` holds the first ``max_problems``, ``problem_count`` them all.
            ConfigurationError: If ``max_problems`` is below 1.
        """
        if max_problems < 1:
            raise ConfigurationError(f"max_problems must be >= 1, got {max_problems}")
        stems: dict[str, str] = {}  # key -> the file stem of its videos
        problems: list[InputError] = []
        count = 0
        for item in self._scan():
            if not isinstance(item, InputError):
                stems[item[0].key or ""] = item[1]
                continue
            count += 1
            if len(problems) < max_problems:
                problems.append(item)
            if max_problems == 1:
                break
        if problems:
            first = problems[0]
            first.problems, first.problem_count = tuple(problems), count
            raise first
        if not stems:
            skipped = " (blank lines and # comments are skipped)" if self.format == "text" else ""
            raise InputError(self.path, None, f"no jobs in the file{skipped}")
        named = {key: stem for key, stem in stems.items() if stem != key}
        return InputSummary(self.path, self.format, len(stems), frozenset(stems), named)

    def _scan(self) -> Iterator[tuple[JobSpec, str] | InputError]:
        """Every job with its file stem, and every bad line."""
        seen: dict[str, int] = {}  # key -> line, to name both lines of a duplicate
        stems: dict[str, _Place] = {}  # file stem -> (key, line)
        numbered: dict[str, _Place] = {}  # "x" -> the first key whose stem is "x_<n>"
        repeats: Counter[str] = Counter()
        for line, fields in self._entries():
            try:
                if isinstance(fields, str):
                    raise ValueError(fields)  # what the reader found wrong
                spec = self._spec(fields, repeats)
                assert spec.key is not None
                first = seen.setdefault(spec.key, line)
                if first != line:
                    raise ValueError(f"duplicate id {spec.key!r} (already used on line {first})")
                slug = _slug(spec.request.prompt)
                stem = self._name.format(key=spec.key, index=len(seen), slug=slug)
                clash = _clash(stems, numbered, stem, spec.key, line)
                if clash is not None:
                    raise ValueError(
                        f"id {spec.key!r} and id {clash[0]!r} (line {clash[1]}) could give their "
                        f"videos the same file name (videos are named {self._name}.mp4, or "
                        f"{self._name}_1.mp4, {self._name}_2.mp4... when a task has several)"
                    )
            except ValueError as exc:
                yield InputError(self.path, line or None, str(exc))
                continue
            yield spec, stem

    def _spec(self, fields: dict[str, Any], repeats: Counter[str]) -> JobSpec:
        """The line's job, or ValueError saying what is wrong with it."""
        prompt = fields.get("prompt")
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            raise ValueError("missing prompt")
        images = fields.get("images")
        if self.format == "csv" and images:  # a cell: a JSON list, or URLs apart
            images = _images(images)
        try:  # the model checks every field's type and value
            request = GenerationRequest(
                prompt=prompt,
                mode=fields.get("mode") or self._mode or "normal",
                ratio=fields.get("ratio") or self._ratio or "1:1",
                images=images or None,
                allow_unlisted=self._allow_unlisted,
            )
        except InvalidRequestError as exc:
            raise ValueError("; ".join(exc.problems) or str(exc)) from None
        too_long = prompt_problem(request.prompt, self._limits)
        if too_long is not None:
            raise ValueError(too_long)
        given = [fields[name] for name in ("id", "key") if fields.get(name) not in (None, "")]
        if not given:
            base = request_key(request)
            repeats[base] += 1
            return JobSpec(request, request_key(request, repeats[base] - 1))
        if len(given) == 2 and str(given[0]) != str(given[1]):
            raise ValueError(f"id {given[0]!r} and key {given[1]!r} disagree")
        if isinstance(given[0], bool) or not isinstance(given[0], (str, int)):
            raise ValueError(f"id must be a string or an integer, got {given[0]!r}")
        key = str(given[0]).strip()
        if not safe_name(key, default=""):
            raise ValueError(f"id {given[0]!r} has no letter or digit to name its videos by")
        return JobSpec(request, key)

    def _entries(self) -> Iterator[_Entry]:
        try:
            handle = self.path.open("rb")  # decoded line by line: a bad byte names its line
        except OSError as exc:
            yield 0, f"cannot read the file: {exc.strerror}"
            return
        with handle:
            lines = _NumberedLines(handle)
            for entry in _READERS[self.format](lines):
                yield from lines.drain()  # bad bytes come before the line read after them
                yield entry
            yield from lines.drain()


_Entry = tuple[int, dict[str, Any] | str]  # a line's fields or what is wrong (line 0: the file)


def _unknown(what: str, names: Iterable[str]) -> str | None:
    unknown = ", ".join(repr(name) for name in names if name not in FIELDS)
    return f"unknown {what} {unknown} (expected {', '.join(FIELDS)})" if unknown else None


def _text(lines: _NumberedLines) -> Iterator[_Entry]:
    for text in lines:
        prompt = text.strip()
        if prompt and not prompt.startswith("#"):
            yield lines.number, {"prompt": prompt}


def _jsonl(lines: _NumberedLines) -> Iterator[_Entry]:
    for text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            yield lines.number, f"bad JSON: {exc}"
            continue
        if not isinstance(value, dict):
            yield lines.number, f"expected a JSON object, got {type(value).__name__}"
        else:
            yield lines.number, _unknown("field", sorted(value)) or value


_UNCLOSED = "a quoted value opened on this line is never closed (an unterminated quote)"


def _csv(lines: _NumberedLines) -> Iterator[_Entry]:
    # strict: a stray or unterminated quote is an error, not a cell swallowing what follows
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row: list[str] | csv.Error | None = next(reader, None)
        except csv.Error as exc:
            row = exc
        line, start = start, lines.number + 1  # a quoted cell may span several lines
        if row is None:
            break
        if isinstance(row, csv.Error):
            unclosed = "end of data" in str(row)  # only met at the end of the file
            yield line, _UNCLOSED if unclosed else f"bad CSV: {row}"
        elif not any(cell.strip() for cell in row):
            continue
        elif header is None:
            header = [cell.strip().lower() for cell in row]
            repeated = sorted(name for name, n in Counter(header).items() if n > 1)
            problem = _unknown("column", header)
            if problem is None and repeated:
                problem = f"column {repeated[0]!r} appears twice"
            elif problem is None and "prompt" not in header:
                problem = "the header has no 'prompt' column"
            if problem is not None:
                yield line, problem  # no line can be read without it
                return
        elif len(row) > len(header):
            yield line, f"{len(row)} values but the header names {len(header)} columns"
        else:
            cells = zip(header, row, strict=False)  # a short row leaves its last cells unset
            yield line, {name: cell for name, cell in cells if cell.strip()}
    if header is None:
        yield 0, "empty CSV file: expected a header row"


_READERS = {"text": _text, "jsonl": _jsonl, "csv": _csv}


_NAME_FIELDS = frozenset({"key", "index", "slug"})
_SLUG_CHARS = 40


def _name_template(template: str) -> str:
    """``template`` checked: known fields, and one that tells every job apart."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigurationError(f"name template {template!r}: {exc}") from None
    unknown = sorted(fields - _NAME_FIELDS)
    if unknown or not fields & {"key", "index"}:
        raise ConfigurationError(
            f"name template {template!r} must use {{key}} or {{index}}, and may use {{slug}}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return template


def _slug(prompt: str) -> str:
    """The prompt's first words in lowercase, joined by ``-`` (at most 40 characters)."""
    slug = ""
    for word in re.findall(r"[^\W_]+", prompt.lower()):
        longer = f"{slug}-{word}" if slug else word
        if len(longer) > _SLUG_CHARS:
            return slug or word[:_SLUG_CHARS]
        slug = longer
    return slug or "video"


def _clash(
    stems: dict[str, _Place], numbered: dict[str, _Place], name: str, key: str, line: int
) -> _Place | None:
    """Note job ``key``'s file ``name``; return the (key, line) whose videos could write the
    same file, if any (names are sanitised and get ``_<n>`` when a task has several: ``X`` and
    ``x``, or ``x`` and ``x_1``, would clash)."""
    stem = safe_name(name).lower()
    number = _NUMBERED.fullmatch(stem)
    clash = stems.get(stem) or numbered.get(stem)
    if clash is None and number is not None:
        clash = stems.get(number.group(1))
    if clash is None:
        stems[stem] = (key, line)
        if number is not None:
            numbered.setdefault(number.group(1), (key, line))
    return clash


_Place = tuple[str, int]  # a key and its line


class _NumberedLines:
    """A binary file's lines decoded and counted; one not UTF-8 reads as blank, its problem
    kept for :meth:`drain`."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle, self._problems, self.number = handle, list[_Entry](), 0

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.number += 1
            try:
                yield raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                self._problems.append((self.number, f"not UTF-8 text ({exc.reason})"))
                yield "\n"

    def drain(self) -> list[_Entry]:
        """The bad lines met since the last call."""
        problems, self._problems = self._problems, []
        return problems


def _images(cell: str) -> list[str]:
    text = cell.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"images: bad JSON list: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("images: expected a JSON list of URL strings")
        return value
    return [url for url in _IMAGE_SEPARATORS.split(text) if url]
