"""--check: log in, print the nickname, post nothing; exit 0, or 5 for an unknown token."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from send_support import TOKEN, run_client

from chat_io import EXIT_OK, EXIT_UNKNOWN_TOKEN, EXIT_USAGE


async def test_check_prints_the_nickname_and_posts_nothing(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    code, out, err = await run_client(server, tmp_path, "--check")
    assert code == EXIT_OK, err
    assert out == "Focused Loyd\n"
    await server.wait_until(lambda: server.senders_done == 1)
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\n".encode()  # the login, and nothing after it
    assert server.posts == []
    assert TOKEN not in out + err


async def test_check_ignores_a_message_set_in_dotenv(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    (tmp_path / ".env").write_text(f"TOKEN={TOKEN}\nMESSAGE=posted by every bare run\n")
    code, out, err = await run_client(server, tmp_path, "--check")
    assert (code, out) == (EXIT_OK, "Focused Loyd\n"), err
    assert server.posts == []


async def test_check_with_an_unknown_token_is_exit_5(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_client(server, tmp_path, "--check", "--token", "bogus-token")
    assert code == EXIT_UNKNOWN_TOKEN
    assert out == ""
    assert "the server does not know the token from --token or TOKEN" in err
    await server.wait_until(lambda: server.senders_done == 1)
    assert bytes(server.send_transcripts[0]) == b"bogus-token\n"
    assert server.registrations == [] and server.accounts == {}


async def test_check_escapes_the_nickname(server: FakeMinechatServer, tmp_path: Path) -> None:
    token = server.add_account("Evil\x1b[2J\u202eLoyd")
    code, out, err = await run_client(server, tmp_path, "--check", "--token", token)
    assert (code, out) == (EXIT_OK, "Evil\\x1b[2J\\u202eLoyd\n"), err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--check"], "--check logs in with a token, but no token was found"),
        (["--check", "--token", TOKEN, "--message", "hi"], "--check posts nothing; leave out --message"),
        (["--check", "--nickname", "Eve"], "--check logs in with a token, but no token was found"),
    ],
)
async def test_check_usage_errors_send_nothing(
    server: FakeMinechatServer, tmp_path: Path, argv: list[str], complaint: str
) -> None:
    code, _, err = await run_client(server, tmp_path, *argv)
    assert code == EXIT_USAGE
    assert complaint in err
    assert len(err.splitlines()) == 1
    assert server.send_transcripts == []
