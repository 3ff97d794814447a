"""A minechat server that speaks both ports as the public server does, quirks included.

Tests run it in-process on 127.0.0.1 port 0; users run it on its own to try the clients offline:

    python tests/fake_server.py --read-port 5000 --write-port 5050 --bots

Its strings are copied from the protocol record, not imported from the clients, so a client
that drifts from the protocol fails against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import struct
import sys
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field

logger = logging.getLogger("fake_server")

GREETING = b"Hello %username%! Enter your personal hash or leave it empty to create new account.\n"
NICKNAME_PROMPT = b"Enter preferred nickname below:\n"
WELCOME = b"Welcome to chat! Post your message below. End it with an empty line.\n"
ACK = b"Message send. Write more, end message with an empty line.\n"
UNKNOWN_TOKEN = b"null\n"
ADJECTIVES = ("Boring", "Focused", "Brave", "Sleepy", "Clever", "Gentle")
# What the server posts to the chat when an account registers: the new nickname's adjective only.
NOTICE_NICK = "Server"
JOIN_NOTICE = "# к чату присоединился {adjective}"
# The public chat's two bot accounts (no adjective) and a short dialogue of theirs, looped with --bots.
BOT_DIALOGUE = (
    ("Eva", "Привет, Влад! Как дела?"),
    ("Vlad", "Привет, Ева. Пишу асинхронный код."),
    ("Eva", "И как успехи? "),  # the real bots' lines keep their trailing spaces
    ("Vlad", "Сервер отвечает, клиент читает. Красота."),
    ("Eva", "Не забудь про таймауты!"),
    ("Vlad", "Никогда не забываю :)"),
)
BOT_INTERVAL = 2.0

# Stages of the posting dialogue, for stall_at and close_at.
STAGES = ("greeting", "login_reply", "welcome", "nickname_prompt", "ack")
SPLIT_PIECE_BYTES = 3
DEFAULT_WAIT = 5.0
# Linux's ioctl that tells how many sent bytes the peer has not acknowledged yet.
SIOCOUTQ = 0x5411
ACKED_POLL_SECONDS = 0.01
# The real server's line limit is not on record; this one takes posts far longer than 64 KiB.
MAX_LINE_BYTES = 16 * 1024 * 1024
# How long an orderly hang-up waits for the client to close its side before cutting it off.
HANG_UP_WAIT = 2.0


class _HangUp(Exception):
    """Ends one connection's dialogue on the server's side."""


class _Drop(Exception):
    """Ends one connection on purpose, as a failing server or network would."""

    def __init__(self, reset: bool) -> None:
        super().__init__()
        self.reset = reset


@dataclass
class Post:
    """One message as the server took it: the author, the lines before the empty line, and whether it was acked."""

    nickname: str
    lines: list[str] = field(default_factory=list)
    acknowledged: bool = False
    readers: int = 0  # readers connected when the post was taken, who see it in the chat


@dataclass
class ConnectionPlan:
    """How the server treats one posting connection; tests queue these in server.plans."""

    refuse: bool = False  # close right after accepting, before the greeting
    posts: int | None = None  # acknowledge this many posts, then hang up
    take_unacked: bool = False  # ...but first take one more post without acknowledging it
    reset: bool = False  # hang up with a reset instead of an orderly close
    revoke: bool = False  # ...and forget the account's token as it hangs up, as if revoked
    garble: bool = False  # ...but first answer one more post with a line that is no acknowledgement


class FakeMinechatServer:
    """Both minechat ports on one host; inspect its state, or tell it to misbehave."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        read_port: int = 0,
        write_port: int = 0,
        bots: bool = False,
        bot_interval: float = BOT_INTERVAL,
    ) -> None:
        self.host = host
        self.read_port = read_port
        self.write_port = write_port
        self.bots = bots  # Eva and Vlad loop BOT_DIALOGUE, a line every bot_interval seconds
        self.bot_interval = bot_interval
        self.bot_lines = 0  # bot lines posted so far
        self.join_notices = True  # post a join notice to the readers at each registration, as the public server does
        self.accounts: dict[str, str] = {}  # token -> nickname
        self.registrations: list[str] = []  # nicknames as the clients asked for them
        self.unknown_tokens: list[str] = []
        self.posts: list[Post] = []
        self.send_transcripts: list[bytearray] = []  # raw bytes received, one per connection
        self.senders_done = 0  # posting connections whose dialogue has ended
        self.reader_connections = 0
        self.readers: set[asyncio.StreamWriter] = set()
        self.readers_joined = 0  # reading connections that were added to readers, which broadcasts reach
        # Misbehaviour, set by tests.
        self.close_readers_at_once = False
        self.send_then_close: bytes | None = None  # sent to each new reader, then the server hangs up
        self.stall_at: str | None = None
        self.close_at: str | None = None
        self.login_reply_override: bytes | None = None
        # Shapes the registration reply from the new nickname and token (a malformed or cut reply).
        self.registration_reply: Callable[[str, str], bytes] | None = None
        self.stall_after_registration = False  # go silent right after the registration reply
        self.split_writes = False
        self.welcome_override: bytes | None = None
        self.trickle_interval: float | None = None  # send replies one byte at a time, this far apart
        self.idle_timeout: float | None = None  # hang up on a posting connection silent this long
        self.silent_readers = False  # keep every reading connection open and send it nothing, as a hung server
        self.flood_readers = False  # send every reader others' lines without a pause, as a very busy chat
        self.silenced: set[asyncio.StreamWriter] = set()  # readers that get nothing more (go_silent)
        self.silenced_connections_closed = 0  # silenced readers that the client hung up on
        self.withhold_acks = False  # take every post, acknowledge none
        self.drop_after_unacked: int | None = None  # take this many posts unacknowledged, then hang up (once)
        self.echo_posts = True  # show each post to the readers, as the public server does
        # How the chat shows a post, from the author's nickname and the text: lines without their newline
        # (a chat that trims, collapses, cuts or doubles lines, or another author with the same nickname).
        self.shown_as: Callable[[str, str], list[str]] | None = None
        self.ack_delay: float | None = None  # acknowledge each post this late (a slow server)
        self.ack_trickle: float | None = None  # send each acknowledgement one byte at a time, this far apart
        self.ack_gate: asyncio.Event | None = None  # take every post; acknowledge them once the event is set
        self.on_registration: Callable[[], None] | None = None  # runs before the registration reply
        self.plans: deque[ConnectionPlan] = deque()  # one per posting connection, then normal service
        self.refused = 0
        self.idle_drops = 0
        # Broadcast a numbered line the moment a reader connects and the moment a reader's connection closes.
        self.announce_readers = False
        self.announced = 0  # numbered lines broadcast so far: 1, 2, ...
        self.rng = random.Random()
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> FakeMinechatServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on both ports; port 0 picks free ones, stored back on the instance."""
        reading = await asyncio.start_server(self._serve_reader, self.host, self.read_port)
        writing = await asyncio.start_server(self._serve_sender, self.host, self.write_port, limit=MAX_LINE_BYTES)
        self._servers = [reading, writing]
        self.read_port = reading.sockets[0].getsockname()[1]
        self.write_port = writing.sockets[0].getsockname()[1]
        logger.info("reading on %s:%d, posting on %s:%d", self.host, self.read_port, self.host, self.write_port)
        if self.bots:
            self._spawn(self._chatter())

    async def _chatter(self) -> None:
        """Post the bots' dialogue to the readers, a line every bot_interval seconds, forever."""
        while True:
            for nickname, text in BOT_DIALOGUE:
                await asyncio.sleep(self.bot_interval)
                await self.broadcast(f"{nickname}: {text}\n".encode())
                self.bot_lines += 1
                self._touch()

    async def stop(self) -> None:
        """Stop listening, end every dialogue and close every connection."""
        self._stopping.set()
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    def add_account(self, nickname: str, token: str | None = None) -> str:
        """Create an account as if registered earlier; return its token."""
        token = token or str(uuid.uuid1())
        self.accounts[token] = nickname
        return token

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = DEFAULT_WAIT) -> None:
        """Wait until predicate holds after some change of state, or fail after timeout."""

        async def wait() -> None:
            while not predicate():
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def broadcast(self, data: bytes) -> None:
        """Send raw bytes to every connected reader that is not silenced.

        A reader hanging up meanwhile (a reader replacing a quiet connection closes the old one) misses
        them, as with the real server, and the readers after it still get them.
        """
        for writer in list(self.readers):
            if writer not in self.silenced:
                with suppress(ConnectionError):
                    await self._write(writer, data)

    async def announce(self, what: str) -> None:
        """Broadcast the next numbered line, saying what happened."""
        self.announced += 1
        line = f"Server: {self.announced} a reader {what}\n".encode()
        writers = [writer for writer in self.readers if writer not in self.silenced]
        for writer in writers:  # all written before any wait: every reader gets the lines in one order
            writer.write(line)
        for writer in writers:
            with suppress(OSError):
                await writer.drain()

    def go_silent(self) -> None:
        """Send the readers connected now nothing more, yet keep their connections open (a hung server or proxy)."""
        self.silenced.update(self.readers)

    async def drop_readers(self) -> None:
        """Hang up on every reader at once, as a failing network would."""
        for writer in list(self.readers):
            writer.transport.abort()
        self.readers.clear()
        self._touch()

    async def reset_readers(self, wait_acked: bool = True) -> None:
        """Reset every reader (RST, via SO_LINGER 0); first wait until they have all we sent."""
        for writer in list(self.readers):
            if wait_acked:
                await writer.drain()
                await self.wait_acknowledged(writer)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self.readers.clear()
        self._touch()

    @staticmethod
    async def wait_acknowledged(writer: asyncio.StreamWriter, timeout: float = DEFAULT_WAIT) -> None:
        """Wait until the peer's kernel has acknowledged every byte sent (Linux only)."""
        import fcntl  # POSIX only; callers skip elsewhere

        sock = writer.get_extra_info("socket")
        buffer = bytearray(4)

        async def wait() -> None:
            while True:
                fcntl.ioctl(sock.fileno(), SIOCOUTQ, buffer)
                if struct.unpack("i", buffer)[0] == 0 and not writer.transport.get_write_buffer_size():
                    return
                await asyncio.sleep(ACKED_POLL_SECONDS)

        await asyncio.wait_for(wait(), timeout)

    def _track(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _trickle(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
        # Each byte is due at a fixed time from the first: on a busy machine late wake-ups do not add up,
        # and the whole takes len(data) * interval, as the test that set it expects.
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, byte in enumerate(data, start=1):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(max(0.0, started + index * interval - loop.time()))

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.trickle_interval is not None:
            await self._trickle(writer, data, self.trickle_interval)
            return
        if not self.split_writes:
            writer.write(data)
            await writer.drain()
            return
        for start in range(0, len(data), SPLIT_PIECE_BYTES):
            writer.write(data[start : start + SPLIT_PIECE_BYTES])
            await writer.drain()
            await asyncio.sleep(0)

    async def _serve_reader(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self.reader_connections += 1
        try:
            if self.close_readers_at_once:
                return
            if self.send_then_close is not None:
                await self._write(writer, self.send_then_close)
                return
            if self.silent_readers:
                self.silenced.add(writer)
            if self.flood_readers:
                self._spawn(self._flood(writer))
            self.readers.add(writer)
            self.readers_joined += 1
            self._touch()
            if self.announce_readers:
                await self.announce("connected")
            # Readers never write; wait for them to hang up.
            while await reader.read(1024):
                pass
            if writer in self.silenced:
                self.silenced_connections_closed += 1
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.silenced.discard(writer)
            was_reading = writer in self.readers
            self.readers.discard(writer)
            writer.close()
            self._touch()
            if self.announce_readers and was_reading and not self._stopping.is_set():
                self._spawn(self.announce("closed"))

    @staticmethod
    async def _flood(writer: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while not writer.is_closing():
                writer.write(b"Eva: hello\n" * 1000)
                await writer.drain()
                await asyncio.sleep(0)  # drain does not yield while the reader keeps up: let the rest run

    async def _serve_sender(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        transcript = bytearray()
        self.send_transcripts.append(transcript)
        plan = self.plans.popleft() if self.plans else ConnectionPlan()
        try:
            if plan.refuse:
                self.refused += 1
                return
            try:
                await self._dialogue(reader, writer, transcript, plan)
            except _Drop as drop:
                with suppress(asyncio.TimeoutError):
                    await self._hang_up(reader, writer, drop.reset)
        except (_HangUp, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.senders_done += 1
            self._touch()

    async def _hang_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reset: bool) -> None:
        """Drop the connection: a reset at once, or an orderly close after everything written is delivered."""
        if reset:
            sock = writer.get_extra_info("socket")
            # Linger 0: close sends a reset and throws away whatever was not yet delivered.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        # Closing with unread input would send a reset; shut our side and read until the client closes.
        writer.write_eof()
        await asyncio.wait_for(self._discard(reader), HANG_UP_WAIT)

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        while await reader.read(64 * 1024):
            pass

    async def _receive(self, reader: asyncio.StreamReader, transcript: bytearray) -> str:
        try:
            line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
        except asyncio.TimeoutError:
            self.idle_drops += 1
            self._touch()
            raise _Drop(reset=False) from None
        transcript += line
        self._touch()
        if not line:
            raise _HangUp
        return line.decode("utf-8", errors="replace").removesuffix("\n")

    async def _reply(self, writer: asyncio.StreamWriter, stage: str, data: bytes) -> None:
        if self.close_at == stage:
            raise _HangUp
        if self.stall_at == stage:
            await self._stopping.wait()
            raise _HangUp
        if stage == "login_reply" and self.login_reply_override is not None:
            data = self.login_reply_override
        if stage == "welcome" and self.welcome_override is not None:
            data = self.welcome_override
        await self._write(writer, data)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)

    async def _ack_when_open(self, writer: asyncio.StreamWriter, held: list[Post]) -> None:
        """Once the ack gate opens, acknowledge every post held back, at once."""
        assert self.ack_gate is not None
        await self.ack_gate.wait()
        with suppress(OSError):
            await self._write(writer, ACK * len(held))
            for post in held:
                post.acknowledged = True
            held.clear()
            self._touch()

    async def _dialogue(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transcript: bytearray, plan: ConnectionPlan
    ) -> None:
        await self._reply(writer, "greeting", GREETING)
        token = await self._receive(reader, transcript)
        nickname = self.accounts.get(token) if token else None
        known = nickname is not None
        if token and nickname is None:
            # The real server's quirk: it says null, then falls through into registration.
            self.unknown_tokens.append(token)
            await self._reply(writer, "login_reply", UNKNOWN_TOKEN)
        if nickname is None:
            await self._reply(writer, "nickname_prompt", NICKNAME_PROMPT)
            wanted = await self._receive(reader, transcript)
            self.registrations.append(wanted)
            adjective = self.rng.choice(ADJECTIVES)
            nickname = f"{adjective} {wanted}"
            token = self.add_account(nickname)
            logger.info("registered %r", nickname)
            if self.on_registration is not None:
                self.on_registration()
        account = json.dumps({"nickname": nickname, "account_hash": token})
        if self.registration_reply is not None and not known:
            await self._write(writer, self.registration_reply(nickname, token))
        else:
            await self._reply(writer, "login_reply", account.encode() + b"\n")
        if not known and self.join_notices:
            await self.broadcast(f"{NOTICE_NICK}: {JOIN_NOTICE.format(adjective=adjective)}\n".encode())
        if self.stall_after_registration and not known:
            await self._stopping.wait()
            raise _HangUp
        await self._reply(writer, "welcome", WELCOME)
        post = Post(nickname)
        acknowledged = 0
        held: list[Post] = []  # taken while the ack gate is shut
        while True:
            if plan.revoke and plan.posts is not None and acknowledged >= plan.posts:
                self.accounts.pop(token, None)
            if plan.posts is not None and acknowledged >= plan.posts and not (plan.take_unacked or plan.garble):
                raise _Drop(plan.reset)
            line = await self._receive(reader, transcript)
            if line:
                post.lines.append(line)
                continue
            post.readers = len(self.readers)
            self.posts.append(post)
            self._touch()
            for text in post.lines if self.echo_posts else ():
                shown = self.shown_as(nickname, text) if self.shown_as is not None else [f"{nickname}: {text}"]
                for line in shown:
                    await self.broadcast(f"{line}\n".encode())
            if plan.posts is not None and acknowledged >= plan.posts:
                if plan.garble:
                    await self._write(writer, b"Something went wrong.\n")
                raise _Drop(plan.reset)  # the post is taken, but its acknowledgement never comes
            if self.drop_after_unacked is not None:
                held.append(post)
                if len(held) >= self.drop_after_unacked:
                    self.drop_after_unacked = None
                    raise _Drop(plan.reset)
                post = Post(nickname)
                continue
            if self.withhold_acks:
                post = Post(nickname)
                continue
            if self.ack_gate is not None and not self.ack_gate.is_set():
                held.append(post)
                if len(held) == 1:
                    self._spawn(self._ack_when_open(writer, held))
                post = Post(nickname)
                continue
            if self.ack_delay is not None:
                await asyncio.sleep(self.ack_delay)
            if self.ack_trickle is not None:
                await self._trickle(writer, ACK, self.ack_trickle)
            else:
                await self._reply(writer, "ack", ACK)
            post.acknowledged = True
            self._touch()
            acknowledged += 1
            post = Post(nickname)


async def serve(host: str, read_port: int, write_port: int, bots: bool = False) -> None:
    """Run the server until cancelled."""
    async with FakeMinechatServer(host, read_port, write_port, bots=bots):
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """Run the fake server from the command line."""
    parser = argparse.ArgumentParser(description="A local minechat server for trying the clients offline.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--read-port", type=int, default=5000, help="port that streams the chat (default: %(default)s)")
    parser.add_argument("--write-port", type=int, default=5050, help="port that takes posts (default: %(default)s)")
    parser.add_argument(
        "--bots",
        action="store_true",
        help=f"have the bots Eva and Vlad chat, a line every {BOT_INTERVAL:g} s, as on the public chat",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        asyncio.run(serve(args.host, args.read_port, args.write_port, args.bots))
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"fake_server: cannot listen: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


class CuttingProxy:
    """A TCP proxy that cuts each connection (a reset both ways) after a random number of bytes."""

    def __init__(self, target_host: str, target_port: int, max_bytes: int, rng: random.Random) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.max_bytes = max_bytes
        self.rng = rng
        self.port = 0
        self.cuts = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)
        # The proxy stopping cancels this task, at the top of its own connection: nothing to report.
        with suppress(asyncio.CancelledError):
            await self._relay(client_reader, client_writer)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        budget = [self.rng.randint(0, self.max_bytes)]
        try:
            server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pumps = [
            asyncio.ensure_future(self._pump(client_reader, server_writer, budget)),
            asyncio.ensure_future(self._pump(server_reader, client_writer, budget)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if budget[0] <= 0:
                self.cuts += 1
            for writer in (client_writer, server_writer):
                _reset(writer)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, budget: list[int]) -> None:
        """Copy bytes one way until the shared budget is spent or the reader ends."""
        with suppress(OSError):
            while budget[0] > 0:
                data = await reader.read(min(64 * 1024, budget[0]))
                if not data:
                    return
                budget[0] -= len(data)
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a reset, dropping whatever is unsent."""
    sock = writer.get_extra_info("socket")
    with suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
