"""serving/protocol.py: every accepted connection gets TCP_NODELAY."""
import asyncio
import socket

import uvicorn
from uvicorn.server import ServerState

from serving import protocol


class _Transport(asyncio.Transport):
  """The least of a transport connection_made reads, over a real socket."""

  def __init__(self, sock):
    super().__init__()
    self._sock = sock

  def get_extra_info(self, name, default=None):
    if name == "socket":
      return self._sock
    if name in ("sockname", "peername"):
      return self._sock.getsockname() if name == "sockname" else self._sock.getpeername()
    return default

  def is_closing(self):
    return False

  def close(self):
    pass


def test_an_accepted_connection_gets_tcp_nodelay():
  """uvicorn's --workers processes accept on a socket asyncio does not treat
  as TCP, so without this every keep-alive response waited for a delayed ACK."""
  with socket.create_server(("127.0.0.1", 0)) as server, \
      socket.create_connection(server.getsockname()) as _client:
    conn, _ = server.accept()
    with conn:
      conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
      loop = asyncio.new_event_loop()
      try:
        config = uvicorn.Config(app=lambda scope, receive, send: None)
        proto = protocol.GuardedH11Protocol(config=config, server_state=ServerState(),
                                            app_state={}, _loop=loop)
        proto.connection_made(_Transport(conn))
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        proto._cancel_head_deadline()  # pylint: disable=protected-access
      finally:
        loop.close()
