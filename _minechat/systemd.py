"""systemd's notify protocol: ready, status, watchdog and stopping."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from _minechat.shutdown import cancel_and_wait
from chat_io import ENCODING, describe_error, shorten

logger = logging.getLogger(__name__)

NOTIFY_SOCKET_VARIABLE = "NOTIFY_SOCKET"
WATCHDOG_USEC_VARIABLE = "WATCHDOG_USEC"
WATCHDOG_PID_VARIABLE = "WATCHDOG_PID"
MICROSECONDS_PER_SECOND = 1_000_000
# systemd asks for a ping at least every half period; a third leaves room for a busy moment.
WATCHDOG_PINGS_PER_PERIOD = 3
STATUS_LIMIT = 200
# WATCHDOG_USEC=1 must not make us spin a core: no more than this many pings a second.
MIN_PING_INTERVAL = 0.05


def parse_notify_address(value: str | None) -> str | None:
    """Return the AF_UNIX address that NOTIFY_SOCKET names ("@name" is abstract), or None for none we can use."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    logger.debug("NOTIFY_SOCKET %r is neither a path nor an abstract name; not notifying", value)
    return None


def parse_watchdog_period(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """Return the watchdog period in seconds that the service manager asks of this process, or None."""
    try:
        period = int(usec or 0) / MICROSECONDS_PER_SECOND
        # WATCHDOG_PID, when set, says which process the watchdog is meant for: not a child of it.
        meant_for_us = not pid or int(pid) == own_pid
    except ValueError:
        return None
    return period if period > 0 and meant_for_us else None


class ServiceNotifier:
    """Tells a service manager (systemd, Type=notify) that we are ready, how we are, and that we are alive.

    Within its block the socket is open; on leaving, it says STOPPING=1 and closes it. Sending never
    blocks and never raises: a message that cannot go is dropped and logged at debug level.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.address = parse_notify_address(environ.get(NOTIFY_SOCKET_VARIABLE))
        self.watchdog_period = parse_watchdog_period(
            environ.get(WATCHDOG_USEC_VARIABLE), environ.get(WATCHDOG_PID_VARIABLE), os.getpid() if pid is None else pid
        )
        self._socket: socket.socket | None = None
        self._stopping_said = False

    def __enter__(self) -> ServiceNotifier:
        family = getattr(socket, "AF_UNIX", None)  # Windows has none: then there is no systemd either
        if self.address is not None and family is not None:
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
            except OSError as error:
                logger.debug("cannot open a socket to the service manager: %s", describe_error(error))
            else:
                self._socket = sock
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping()
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()

    def notify(self, *assignments: str) -> None:
        """Send NAME=value lines in one datagram, if a service manager listens."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(assignments).encode(ENCODING), self.address)
        except OSError as error:  # gone, or its queue is full: the next message may fare better
            logger.debug("cannot notify the service manager: %s", describe_error(error))

    def ready(self) -> None:
        """Say that start-up is over and we are working."""
        self.notify("READY=1")

    def stopping(self) -> None:
        """Say that we are stopping, once: as soon as stopping begins."""
        if not self._stopping_said:
            self._stopping_said = True
            self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        """Show one line of text as our status (systemctl status)."""
        self.notify(f"STATUS={shorten(text, STATUS_LIMIT)}")  # escaped, so it cannot add another line

    @asynccontextmanager
    async def watchdog(self, healthy: Callable[[], bool] = lambda: True) -> AsyncIterator[None]:
        """Within the block, ping the watchdog often enough while healthy() says we work, if one is asked for."""
        if self._socket is None or self.watchdog_period is None:
            yield
            return
        interval = max(self.watchdog_period / WATCHDOG_PINGS_PER_PERIOD, MIN_PING_INTERVAL)
        pinger = asyncio.ensure_future(self._ping_forever(interval, healthy))
        try:
            yield
        finally:
            failure = await cancel_and_wait(pinger)
            if failure is not None:
                logger.debug("the watchdog pinger failed: %r", failure)

    async def _ping_forever(self, interval: float, healthy: Callable[[], bool]) -> None:
        while True:
            if healthy():  # a stuck process gets no ping, so the service manager restarts it
                self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
