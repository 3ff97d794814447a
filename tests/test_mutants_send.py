"""send_client behaviours that mutation testing found unchecked: each test here kills mutants the rest let live."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_server import ACK, GREETING, NICKNAME_PROMPT, WELCOME, ConnectionPlan, FakeMinechatServer
from helpers import (
    TOKEN,
    WAIT,
    FailingStdin,
    RecordingDelays,
    StdinBytes,
    StdinPipe,
    TerminalStdin,
    error_lines,
    run_send_main,
    settings_for,
    texts_of,
    usage_error,
    welcomed_dialogue,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import send_client
from _minechat.dialogue import OUTBOX_POSTS
from chat_io import (
    EXIT_CONNECTION,
    EXIT_FILE,
    EXIT_PROTOCOL,
    EXIT_USAGE,
    ConnectionFailed,
    FileError,
    ProtocolError,
    ReplyTimeout,
    UnknownTokenError,
)

# --- the CLI, in-process ---------------------------------------------------------------


async def test_a_reply_quoting_the_token_shows_a_placeholder(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.login_reply_override = f"no account has the hash {account}\n".encode()
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "hi"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == EXIT_PROTOCOL
    err = capsys.readouterr().err
    assert account not in err
    [line] = error_lines(err)
    assert line.endswith(' ERROR expected account details from the server, got "no account has the hash <token>"')


async def test_a_reset_while_reading_a_reply_is_exit_3_with_one_line(
    resetting_server: tuple[int, asyncio.Event],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, took_token = resetting_server
    argv = ["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--message", "hi"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == EXIT_CONNECTION
    assert took_token.is_set()
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(" ERROR the connection broke while we waited for the login reply: Connection reset by peer")


async def test_cli_unusable_token_path_is_exit_6_before_connecting(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token_path", "missing/token.txt"]
    assert await run_send_main([*argv, "--nickname", "Eve"], tmp_path, monkeypatch) == EXIT_FILE
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f" ERROR cannot save a token in {tmp_path / 'missing'}: No such file or directory; choose another --token_path"
    )
    assert server.send_transcripts == []


async def test_cli_posts_and_reports(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account]
    assert await run_send_main([*argv, "--message", "one", "--message", "two"], tmp_path, monkeypatch) == 0
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]
    lines = error_lines(capsys.readouterr().err)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO logged in as Focused Loyd",
        "INFO posted 2 messages as Focused Loyd",
    ]


# --- an unusable token path is found before anything is registered ------------------------


async def test_unusable_token_path_is_found_before_connecting(server: FakeMinechatServer, tmp_path: Path) -> None:
    settings = settings_for(
        server, tmp_path, "--token_path", str(tmp_path / "missing" / "token.txt"), "--nickname", "Eve"
    )
    with pytest.raises(FileError, match=r"^cannot save a token in .*; choose another --token_path$"):
        await send_client.send(settings, None, RecordingDelays())
    assert server.send_transcripts == [] and server.registrations == []


# --- backoff -------------------------------------------------------------------------------


async def test_backoff_delay_is_really_waited(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.extend(ConnectionPlan(refuse=True) for _ in range(2))
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send_client.send(settings, StdinBytes(b"one\n"), lambda: itertools.repeat(0.2))
    assert loop.time() - started >= 0.4
    assert texts_of(server) == ["one"] and server.refused == 2


async def test_backoff_starts_over_only_after_an_acknowledgement(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # Each of the first two connections acknowledges one post; the next two acknowledge none.
    server.plans.extend(
        [ConnectionPlan(posts=1), ConnectionPlan(posts=1), ConnectionPlan(posts=0), ConnectionPlan(posts=0)]
    )
    delays = RecordingDelays()
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_client.send(settings_for(server, tmp_path, "--token", account, *messages), None, delays)
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    assert delays.resets == 3
    assert delays.taken == [0.002, 0.002, 0.004, 0.008]


# --- the post window ---------------------------------------------------------------------


async def test_post_window_holds_1024_posts_then_reopens(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    server.ack_gate = asyncio.Event()
    lines = [f"post {number}" for number in range(OUTBOX_POSTS + 500)]
    await stdin_pipe.write("".join(f"{line}\n" for line in lines).encode())
    stdin_pipe.end()
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    sender = send_client.make_sender(settings, stdin_pipe.reader, RecordingDelays())
    task = asyncio.ensure_future(sender.run())
    try:
        await server.wait_until(lambda: len(server.posts) >= OUTBOX_POSTS, timeout=WAIT)
        # Every line is read at once; the window takes 1,024 of them and stdin waits for acknowledgements.
        assert sender.outbox.added == OUTBOX_POSTS
        assert len(server.posts) == OUTBOX_POSTS
        assert not any(post.acknowledged for post in server.posts)
        server.ack_gate.set()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert texts_of(server, acknowledged_only=True) == lines
    assert len(server.send_transcripts) == 1
    assert (sender.outbox.added, sender.outbox.acknowledged, sender.outbox.resent) == (len(lines), len(lines), 0)


async def test_a_server_that_never_acknowledges_gets_the_window_and_a_timeout(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.withhold_acks = True
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-", "--reply-timeout", "0.3")
    stdin = StdinBytes(b"".join(b"post %d\n" % number for number in range(5)))
    sender = send_client.make_sender(settings, stdin, RecordingDelays())  # type: ignore[arg-type]
    sender.outbox = _minechat.dialogue.Outbox(max_posts=3)
    task = asyncio.ensure_future(sender.run())
    try:
        await server.wait_until(lambda: len(server.send_transcripts) >= 2, timeout=WAIT)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The first connection took the three posts of the window, none more, and was given up on.
    assert [post.lines for post in server.posts[:3]] == [["post 0"], ["post 1"], ["post 2"]]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\npost 0\n\npost 1\n\npost 2\n\n".encode()
    assert sender.outbox.added == 3


# --- the end of stdin -------------------------------------------------------------------


async def test_stdin_closing_right_after_the_last_acknowledgement_ends_the_run(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.run(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"one\n")
        await server.wait_until(lambda: texts_of(server, acknowledged_only=True) == ["one"])
        stdin_pipe.end()
        assert await asyncio.wait_for(task, WAIT) == 0
    finally:
        task.cancel()
    assert len(server.send_transcripts) == 1
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\none\n\n".encode()


async def test_last_stdin_line_without_newline_alone(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await send_client.send(settings, StdinBytes(b"only"), RecordingDelays())  # type: ignore[arg-type]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\nonly\n\n".encode()


# --- what the user reads -----------------------------------------------------------------


async def test_a_resumed_run_says_what_it_sends_again_and_what_it_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True), ConnectionPlan(posts=0)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_client.send(settings_for(server, tmp_path, "--token", account, *messages), None, RecordingDelays())
    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert infos == [
        "logged in as Focused Loyd",  # once: the later logins are at debug level
        "sending 2 messages again that the server had not acknowledged when the connection was lost",
        "sending 2 messages again that the server had not acknowledged when the connection was lost",
        "posted 3 messages as Focused Loyd; 4 messages had to be sent again, so the chat may show a few twice",
    ]


async def test_verbose_dialogue_is_logged_both_ways_with_the_token_hidden(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    await send_client.send(settings_for(server, tmp_path, "--nickname", "Eve", "--message", "hi"), None)
    [(token, nickname)] = server.accounts.items()
    dialogue = [record.getMessage() for record in caplog.records if record.getMessage()[:3] in (">> ", "<< ")]
    account_line = json.dumps({"nickname": nickname, "account_hash": "<token>"}) + "\n"
    assert dialogue == [
        f"<< {GREETING.decode()!r}",
        ">> " + repr("\n"),
        f"<< {NICKNAME_PROMPT.decode()!r}",
        ">> " + repr("Eve\n"),
        f"<< {account_line!r}",
        f"<< {WELCOME.decode()!r}",
        ">> " + repr("hi\n\n"),
        f"<< {ACK.decode()!r}",
    ]
    assert token not in caplog.text
    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert infos == [
        f"registered as {nickname}; the token is saved in {tmp_path / 'token.txt'}",
        f"posted 1 message as {nickname}",
    ]


def test_plural() -> None:
    assert [_minechat.output.plural(count, "message") for count in (0, 1, 2)] == [
        "0 messages",
        "1 message",
        "2 messages",
    ]


def test_report_without_an_account_names_nobody(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    settings = send_client.parse_settings(["--token", TOKEN, "--token_path", str(tmp_path / "t")], {}, tmp_path)
    sender = send_client.make_sender(settings, None)
    sender.report(logging.WARNING, "interrupted: ")
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (logging.WARNING, "interrupted: posted 0 messages")
    ]


# --- the dialogue's replies --------------------------------------------------------------------


def test_outbox_counts_bytes_back_as_posts_are_acknowledged() -> None:
    outbox = _minechat.dialogue.Outbox(max_posts=100, max_bytes=10)
    outbox.add("aaaa")  # six bytes on the wire
    outbox.add("bbbb")
    assert outbox.full
    outbox.take_unsent()
    outbox.acknowledge()
    assert not outbox.full and not outbox.roomy
    outbox.acknowledge()
    assert outbox.roomy and not outbox.full


def test_a_cut_acknowledgement_is_a_lost_connection() -> None:
    dialogue = welcomed_dialogue(["one"])
    dialogue.receive_data(ACK[:10])
    assert dialogue.next_event() is None
    dialogue.receive_data(b"")
    with pytest.raises(
        ConnectionFailed,
        match=r"^the server closed the connection while we waited for the acknowledgement of message 1$",
    ):
        dialogue.next_event()


def test_a_reply_when_none_is_due_is_quoted() -> None:
    dialogue = welcomed_dialogue([])
    dialogue.receive_data(b"surprise\n")
    with pytest.raises(ProtocolError, match=r'^the server sent "surprise" when no reply was due$'):
        dialogue.next_event()


def test_unknown_token_and_null_registration_say_what_to_do() -> None:
    dialogue = _minechat.dialogue.PostingDialogue(
        _minechat.dialogue.Outbox(), TOKEN, token_source="the token file t.txt"
    )
    dialogue.receive_data(GREETING + b"null\n")
    dialogue.next_event()
    with pytest.raises(UnknownTokenError) as caught:
        dialogue.next_event()
    assert str(caught.value) == (
        "the server does not know the token from the token file t.txt; correct it, or remove it "
        "and give --nickname to register a new account"
    )
    dialogue = _minechat.dialogue.PostingDialogue(_minechat.dialogue.Outbox(), None, "Eve")
    dialogue.receive_data(GREETING + NICKNAME_PROMPT + b"null\n")
    dialogue.next_event()
    dialogue.next_event()
    with pytest.raises(ProtocolError, match=r"^the server answered null to a registration$"):
        dialogue.next_event()


# --- stdin ---------------------------------------------------------------------------------------


async def test_stdin_in_another_encoding_and_bytes_that_are_not_text(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    stdin = StdinBytes("Привет\n".encode("cp1251") + b"\x98 odd\n")
    sender = send_client.make_sender(settings, stdin, RecordingDelays(), encoding="cp1251")  # type: ignore[arg-type]
    await sender.run()
    assert texts_of(server) == ["Привет", "\ufffd odd"]


async def test_a_failing_stdin_ends_the_messages(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await send_client.send(settings, FailingStdin(b"one\ntwo"), RecordingDelays())  # type: ignore[arg-type]
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]


# --- main, in-process ------------------------------------------------------------------------------


async def test_cli_closed_stdin_with_dash_is_a_usage_error(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", TOKEN, "--message", "-"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == EXIT_USAGE
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(" ERROR --message - reads stdin, but stdin is closed")
    assert server.send_transcripts == []


async def test_cli_terminal_stdin_gets_the_hint_and_is_posted(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", TerminalStdin("один\n".encode()))
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "-"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert texts_of(server) == ["один"]
    assert capsys.readouterr().err.startswith(send_client.STDIN_HINT + "\n")


async def test_cli_asks_for_a_nickname_only_at_a_terminal(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--message", "hi"]
    monkeypatch.setattr(sys, "stdin", TerminalStdin(b"Eve\n"))
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert server.registrations == ["Eve"]
    assert capsys.readouterr().err.startswith(send_client.NICKNAME_QUESTION)
    (tmp_path / "token.txt").unlink()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Bob\n")))  # not a terminal
    assert await run_send_main(argv, tmp_path, monkeypatch) == EXIT_USAGE
    assert server.registrations == ["Eve"]


def test_ask_nickname_uses_the_terminal_encoding_and_ends_the_line_on_ctrl_c() -> None:
    class Terminal:
        encoding = "cp1251"
        buffer = io.BytesIO("Ева\n".encode("cp1251"))

    out = io.StringIO()
    assert send_client.ask_nickname(Terminal(), out) == "Ева\n"  # type: ignore[arg-type]

    class Interrupted:
        class buffer:
            @staticmethod
            def readline() -> bytes:
                raise KeyboardInterrupt

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        send_client.ask_nickname(Interrupted(), out)  # type: ignore[arg-type]
    assert out.getvalue() == send_client.NICKNAME_QUESTION + "\n"


async def test_cli_verbose_logs_the_dialogue(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "-v", "--message", "x"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    err = capsys.readouterr().err
    assert " DEBUG >> '<token>\\n'" in err and account not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_a_signal_stops_the_run_and_says_what_was_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.withhold_acks = True
    settings = settings_for(server, tmp_path, "--token", account, "--message", "one")
    task = asyncio.ensure_future(send_client.run(settings, None, RecordingDelays()))
    await server.wait_until(lambda: len(server.posts) == 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, WAIT) == 128 + signal.SIGTERM
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["interrupted: posted 0 messages as Focused Loyd; 1 more not acknowledged, so maybe not posted"]


async def test_run_reads_stdin_in_the_given_encoding(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    stdin = StdinBytes("Ж\n".encode("cp1251"))
    assert await send_client.run(settings, stdin, RecordingDelays(), encoding="cp1251") == 0  # type: ignore[arg-type]
    assert texts_of(server) == ["Ж"]


# --- reconnecting ---------------------------------------------------------------------------------


async def test_retries_say_what_waits(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_client.send(settings_for(server, tmp_path, "--token", account, *messages), None, RecordingDelays())
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "the server closed the connection while we waited for the acknowledgement of message 2; "
        "trying again in 0.0 s (2 messages waiting)"
    ]


async def test_progress_gives_the_sender_its_tries_afresh(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # One connection acknowledges a post, then RESUME_TRIES - 1 acknowledge none: still within the tries.
    server.plans.extend(
        [ConnectionPlan(posts=1), *(ConnectionPlan(posts=0) for _ in range(send_client.RESUME_TRIES - 1))]
    )
    messages = ["--message", "one", "--message", "two"]
    await send_client.send(settings_for(server, tmp_path, "--token", account, *messages), None, RecordingDelays())
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]


async def test_a_reset_while_idle_is_a_close_while_idle(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    server.plans.append(ConnectionPlan(posts=1, reset=True))
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.run(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"one\n")
        await server.wait_until(lambda: server.senders_done == 1)
        await stdin_pipe.write(b"two\n")
        stdin_pipe.end()
        assert await asyncio.wait_for(task, WAIT) == 0
    finally:
        task.cancel()
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]


async def test_a_fatal_error_while_stdin_waits_is_reported_as_itself(
    server: FakeMinechatServer, tmp_path: Path, stdin_pipe: StdinPipe
) -> None:
    settings = settings_for(server, tmp_path, "--token", "unknown", "--message", "-")
    with pytest.raises(UnknownTokenError):
        await asyncio.wait_for(send_client.send(settings, stdin_pipe.reader, RecordingDelays()), WAIT)


async def test_a_failure_reading_the_messages_ends_the_run(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    async def messages() -> AsyncIterator[list[str]]:
        yield ["one"]
        raise RuntimeError("the messages broke")

    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    sender = send_client.Sender(settings, messages(), RecordingDelays())
    with pytest.raises(RuntimeError, match="the messages broke"):
        await asyncio.wait_for(sender.run(), WAIT)


async def test_timeouts_after_the_greeting_give_no_port_hint(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.stall_at = "login_reply"
    settings = settings_for(server, tmp_path, "--token", account, "--reply-timeout", "0.1")
    with pytest.raises(ReplyTimeout) as caught:
        await send_client.send(settings, None, RecordingDelays())
    assert str(caught.value) == (
        "no complete reply from the server in 0.1 s while we waited for the login reply; "
        "try again later or raise --reply-timeout"
    )


def test_a_line_cut_by_the_close_is_quoted_whole() -> None:
    dialogue = welcomed_dialogue([])
    dialogue.receive_data(b"bye")
    dialogue.receive_data(b"")
    with pytest.raises(ProtocolError, match=r'^the server sent "bye" when no reply was due$'):
        dialogue.next_event()


def test_dialogue_needs_a_token_or_a_nickname_and_names_the_token() -> None:
    with pytest.raises(ValueError, match=r"^a token to log in with or a nickname to register is needed$"):
        _minechat.dialogue.PostingDialogue(_minechat.dialogue.Outbox(), None, None)
    dialogue = _minechat.dialogue.PostingDialogue(_minechat.dialogue.Outbox(), TOKEN)
    dialogue.receive_data(GREETING + b"null\n")
    dialogue.next_event()
    with pytest.raises(UnknownTokenError, match=r"^the server does not know the token from the token; "):
        dialogue.next_event()


def test_outbox_counts_every_rewind() -> None:
    outbox = _minechat.dialogue.Outbox()
    outbox.add("one")
    outbox.add("two")
    outbox.take_unsent()
    assert outbox.rewind() == 2
    assert outbox.rewind() == 0  # a connection lost before the welcome sends nothing
    assert outbox.rewound == 2


# --- settings: exact words ------------------------------------------------------------------------------


def test_usage_errors_word_for_word(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(tmp_path, capsys, ["--token", "x", "--message", " "]) == (
        "argument --message: an empty message cannot be posted"
    )
    assert usage_error(tmp_path, capsys, ["--nickname", "\u200b"]) == (
        "argument --nickname: an empty nickname cannot be registered"
    )
    with_token = usage_error(tmp_path, capsys, ["--token", "x", "--nickname", "Eve"])
    assert with_token.endswith("a --token_path that holds no token yet and without --token or TOKEN")
    (tmp_path / "token.txt").write_text("t\n")
    from_file = usage_error(tmp_path, capsys, ["--nickname", "Eve"])
    assert from_file.endswith("a --token_path that holds no token yet")


def test_help_and_spellings(tmp_path: Path) -> None:
    text = " ".join(send_client.build_parser().format_help().split())
    assert "Post to the minechat chat. With no token found, register a new account and save its token." in text
    settings = send_client.parse_settings(["--token", "t", "--reply_timeout", "4", "--token-path", "x"], {}, tmp_path)
    assert (settings.reply_timeout, settings.token_path) == (4.0, tmp_path / "x")


def test_outbox_starts_empty_in_bytes() -> None:
    outbox = _minechat.dialogue.Outbox(max_posts=10, max_bytes=6)
    outbox.add("aaa")  # five bytes on the wire
    assert not outbox.full


async def test_blank_stdin_lines_are_skipped_not_the_rest_of_the_batch(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await send_client.send(settings, StdinBytes(b"one\n\ntwo\n"), RecordingDelays())  # type: ignore[arg-type]
    assert texts_of(server) == ["one", "two"]
    assert "skipping an empty line of stdin" in [record.getMessage() for record in caplog.records]


async def test_a_full_outbox_is_logged(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    sender = send_client.make_sender(settings, StdinBytes(b"a\nb\nc\n"), RecordingDelays())  # type: ignore[arg-type]
    sender.outbox = _minechat.dialogue.Outbox(max_posts=1)
    await sender.run()
    assert texts_of(server) == ["a", "b", "c"]
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("the outbox is full; stdin waits for acknowledgements") == 2


async def test_an_account_hash_the_server_hands_out_is_hidden_too(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    server.login_reply_override = b'{"nickname": "Focused Loyd", "account_hash": "other-hash"}\n'
    await send_client.send(settings_for(server, tmp_path, "--token", account, "--message", "hi"), None)
    assert "other-hash" not in caplog.text
    assert '<< \'{"nickname": "Focused Loyd", "account_hash": "<token>"}\\n\'' in caplog.text


async def test_cli_reads_stdin_in_its_own_encoding(
    server: FakeMinechatServer, tmp_path: Path, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = TerminalStdin("Ж\n".encode("cp1251"))
    stdin.encoding = "cp1251"
    monkeypatch.setattr(sys, "stdin", stdin)
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "-"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert texts_of(server) == ["Ж"]


async def test_cli_closed_stdin_is_fine_without_dash(
    server: FakeMinechatServer, tmp_path: Path, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "hi"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert texts_of(server) == ["hi"]
