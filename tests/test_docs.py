"""The documentation holds together: every relative link resolves, every page is in the index,
and every `icckd ...` line the README shows is accepted by that command's parser.

Commands are parsed, never run: click's `make_context` checks the options and arguments of
the subcommand without calling it, so an option that was renamed or never existed fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from icckd_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and ![alt](target); the target ends at a space (a title) or the parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links in `text` that point into this repository."""
    out = []
    for target in LINK.findall(strip_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, or an anchor on the same page
        out.append(target)
    return out


def strip_code(text: str) -> str:
    """The text without fenced blocks and inline code, where brackets are not links."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and not line.startswith("    "):
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def code_lines(text: str) -> list[str]:
    """The lines of code blocks (indented by 4 spaces, or fenced), continuations joined."""
    out: list[str] = []
    fenced, pending = False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            code = line
        elif line.startswith("    "):
            code = line[4:]
        else:
            pending = ""
            continue
        code = pending + code.strip()
        if code.endswith("\\"):
            pending = code[:-1] + " "
            continue
        pending = ""
        out.append(code)
    return out


def icckd_commands(text: str) -> list[list[str]]:
    """Each `icckd ...` command shown in code blocks, as its arguments after `icckd`.

    Commands chained with `&&` count one by one, so `.venv/bin/icckd quickstart` is one.
    A line is split as a shell would (quotes, `# comments`); the command list of the front
    page (a name, then prose) is not a command line and is left out.
    """
    found = []
    for line in code_lines(text):
        if COMMAND_ROW.match(line):
            continue
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if not words or Path(words[0]).name != "icckd":
                continue
            found.append(words[1:])
    return found


COMMAND_ROW = re.compile(r"^icckd ([a-z-]+)\s{2,}\S")  # `icckd NAME   what it does`


def command_table(text: str) -> set[str]:
    """Names in the front page's list of commands (`icckd NAME   prose`)."""
    return {m.group(1) for line in code_lines(text) if (m := COMMAND_ROW.match(line))}


class ParseError(Exception):
    """A command line the CLI's parser refuses, with click's message."""


def subcommands() -> dict:
    """The CLI's commands by name (Typer's click group: its click may be vendored)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def check_parses(args: list[str]) -> None:
    """Parse `icckd ARGS` as the CLI would, without running it; ParseError if refused."""
    assert args, "a bare 'icckd' line"
    group = typer.main.get_command(app)
    name, rest = args[0], args[1:]
    command = subcommands().get(name)
    if command is None:
        raise ParseError(f"No such command '{name}'")
    try:
        with group.make_context("icckd", [name], resilient_parsing=True) as parent:
            with command.make_context(name, list(rest), parent=parent, resilient_parsing=False):
                pass
    except Exception as exc:
        # click's usage errors (BadParameter, NoSuchOption, MissingParameter, ...)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            raise ParseError(exc.format_message()) from None
        raise


def test_pages_exist() -> None:
    assert (ROOT / "docs" / "README.md").is_file()
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_the_index_lists_every_page() -> None:
    index = ROOT / "docs" / "README.md"
    listed = {t.split("#", 1)[0] for t in relative_links(index.read_text(encoding="utf-8"))}
    pages = {p.name for p in PAGES if p.parent.name == "docs" and p != index}
    assert pages - listed == set(), f"docs/README.md does not list {sorted(pages - listed)}"


def test_the_front_page_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


README_COMMANDS = icckd_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_shows_commands() -> None:
    names = {args[0] for args in README_COMMANDS}
    for job in ("quickstart", "train-teacher", "distill", "eval", "export", "experiment"):
        assert job in names
    assert "inspect-softlabels" in names
    # the list of commands names every command the CLI has, and no other
    listed = command_table((ROOT / "README.md").read_text(encoding="utf-8"))
    assert listed == set(subcommands()), sorted(listed ^ set(subcommands()))


@pytest.mark.parametrize("args", README_COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(args: list[str]) -> None:
    check_parses(args)


def test_code_lines_join_continuations_and_drop_comments() -> None:
    text = (
        "Run:\n\n"
        "    icckd train-teacher --arch resnet8 \\\n"
        "        --epochs 2   # short\n"
        "    python3 -m venv .venv && .venv/bin/icckd quickstart\n"
        "\n"
        "```\nicckd eval 'a b/model.safetensors'\n```\n"
    )
    assert icckd_commands(text) == [
        ["train-teacher", "--arch", "resnet8", "--epochs", "2"],
        ["quickstart"],
        ["eval", "a b/model.safetensors"],
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["train-teacher", "--arch", "resnet8", "--frobnicate", "1"], "No such option"),
        (["distill", "--teacher", "t.safetensors", "--kd-wieght", "1"], "No such option"),
        (["eval"], "Missing argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_a_made_up_option_or_command_fails(args: list[str], says: str) -> None:
    with pytest.raises(ParseError, match=says):
        check_parses(args)


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    text = "[a](there.md) [b](here.md#part) [c](https://example.org) [d](#top) `[e](code.md)`"
    assert relative_links(text) == ["there.md", "here.md#part"]


def test_the_throughput_batch_the_docs_give_is_the_one_measured() -> None:
    from icckd_cli.commands.cost import THROUGHPUT_BATCH

    (row,) = [r for r in (ROOT / "docs" / "evaluation.md").read_text().splitlines()
              if r.startswith("| `throughput` |")]  # fmt: skip
    assert f"(default {THROUGHPUT_BATCH}," in row, row
    assert "512, eval's batch" not in row


@pytest.mark.parametrize("page", ["training.md", "distill.md"])
def test_following_a_page_in_order_never_writes_one_run_folder_twice(page: str) -> None:
    """A second run into a finished run's --out exits 2 unless it resumes or overwrites."""
    outs = [
        args[args.index("--out") + 1]
        for args in icckd_commands((ROOT / "docs" / page).read_text())
        if args[0] in ("train-teacher", "distill") and "--out" in args
        and not {"--resume", "--overwrite"} & set(args)
    ]  # fmt: skip
    assert outs, page
    assert len(outs) == len(set(outs)), outs
