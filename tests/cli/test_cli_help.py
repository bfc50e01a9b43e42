"""``--help`` of every subcommand: every option described with its default, one metavar style."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from grok_imagine_async._cli import build_parser

if TYPE_CHECKING:
    from conftest import RunCli

COMMANDS = ["batch", "generate", "status", "emulator"]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: action.choices[name] for name in COMMANDS}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_described_with_its_default(command: str) -> None:
    parser = subparsers()[command]
    for action in options(parser):
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        if action.nargs != 0 and not action.required:  # what happens without them
            assert "default" in action.help, f"{command} {action.option_strings[0]}"
    assert "%(default)" not in parser.format_help()  # every placeholder was expanded


@pytest.mark.parametrize("command", COMMANDS)
def test_metavars_are_one_upper_case_word(command: str) -> None:
    for action in options(subparsers()[command]):
        if action.nargs != 0:
            assert isinstance(action.metavar, str), f"{command} {action.option_strings[0]}"
            assert re.fullmatch(r"[A-Z][A-Z_]*", action.metavar), action.metavar


def test_an_option_has_the_same_metavar_in_every_subcommand() -> None:
    seen: dict[str, set[str]] = {}
    for parser in subparsers().values():
        for action in options(parser):
            if action.nargs != 0:
                seen.setdefault(action.option_strings[0], set()).add(str(action.metavar))
    assert {option: names for option, names in seen.items() if len(names) > 1} == {}


def test_status_offers_no_option_it_ignores() -> None:
    names = {s for a in options(subparsers()["status"]) for s in a.option_strings}
    assert not names & {"--pacing", "--redis-url", "--emulate"}


@pytest.mark.parametrize("command", COMMANDS)
def test_plan_takes_a_name_in_any_case_or_a_quota_text(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = {"batch": ["p.txt", "--out", "v"], "generate": ["x", "--out", "v"], "status": ["t_1"]}
    argv = [command, *first.get(command, [])]
    parser = build_parser()
    assert parser.parse_args([*argv, "--plan", "Pro"]).plan == "pro"
    assert parser.parse_args([*argv, "--plan", "100/6s"]).plan == "100/6s"
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--plan", "gold"])
    assert "unknown plan 'gold'" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--max-credits", "--resubmit"])
def test_a_negative_count_is_refused_by_the_parser(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    assert (
        getattr(
            parser.parse_args(["batch", "p.txt", "--out", "v", option, "0"]),
            option[2:].replace("-", "_"),
        )
        == 0
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["batch", "p.txt", "--out", "v", option, "-1"])
    assert f"argument {option}: must be at least 0, got -1" in capsys.readouterr().err


def test_no_command_shows_the_commands_and_what_each_does(run_cli: RunCli, tmp_path: Path) -> None:
    """Not only "the following arguments are required: COMMAND", which tells a new user
    nothing: the commands and what each does, as --help shows them."""
    done = run_cli(cwd=tmp_path)
    assert done.returncode == 2  # a usage error, as any other
    assert (done.stdout, done.stderr) == ("", run_cli("--help", cwd=tmp_path).stdout)
    for command in COMMANDS:  # each with its one-line description
        assert re.search(rf"^ +{command} +[a-z]", done.stderr, re.MULTILINE), command


def test_batch_help_lists_every_exit_status() -> None:
    """A script reading the status learns each from --help, 3 (stopped by refusals) included."""
    description = " ".join((subparsers()["batch"].description or "").split())
    for status in ("0 all completed", "1 some did not", "2 bad options", "3 ", "130 "):
        assert status in description, status
    assert "a rejected token" in description


def test_the_command_line_guide_names_every_option_of_the_api_commands() -> None:
    """docs/guides/cli.md is "every grok-imagine command and option": --log-level was missing."""
    guide = (Path(__file__).parents[2] / "docs" / "guides" / "cli.md").read_text()
    missing = [
        f"{command} {action.option_strings[-1]}"
        for command in ("batch", "generate", "status")
        for action in options(subparsers()[command])
        if f"`{action.option_strings[-1]}" not in guide
        and f"`{command} {action.option_strings[-1]}" not in guide
    ]
    assert missing == []
