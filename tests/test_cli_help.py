"""`costtax --help` of every command fits an 80-column terminal: options of `profile` grouped in
panels by job, each with a short help whose column is at least 30 characters wide, and every
command's help ends with two or three examples that parse."""
from __future__ import annotations

import re
import shlex

import pytest
import typer.main
from typer.testing import CliRunner

from costtax.cli import (
    PANEL_LOAD, PANEL_MEASUREMENT, PANEL_MODEL, PANEL_OUTPUT, PANEL_REWARDS, PANEL_SERVING,
    PANEL_TECHNIQUES, app,
)

pytestmark = pytest.mark.unit

PANELS = [PANEL_MODEL, PANEL_TECHNIQUES, PANEL_REWARDS, PANEL_LOAD, PANEL_SERVING, PANEL_OUTPUT, PANEL_MEASUREMENT]
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)
MIN_DESCRIPTION = 30


def help_at(width: int, *args: str) -> list[str]:
    """The help as a terminal of `width` columns shows it (COLUMNS; typer reads TERMINAL_WIDTH once
    at import, so its module value is set for the call too)."""
    import typer.rich_utils as ru

    saved, ru.MAX_WIDTH = ru.MAX_WIDTH, width
    try:
        run = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(width)}, terminal_width=width)
    finally:
        ru.MAX_WIDTH = saved
    assert run.exit_code == 0, run.output
    lines = run.output.splitlines()
    assert max(len(line) for line in lines) == width  # rendered at that width
    return lines


def description_widths(lines: list[str], command) -> dict[str, int]:
    """Per visible option: the width of its description column, from the rendered line that
    names it (its help's first word starts the column; the panel's right border ends it)."""
    widths = {}
    for p in command.params:
        if getattr(p, "hidden", False) or not getattr(p, "help", None):
            continue
        name, first_word = p.opts[0], p.help.split()[0]
        row = next((line for line in lines if re.search(rf"│ +(\* +)?{re.escape(name)}\b", line)), None)
        assert row is not None, f"{name} not shown whole"
        start = row.index(first_word, row.index(name) + len(name))
        widths[name] = row.rindex("│") - 1 - start
    return widths


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns(command):
    lines = help_at(80, command)
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    widths = description_widths(lines, GROUP.commands[command])
    narrow = {k: v for k, v in widths.items() if v < MIN_DESCRIPTION}
    assert not narrow, f"description column under {MIN_DESCRIPTION} characters: {narrow}"


def test_profile_options_sit_in_their_panels_with_one_short_help():
    cmd = GROUP.commands["profile"]
    visible = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]
    assert {p.rich_help_panel for p in visible} == set(PANELS)
    for p in visible:
        assert p.help and "\n" not in p.help and len(p.help) <= 120, p.name
    lines = help_at(80, "profile")
    titles = [m.group(1) for line in lines if (m := re.match(r"╭─ (.+?) ─", line))]
    assert titles == ["Options", *PANELS]  # "Options" holds --help only


@pytest.mark.parametrize("command", COMMANDS)
def test_help_ends_with_examples_that_parse(command):
    lines = [line.strip() for line in help_at(80, command) if line.strip()]
    examples = lines[lines.index("Examples:") + 1 :]
    assert 2 <= len(examples) <= 3 and all(e.startswith(f"costtax {command}") for e in examples), examples
    for example in examples:
        args = shlex.split(example.split("#")[0].split("|")[0])[2:]
        args = [a.replace("<run_id>", "x") for a in args]
        ctx = GROUP.commands[command].make_context(command, args)  # an unknown option raises
        assert ctx is not None


def test_the_check_sees_a_narrow_column():
    """The same measurement on a 74-column help finds columns under 30 characters."""
    widths = description_widths(help_at(74, "profile"), GROUP.commands["profile"])
    assert min(widths.values()) < MIN_DESCRIPTION
