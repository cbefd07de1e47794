"""The HTTP connection: uvicorn's h11 protocol with a deadline for each request's head.

uvicorn closes an idle keep-alive connection, but not a client that sends a request's
headers a byte at a time, or starts them and never finishes (slowloris): every such
connection would stay open for ever. Here each request head must be complete within
``header_timeout`` seconds of the connection opening or of the previous response; otherwise
the connection is closed. Bodies and responses are not timed (a download may take hours).
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0


class TimedH11Protocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport) -> None:
        self._head_timer = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()
            self._check()  # a pipelined request may already be complete

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check(self) -> None:
        if self.conn.their_state is not h11.IDLE:  # the head is in: no deadline for the rest
            self._disarm()

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head took over %s s",
                             self.header_timeout)
            self.transport.close()


def timed_protocol(seconds: float) -> type[TimedH11Protocol]:
    """The protocol class with its deadline (uvicorn makes one instance per connection)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": seconds})
