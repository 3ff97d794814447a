"""No account is ever lost: the token file is created exclusively, and a cut or malformed account reply is kept."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, WAIT
from fake_server import FakeMinechatServer
from send_support import TOKEN, spawn_client

import chat_io
from chat_io import EXIT_FILE, EXIT_OK, FileError

OTHER_TOKEN = "99999999-74ca-11e9-9d4f-0242ac110002"
ROUNDS = 4


def saved_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- two saves at once: one wins, the other is refused -----------------------------------------


def save_both_at_once(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, BaseException | None]:
    """Save TOKEN and OTHER_TOKEN to path from two threads that meet once both have written their first file.

    They meet again before a rename over the final name, should either try one: a save that checks
    the file and then replaces it lets both pass the check first, as two processes at once do.
    """
    written, renaming = threading.Barrier(2, timeout=WAIT), threading.Barrier(2, timeout=WAIT)
    wrote = threading.local()
    real_write, real_replace = chat_io.write_durably, os.replace

    def write_then_meet(descriptor: int, data: bytes) -> None:
        real_write(descriptor, data)
        if not getattr(wrote, "once", False):
            wrote.once = True
            written.wait()  # each has its token on disk; neither has put it in place yet

    def meet_then_replace(source: str, target: str) -> None:
        renaming.wait()
        real_replace(source, target)

    monkeypatch.setattr(chat_io, "write_durably", write_then_meet)
    monkeypatch.setattr(os, "replace", meet_then_replace)
    outcome: dict[str, BaseException | None] = {}

    def save(token: str) -> None:
        try:
            chat_io.save_token(path, token)
            outcome[token] = None
        except BaseException as error:
            outcome[token] = error

    threads = [threading.Thread(target=save, args=(token,)) for token in (TOKEN, OTHER_TOKEN)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert len(outcome) == 2
    return outcome


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "no-hard-links"])
@pytest.mark.parametrize("placeholder", [None, b"", b" \n\n"], ids=["no-file", "empty-file", "blank-file"])
def test_two_saves_at_once_keep_one_token_and_refuse_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool, placeholder: bytes | None
) -> None:
    path = tmp_path / "token.txt"
    if placeholder is not None:
        path.write_bytes(placeholder)
        path.chmod(0o644)
    if not hard_links:  # as on a file system without them: the final name is created with O_EXCL
        monkeypatch.setattr(os, "link", lambda *_: (_ for _ in ()).throw(OSError(errno.EPERM, "no hard links")))
    outcome = save_both_at_once(path, monkeypatch)
    winners = [token for token, error in outcome.items() if error is None]
    losers = [error for error in outcome.values() if error is not None]
    assert len(winners) == 1, f"both saved, one of them over the other: {outcome}"
    [loss] = losers
    assert isinstance(loss, FileError)
    assert "holds another token now" in str(loss)
    assert path.read_text() == winners[0] + "\n"
    if sys.platform != "win32":
        assert saved_mode(path) == 0o600
    assert [item.name for item in tmp_path.iterdir()] == ["token.txt"]  # no temporary file left behind


# --- two registrations at once, end to end ------------------------------------------------------


@POSIX_ONLY
async def test_two_registrations_at_once_lose_no_account(tmp_path: Path) -> None:
    for number in range(ROUNDS):
        folder = tmp_path / f"round-{number}"
        folder.mkdir()
        async with FakeMinechatServer() as server:
            server.registration_barrier = 2  # both account replies go out together, as two registrations at once
            processes = [
                await spawn_client(server, folder, "--nickname", name, stdin=subprocess.DEVNULL)
                for name in ("Eve", "Bob")
            ]
            ends = await asyncio.wait_for(asyncio.gather(*(process.communicate() for process in processes)), WAIT * 4)
            assert len(server.accounts) == 2
        codes = sorted(process.returncode for process in processes)
        assert codes == [EXIT_OK, EXIT_FILE], ends
        saved = (folder / "token.txt").read_text().strip()
        [lost] = [token for token in server.accounts if token != saved]
        [loser_err] = [
            err.decode() for process, (_, err) in zip(processes, ends, strict=True) if process.returncode == EXIT_FILE
        ]
        [winner_err] = [
            err.decode() for process, (_, err) in zip(processes, ends, strict=True) if process.returncode == EXIT_OK
        ]
        assert loser_err.count(lost) == 1, loser_err  # printed once, so the account is not lost
        assert saved not in loser_err
        assert f"{folder.resolve() / 'token.txt'} holds another account's token" in loser_err
        assert "--token_path" in loser_err and "TOKEN in .env" in loser_err
        assert lost not in winner_err and saved not in winner_err
        assert "the token is saved in" in winner_err
