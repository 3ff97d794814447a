"""The reader's connection: every received chunk handed on as it comes, and all of them before the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from chat_io import (
    CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    READ_CHUNK_BYTES,
    ChatError,
    connect_socket,
    describe_connect_failure,
    enable_keepalive,
    within,
)


class ChunkSink(Protocol):
    """Where a receiving connection delivers what it gets, as it gets it."""

    def connected(self, connection: ReceivingConnection) -> None:
        """The connection is made; nothing has been received yet."""

    def received(self, data: bytes) -> None:
        """Some bytes arrived; must not raise (call connection.fail to end it)."""


class ReceivingConnection(asyncio.BufferedProtocol):
    """A connection we only read from: every chunk goes to the sink in order, and the end comes after all of them.

    Unlike StreamReader, which raises a reset before handing over what it has buffered, this
    delivers every byte that arrived before the connection ended, however it ended. It reads
    into one buffer of its own, READ_CHUNK_BYTES at a time, which bounds what each chunk costs.
    """

    def __init__(self, sink: ChunkSink) -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = memoryview(bytearray(READ_CHUNK_BYTES))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sink.connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._sink.received(bytes(self._buffer[:nbytes]))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(exc)

    def _settle(self, error: BaseException | None) -> None:
        if self._ended.done():
            return
        if error is None:
            self._ended.set_result(None)
        else:
            self._ended.set_exception(error)

    def pause(self, paused: bool) -> None:
        """Stop or resume reading from the socket, so what we cannot store yet waits in the kernel."""
        if self._transport is None or self._transport.is_closing():
            return
        if paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def fail(self, error: BaseException) -> None:
        """End the connection with error, which wait_ended then raises."""
        self._settle(error)
        if self._transport is not None:
            self._transport.close()

    async def wait_ended(self) -> None:
        """Return when the server closed the connection; raise what else ended it."""
        await asyncio.shield(self._ended)

    async def close(self) -> None:
        """Close the connection and wait briefly for it to go; abort it if it does not."""
        if self._transport is None:
            return
        self._transport.close()
        try:
            await within(CLOSE_TIMEOUT, asyncio.shield(self._ended))
        except (OSError, asyncio.TimeoutError, ChatError):
            self._transport.abort()
        finally:
            if self._ended.done() and not self._ended.cancelled():
                self._ended.exception()  # retrieved, so asyncio does not log it


async def _connect_receiver(host: str, port: int, sink: ChunkSink) -> tuple[asyncio.BaseTransport, ReceivingConnection]:
    sock = await connect_socket(host, port)
    try:
        return await asyncio.get_running_loop().create_connection(lambda: ReceivingConnection(sink), sock=sock)
    except BaseException:
        sock.close()
        raise


@asynccontextmanager
async def open_receiver(
    host: str, port: int, sink: ChunkSink, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> AsyncIterator[ReceivingConnection]:
    """Connect within timeout for reading only; yield the connection, and always close it."""
    try:
        transport, connection = await within(timeout, _connect_receiver(host, port, sink))
    except (OSError, asyncio.TimeoutError) as error:
        raise describe_connect_failure(host, port, timeout, error) from error
    try:
        enable_keepalive(transport.get_extra_info("socket"))
        yield connection
    finally:
        await connection.close()
