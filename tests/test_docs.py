"""docs/, the README, .env.example and --help describe the same options and the clients' promises."""

from __future__ import annotations

import fnmatch
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import ROOT

import read_client
import send_client
from _minechat.settings import environment_name
from chat_io import EXIT_LOCKED

PARSERS = [read_client.build_parser, send_client.build_parser]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"


def docs_text() -> str:
    """Return the reference: every page under docs/, one after the other."""
    pages = sorted(DOCS.glob("*.md"))
    assert pages
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def variables(build: object) -> set[str]:
    parser = build()  # type: ignore[operator]
    return {action.env_var for action in parser._actions if getattr(action, "env_var", None)}


@pytest.mark.parametrize("build", PARSERS)
def test_every_variable_is_documented(build: object) -> None:
    docs = docs_text()
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in variables(build):
        assert f"`{environment_name(name)}`" in docs
        assert re.search(rf"^#? ?{name}=", example, re.MULTILINE), name  # .env keeps the original names


def test_the_prefix_is_explained_wherever_variables_are_named() -> None:
    where = {
        "docs/configuration.md": CONFIGURATION,
        "README.md": README,
        ".env.example": ROOT / ".env.example",
        "contrib/minechat-read.service": ROOT / "contrib" / "minechat-read.service",
    }
    for name, path in where.items():
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert "MINECHAT_HOST" in text, name


@pytest.mark.parametrize("build", PARSERS)
def test_every_option_is_in_the_docs(build: object) -> None:
    docs = docs_text()
    parser = build()  # type: ignore[operator]
    for action in parser._actions:
        if action.option_strings and "--help" not in action.option_strings:
            assert any(f"`{option}`" in docs for option in action.option_strings), action.option_strings


