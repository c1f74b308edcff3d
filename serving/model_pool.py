"""Model calls off the event loop: a bounded thread pool with a deadline.

A recommendation runs TensorFlow and numpy for milliseconds to seconds; run
on the event loop, one heavy request stalled every other one (/healthz took
4.7 s behind it). Here calls run on `threads` threads; at most `max_pending`
may be running or queued (one more is refused at once: `Busy`, HTTP 503),
and a caller waits at most `timeout` seconds (`Timeout`, HTTP 504). A call
that timed out before it started is dropped; one already running cannot be
interrupted (TensorFlow has no cancellation), it finishes in its thread and
holds its pending slot until then, so timeouts cannot pile up unbounded work.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable


class Busy(Exception):
  """max_pending calls are running or queued."""


class Timeout(Exception):
  """The call did not finish within the deadline."""


class ModelPool:

  def __init__(self, threads: int, max_pending: int, timeout: float):
    self.threads, self.max_pending, self.timeout = threads, max_pending, timeout
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="recommend")
    self._lock = threading.Lock()
    self._pending = 0

  @property
  def pending(self) -> int:
    return self._pending

  def _release(self, _future) -> None:
    with self._lock:
      self._pending -= 1

  async def run(self, fn: Callable[[], Any]) -> Any:
    """fn() on a pool thread; Busy / Timeout as in the module docstring."""
    with self._lock:
      if self._pending >= self.max_pending:
        raise Busy(f"{self._pending} requests are in progress (limit "
                   f"{self.max_pending})")
      self._pending += 1
    try:
      future = self._executor.submit(fn)
    except BaseException:
      self._release(None)
      raise
    future.add_done_callback(self._release)
    try:
      return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
    except asyncio.TimeoutError:
      future.cancel()  # dropped if it has not started
      raise Timeout(f"the request took longer than {self.timeout:g} s") from None

  def shutdown(self) -> None:
    self._executor.shutdown(wait=False, cancel_futures=True)
