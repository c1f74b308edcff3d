"""uvicorn's h11 protocol with a deadline for each request's line and headers.

uvicorn (0.54) closes an idle keep-alive connection after timeout_keep_alive
seconds, but that timer starts only after a response and any byte received
cancels it: a client that connects and sends nothing, or sends its headers a
byte at a time, held its connection (and a slot of limit_concurrency)
forever; 300 such connections stayed open. Here a connection that is not
serving a request (none started yet, or the previous response sent) is
closed when header_timeout seconds pass without a complete request head.
Bodies have their own deadline (serving/http.py, body_timeout), model calls
theirs (request_timeout).

It also sets TCP_NODELAY on every connection. asyncio does that itself only
for sockets whose `proto` is IPPROTO_TCP; uvicorn's worker processes
(`--workers N`) accept on a listening socket rebuilt from a file descriptor,
whose proto reads 0, so their connections kept Nagle's algorithm and a
keep-alive client waited for the peer's delayed ACK on every response
(p50 48 ms instead of 4 ms with one client).

`recommend serve` passes this class as uvicorn's `http` protocol; the
timeout comes from the serve settings in the environment
(limits.SERVE_CONFIG_ENV), so uvicorn's worker processes get it too.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Optional

from uvicorn.protocols.http.h11_impl import H11Protocol

from serving import limits


class GuardedH11Protocol(H11Protocol):

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.header_timeout = limits.limits_from_env().header_timeout
    self._head_deadline: Optional[asyncio.TimerHandle] = None

  def connection_made(self, transport) -> None:  # type: ignore[override]
    super().connection_made(transport)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
      try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
      except OSError:
        pass
    self._arm_head_deadline()

  def on_response_complete(self) -> None:
    super().on_response_complete()
    self._arm_head_deadline()

  def connection_lost(self, exc) -> None:
    self._cancel_head_deadline()
    super().connection_lost(exc)

  def _cancel_head_deadline(self) -> None:
    if self._head_deadline is not None:
      self._head_deadline.cancel()
      self._head_deadline = None

  def _arm_head_deadline(self) -> None:
    self._cancel_head_deadline()
    if not self.transport.is_closing():
      self._head_deadline = self.loop.call_later(self.header_timeout,
                                                 self._head_deadline_passed)

  def _head_deadline_passed(self) -> None:
    self._head_deadline = None
    if self.transport.is_closing():
      return
    if self.cycle is None or self.cycle.response_complete:
      # No request in progress since the deadline was armed: nothing, or
      # only part of a request head, arrived in header_timeout seconds.
      self.logger.debug("Closing a connection that sent no complete request "
                        "in %g s", self.header_timeout)
      self.transport.close()
