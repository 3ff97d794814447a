"""--check: log in, print the nickname, post nothing."""

from __future__ import annotations

import time
from pathlib import Path

from fake_server import FakeMinechatServer
from helpers import TOKEN, run_sender_process

from chat_io import EXIT_CONNECTION
from send_client import DEFAULT_REPLY_TIMEOUT


async def run_check(server: FakeMinechatServer, cwd: Path, *argv: str) -> tuple[int, str, str]:
    """Run send_client.py against the server, watching its chat; return its exit code, stdout and stderr."""
    return await run_sender_process(server.write_port, cwd, "--read-port", str(server.read_port), *argv, stdin=None)


async def test_check_prints_the_nickname_and_posts_nothing(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    code, out, err = await run_check(server, tmp_path, "--check", "--token", TOKEN)
    assert (code, out) == (0, "Focused Loyd\n")
    await server.wait_until(lambda: server.senders_done == 1)
    assert [bytes(transcript) for transcript in server.send_transcripts] == [f"{TOKEN}\n".encode()]
    assert server.posts == [] and server.registrations == []
    assert TOKEN not in err


async def test_check_reads_the_token_file(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    code, out, _ = await run_check(server, tmp_path, "--check")
    assert (code, out) == (0, "Focused Loyd\n")
    assert server.posts == []


async def test_check_of_an_unknown_token_exits_5(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_check(server, tmp_path, "--check", "--token", "bogus-token")
    assert (code, out) == (5, "")
    assert "does not know the token" in err and "bogus-token" not in err
    await server.wait_until(lambda: server.senders_done == 1)
    assert bytes(server.send_transcripts[0]) == b"bogus-token\n"
    assert server.accounts == {} and server.registrations == []


async def test_check_without_a_token_registers_nothing(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_check(server, tmp_path, "--check", "--nickname", "Eve")
    assert (code, out) == (2, "")
    assert "--check" in err
    assert server.send_transcripts == []


async def test_check_with_a_message_is_refused(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    code, _, err = await run_check(server, tmp_path, "--check", "--token", TOKEN, "--message", "hi")
    assert code == 2 and "--check posts nothing" in err
    assert server.send_transcripts == []


async def test_check_against_a_server_that_never_answers_gives_up_after_the_reply_timeout(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.stall_at = "greeting"  # accepts, and never says a word
    started = time.monotonic()
    code, out, err = await run_check(server, tmp_path, "--check", "--token", TOKEN, "--reply-timeout", "0.3")
    # The 0.3 s asked for, not the default 10 s: a process's start-up on a busy machine fits in the difference.
    assert time.monotonic() - started < DEFAULT_REPLY_TIMEOUT
    assert (code, out) == (EXIT_CONNECTION, "")
    assert "no reply from the server in 0.3 s while we waited for the greeting; " in err
    assert "Traceback" not in err and TOKEN not in err


async def test_check_verbose_hides_the_account_hash_however_the_server_spells_it(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    token = TOKEN.upper()
    server.add_account("Focused Loyd", token)
    server.login_reply_override = f'{{"nickname": "Focused Loyd", "account_hash": "{TOKEN}"}}\n'.encode()
    code, out, err = await run_check(server, tmp_path, "--check", "--token", token, "-v")
    assert (code, out) == (0, "Focused Loyd\n")
    assert "account_hash" in err  # the reply is logged...
    assert TOKEN not in err and token not in err  # ...with the hash hidden, in either spelling
