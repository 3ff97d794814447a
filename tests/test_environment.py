"""Environment names: MINECHAT_ in the process environment only; .env takes the original names and the prefixed ones."""

import signal
import subprocess
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import client_env, client_process, stop_with_signal, wait_until_joined

import read_client
import send_client

# The variables the original program's README gave for .env; every option's is read the same way.
SEED_NAMES = {"HOST": "example.org", "TOKEN": "seed-token", "READ_PORT": "5001", "SEND_PORT": "5051"}


def write_dotenv(folder: Path, text: str) -> None:
    (folder / ".env").write_text(text, encoding="utf-8")


def test_bare_names_in_the_environment_are_not_read(tmp_path: Path) -> None:
    environ = {"HOST": "somewhere.invalid", "READ_PORT": "1", "FORMAT": "jsonl", "LOG_PATH": "other.txt"}
    environ |= {"VERBOSE": "true", "BACKLOG": "0", "TIME_FORMAT": "%H", "IDLE_TIMEOUT": "0", "CONNECT_TIMEOUT": "1"}
    assert read_client.parse_settings([], environ, tmp_path) == read_client.parse_settings([], {}, tmp_path)
    environ = {"TOKEN": "from-elsewhere", "NICKNAME": "Mallory", "MESSAGE": "hi", "SEND_PORT": "1"}
    environ |= {"TOKEN_PATH": "elsewhere.txt", "REPLY_TIMEOUT": "1"}
    argv = ["--token", "t"]
    assert send_client.parse_settings(argv, environ, tmp_path) == send_client.parse_settings(argv, {}, tmp_path)


def test_prefixed_names_in_the_environment_are_read(tmp_path: Path) -> None:
    environ = {"MINECHAT_HOST": "127.0.0.1", "MINECHAT_READ_PORT": "5001", "MINECHAT_FORMAT": "jsonl"}
    settings = read_client.parse_settings([], environ, tmp_path)
    assert (settings.host, settings.port, settings.history_format) == ("127.0.0.1", 5001, "jsonl")
    environ = {"MINECHAT_TOKEN": "t", "MINECHAT_SEND_PORT": "5051", "MINECHAT_MESSAGE": "hi"}
    settings = send_client.parse_settings([], environ, tmp_path)
    assert (settings.token, settings.port, settings.messages) == ("t", 5051, ("hi",))


@pytest.mark.parametrize("prefix", ["", "MINECHAT_"])
def test_dotenv_takes_the_seed_names_and_the_prefixed_ones(tmp_path: Path, prefix: str) -> None:
    write_dotenv(tmp_path, "".join(f"{prefix}{name}={value}\n" for name, value in SEED_NAMES.items()))
    reader = read_client.parse_settings([], {}, tmp_path)
    assert (reader.host, reader.port) == ("example.org", 5001)
    sender = send_client.parse_settings([], {}, tmp_path)
    assert (sender.host, sender.port, sender.read_port, sender.token) == ("example.org", 5051, 5001, "seed-token")


def test_in_dotenv_the_prefixed_name_wins_and_the_environment_wins_over_both(tmp_path: Path) -> None:
    write_dotenv(tmp_path, "MINECHAT_BACKLOG=3\nBACKLOG=4\nMINECHAT_READ_PORT=5002\n")
    assert read_client.parse_settings([], {}, tmp_path).backlog == 3
    settings = read_client.parse_settings([], {"MINECHAT_BACKLOG": "5", "READ_PORT": "1"}, tmp_path)
    assert (settings.backlog, settings.port) == (5, 5002)


@pytest.mark.parametrize(
    ("environ", "dotenv", "message"),
    [
        ({"MINECHAT_READ_PORT": "0"}, "", "MINECHAT_READ_PORT=0 (from the environment): 0 is outside 1..65535"),
        ({}, "READ_PORT=0\n", "READ_PORT=0 (from {cwd}/.env): 0 is outside 1..65535"),
        ({}, "MINECHAT_READ_PORT=0\n", "MINECHAT_READ_PORT=0 (from {cwd}/.env): 0 is outside 1..65535"),
    ],
)
def test_a_bad_value_names_its_variable_as_written_and_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], dotenv: str, message: str
) -> None:
    write_dotenv(tmp_path, dotenv)
    with pytest.raises(SystemExit) as stopped:
        read_client.parse_settings([], environ, tmp_path)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message.format(cwd=tmp_path))


@pytest.mark.parametrize("build", [read_client.build_parser, send_client.build_parser])
def test_help_names_the_prefixed_variables(build: object) -> None:
    text = " ".join(build().format_help().split())  # type: ignore[operator]
    assert "[env var: MINECHAT_HOST]" in text
    assert "[env var: HOST]" not in text
    assert "MINECHAT_" in text.split("[env var:")[-1].split("]", 1)[1]  # the epilog says how .env differs


async def reader_connects(server: FakeMinechatServer, cwd: Path, env: dict[str, str]) -> None:
    """Start the reader with no --host or --port, and wait until the fake server has it connected."""
    joined = server.readers_joined
    async with client_process(
        "read_client.py", cwd=cwd, env=client_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        await wait_until_joined(server, process, joined + 1)
        await stop_with_signal(process, signal.SIGTERM)


@pytest.mark.slow
async def test_an_exported_host_does_not_redirect_the_reader(server: FakeMinechatServer, tmp_path: Path) -> None:
    write_dotenv(tmp_path, f"HOST=127.0.0.1\nREAD_PORT={server.read_port}\n")
    await reader_connects(server, tmp_path, {"HOST": "somewhere.invalid", "READ_PORT": "1"})


@pytest.mark.slow
async def test_a_prefixed_host_in_the_environment_is_used(server: FakeMinechatServer, tmp_path: Path) -> None:
    await reader_connects(server, tmp_path, {"MINECHAT_HOST": "127.0.0.1", "MINECHAT_READ_PORT": str(server.read_port)})