def test_env_example_as_is_gives_the_defaults(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    bare = tmp_path / "bare"
    bare.mkdir()
    # Files are looked up in the current directory, so their paths differ by it alone.
    reader, bare_reader = (read_client.parse_settings([], {}, cwd) for cwd in (tmp_path, bare))
    assert reader.log_path.relative_to(tmp_path) == bare_reader.log_path.relative_to(bare)
    assert reader == replace(bare_reader, log_path=reader.log_path)
    argv = ["--nickname", "Eve"]
    sender, bare_sender = (send_client.parse_settings(argv, {}, cwd) for cwd in (tmp_path, bare))
    assert sender.token_path.relative_to(tmp_path) == bare_sender.token_path.relative_to(bare)
    assert sender == replace(bare_sender, token_path=sender.token_path, token_source=sender.token_source)


def docs_table(script: str) -> dict[str, list[str]]:
    """Return the option table in docs/configuration.md for a script: each option's variable, default, meaning."""
    page = CONFIGURATION.read_text(encoding="utf-8")
    section = page.split(f"### {script}\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if len(cells) == 4 and cells[0].startswith("`-"):
            for option in re.findall(r"`(-[^`]+)`", cells[0]):
                rows[option] = cells[1:]
    return rows


def docs_default(default: object) -> str:
    """Return how the option tables write a default."""
    if default is None:
        return "none"
    if default is False:
        return "off"
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


@pytest.mark.parametrize(("script", "build"), [("read_client.py", PARSERS[0]), ("send_client.py", PARSERS[1])])
def test_help_and_docs_table_agree(script: str, build: object) -> None:
    table = docs_table(script)
    parser = build()  # type: ignore[operator]
    for action in parser._actions:
        if "--help" in action.option_strings or "--version" in action.option_strings:
            continue  # neither has a variable or a default
        variable, default, meaning = table[action.option_strings[0]]
        assert variable == (f"`{environment_name(action.env_var)}`" if action.env_var else "none")
        help_text, _, own_default = action.help.partition(" (default: ")
        assert meaning.replace("`", "'") == help_text
        if own_default:  # the help explains a default that depends on what happens
            assert default.endswith(own_default.rstrip(")").split("' ", 1)[-1])
        else:
            assert default == docs_default(action.default)


@pytest.mark.parametrize("build", PARSERS)
def test_help_says_each_thing_once(build: object) -> None:
    text = " ".join(build().format_help().split())  # type: ignore[operator]
    assert "(default: None)" not in text
    assert "(default: False)" not in text
    assert text.count("the command line wins over the environment") == 1
    assert "In general, command-line values override" not in text
    for line in build().format_help().split("\n  -"):  # type: ignore[operator]
        assert line.count("(default:") <= 1, line


def test_files_the_readme_and_docs_make_are_ignored_by_git() -> None:
    text = README.read_text(encoding="utf-8") + docs_text()
    patterns = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    made = set(re.findall(r"--(?:token_path|log_path) (\S+)", text))
    made |= {".env", read_client.DEFAULT_LOG_PATH, send_client.DEFAULT_TOKEN_PATH}
    assert len(made) > 3
    for name in made:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_readme_starts_a_dotenv_from_the_example() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "cp .env.example .env" in readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_docs_and_help_state_the_nickname_choice() -> None:
    docs = " ".join(docs_text().split())
    text = " ".join(send_client.build_parser().format_help().split())
    assert "refused when a token is found" in docs
    assert "refused when a token is found" in text
    assert "`--nickname` when a token is found" in docs


PAGES = [README, *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """Return Markdown without its code blocks and code spans, where nothing is a link or a heading."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """Return the anchors GitHub makes for the headings of a page."""
    made: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", FENCE.sub("", page.read_text(encoding="utf-8")), re.MULTILINE):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = made.get(slug, 0)
        made[slug] = count + 1
        if count:
            made[f"{slug}-{count}"] = 1
    return set(made)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    links = LINK.findall(prose(page.read_text(encoding="utf-8")))
    assert links
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto: and the like
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_relative_to(ROOT), link
        assert target.exists(), link
        if anchor:
            assert target.suffix == ".md", link
            assert anchor in anchors(target), link


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_page_links_back_to_the_readme(page: Path) -> None:
    assert "](../README.md)" in page.read_text(encoding="utf-8").splitlines()[0]


def test_the_readme_links_every_page() -> None:
    links = set(LINK.findall(prose(README.read_text(encoding="utf-8"))))
    for page in PAGES[1:]:
        assert page.relative_to(ROOT).as_posix() in links, page


def test_the_readme_stays_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_the_readme_gives_the_test_command_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    section = readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    block = FENCE.search(section)
    assert block is not None
    assert block.group().splitlines()[-2] == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    runs = [line.strip() for line in ci if "-m pytest" in line and not line.lstrip().startswith("#")]
    # The README's command on the default Python; the others run the same suite without its slow tests.
    assert runs[0] == "python -m pytest"
    assert [run.split(" -m pytest ", 1)[1].startswith('-q -m "not slow"') for run in runs[1:]] == [True]


def test_readme_lists_every_exit_code_of_the_reader() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Exit codes") :]
    table = table[: table.index("\n\n", table.index("| code |"))]
    for code in (EXIT_LOCKED, 128 + signal.SIGHUP):
        assert f"| {code} |" in table, code


def test_readme_says_which_pythons_and_systems_are_tested() -> None:
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "tested on Linux with Python 3.10, 3.11, 3.12 and 3.13" in readme
    assert "written for macOS and Windows too" in readme and "but not tested there" in readme


def test_readme_says_a_long_line_stays_one_line() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "split over several history lines" not in readme


def test_service_page_keeps_a_dated_history_small_with_options_the_reader_takes(tmp_path: Path) -> None:
    page = (DOCS / "service.md").read_text(encoding="utf-8")
    unit = (ROOT / "contrib" / "minechat-read.service").read_text(encoding="utf-8")
    line = next(line for line in page.splitlines() if line.startswith("ExecStart=") and "--compress" in line)
    assert f"# {line}" in unit  # the unit shows the same line
    argv = line.split()[1:]
    settings = read_client.parse_settings([arg.replace("%%", "%") for arg in argv], {}, tmp_path)  # systemd's %%
    assert (settings.compress, settings.keep_days) == (True, 365)
    dotenv = page.split("```\nLOG_PATH=", 1)[1].split("```", 1)[0]
    (tmp_path / ".env").write_text("LOG_PATH=" + dotenv, encoding="utf-8")
    settings = read_client.parse_settings([], {}, tmp_path)
    assert (settings.compress, settings.keep_days) == (True, 365)
    assert "copytruncate" in page  # and why it must not be used
    assert "dateext" in page


def test_the_offline_try_out_shows_every_option_of_the_fake_server_and_the_view() -> None:
    section = README.read_text(encoding="utf-8").split("\n## Trying it offline\n", 1)[1].split("\n## ", 1)[0]
    usage = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    options = set(re.findall(r"--[a-z][a-z-]*", usage)) - {"--help"}
    assert "--bots" in options
    for option in options:
        assert f"`{option}`" in section, option
    commands = "\n".join(block.group() for block in FENCE.finditer(section))
    assert "fake_server.py --read-port 5000 --write-port 5050 --bots" in commands
    assert "--ignore Eva --ignore Vlad --highlight" in commands
