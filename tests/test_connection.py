"""Connections: keepalive options, the receiver's flow control, timeouts, and how failures are described."""

from __future__ import annotations

import asyncio
import os
import socket

import fake_server
import pytest

from chat_io import (
    ConnectionFailed,
    FileError,
    ProtocolError,
    describe_error,
    format_address,
    is_retryable,
    open_connection,
)


def test_describe_error_names_dns_failures() -> None:
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == "Name or service not known"
    assert describe_error(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")) == os.strerror(111)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (asyncio.TimeoutError(), True),
        (asyncio.IncompleteReadError(b"", 1), True),
        (ConnectionFailed("gone"), True),
        (FileError("disk full"), False),
        (ProtocolError("odd"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable(error: BaseException, retry: bool) -> None:
    assert is_retryable(error) is retry


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("minechat.dvmn.org", 5000, "minechat.dvmn.org:5000"),
        ("127.0.0.1", 1, "127.0.0.1:1"),
        ("::1", 5000, "[::1]:5000"),
    ],
)
def test_format_address(host: str, port: int, address: str) -> None:
    assert format_address(host, port) == address


async def test_connection_has_keepalive_and_closes(server: fake_server.FakeMinechatServer) -> None:
    async with open_connection("127.0.0.1", server.read_port) as (_, writer):
        sock = writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert writer.is_closing()
