"""The HTTP API's limits (serving/http.py, limits.py, model_pool.py, protocol.py).

A stand-in recommender (real feature validation, a chosen delay and scores)
behind the real app: in process (TestClient) for what one request gets back,
and under uvicorn on a loopback port with the server's own protocol for what
needs sockets (bodies too large or too slow, silent connections, a slow
request beside /healthz). No TensorFlow models: these run in seconds.
"""
import contextlib
import json
import math
import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from serving import http
from serving import limits
from serving import protocol
from serving import recommender as rec_lib
from tests.test_serving import _free_port


class FakeRecommender:
  """What create_app needs of a Recommender; validates features for real."""

  def __init__(self, delay=0.0, score=1.5, status="ok"):
    self.delay, self.score, self.status = delay, score, status
    self.calls = 0
    self.polls = 0

  def recommend(self, user_id, k=10, n_candidates=100, features=None):
    self.calls += 1
    given = rec_lib.normalize_features(features)
    if k <= 0:
      raise ValueError("k must be positive")
    time.sleep(self.delay)
    return {"user_id": user_id, "known_user": False,
            "model_versions": {"retrieval": 1, "ranking": 1},
            "items": [{"movie_id": "m1", "title": "A film", "genres": [],
                       "score": self.score, "predicted_rating": 4.0,
                       "rank_score": 0.5, "retrieval_rank": 1}],
            "features": sorted(given), "n_candidates": n_candidates}

  def poll(self):
    self.polls += 1

  def health(self):
    return {"status": self.status, "model_versions": {"retrieval": 1, "ranking": 1},
            "models": {}, "last_reload_error": None}

  def close(self):
    pass


def _client(rec=None, **limit_args):
  return TestClient(http.create_app(rec or FakeRecommender(),
                                    limits.ServerLimits(**limit_args)))


@contextlib.contextmanager
def _server(rec, monkeypatch, **limit_args):
  """The app over `rec` under uvicorn with `recommend serve`'s protocol and
  limits, on a free loopback port."""
  lim = limits.ServerLimits(**limit_args)
  app = http.create_app(rec, lim)
  monkeypatch.setenv(limits.SERVE_CONFIG_ENV, json.dumps({"limits": lim.to_dict()}))
  port = _free_port()
  server = uvicorn.Server(uvicorn.Config(
      app, host="127.0.0.1", port=port, log_level="warning",
      http=protocol.GuardedH11Protocol, timeout_keep_alive=lim.keep_alive_timeout,
      limit_concurrency=lim.max_connections))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + 30
  while not server.started:
    assert time.time() < deadline and thread.is_alive(), "server did not start"
    time.sleep(0.02)
  try:
    yield port
  finally:
    server.should_exit = True
    thread.join(10)


def _post(raw_body: bytes, content_type="application/json"):
  return {"content": raw_body, "headers": {"content-type": content_type}}


def _recv_all(sock, timeout=10.0) -> bytes:
  """Everything until the server closes the connection (or timeout)."""
  sock.settimeout(timeout)
  data = b""
  try:
    while True:
      chunk = sock.recv(65536)
      if not chunk:
        return data
      data += chunk
  except socket.timeout:
    return data + b"<still open>"


# --------------------------------------------------------------------------
# One request: bad input is a 4xx naming the field, never a 500.

@pytest.mark.parametrize("features, field", [
    ('{"age": Infinity}', "age"), ('{"age": NaN}', "age"),
    ('{"age": -Infinity}', "age"), ('{"age": 1e308}', "age"),
    ('{"age": -1}', "age"), ('{"age": 121}', "age"),
    ('{"raw_user_age": 1e400}', "raw_user_age"),
    ('{"user_occupation_label": Infinity}', "user_occupation_label"),
    ('{"user_occupation_label": 1e400}', "user_occupation_label"),
    ('{"gender": Infinity}', "gender"), ('{"gender": 2}', "gender"),
    ('{"timestamp": 1e30}', "timestamp"), ('{"timestamp": NaN}', "timestamp"),
    ('{"timestamp": 100000000000000000000000000000}', "timestamp"),
    ('{"occupation": "' + "x" * 257 + '"}', "occupation"),
    ('{"zip": "' + "9" * 300 + '"}', "zip"),
])
def test_bad_numbers_and_long_strings_are_422_naming_the_field(features, field):
  rec = FakeRecommender()
  with _client(rec) as c:
    r = c.post("/recommend", **_post(
        f'{{"user_id": "1", "features": {features}}}'.encode()))
  assert r.status_code == 422, r.text
  detail = r.json()["detail"]
  assert detail.startswith(f"{field} must be "), detail
  assert len(detail) < 200


def test_request_shape_limits_are_422():
  long_user = "u" * (limits.MAX_STRING_CHARS + 1)
  many = {f"f{i}": 1 for i in range(limits.MAX_FEATURES + 1)}
  cases = [
      ({"user_id": long_user}, "user_id must be at most 256 characters"),
      ({"user_id": "1", "features": many}, "features must have at most 16 entries"),
      ({"user_id": "1", "n_candidates": limits.MAX_CANDIDATES + 1},
       "n_candidates must be in 1..2000"),
      ({"user_id": "1", "n_candidates": 0}, "n_candidates must be in 1..2000"),
      ({"user_id": "1", "k": 0}, "k must be positive"),
  ]
  with _client() as c:
    for body, message in cases:
      r = c.post("/recommend", json=body)
      assert r.status_code == 422 and r.json()["detail"].startswith(message), (
          body, r.text)
    r = c.get("/recommend", params={"user_id": long_user})
    assert r.status_code == 422 and "256 characters" in r.json()["detail"]
    r = c.get("/recommend", params={"user_id": "1", "k": "9" * 5000})
    assert r.status_code == 422 and len(r.json()["detail"]) < 100
    # A 256-character occupation is fine.
    r = c.post("/recommend", json={"user_id": "1", "features": {
        "occupation": "x" * limits.MAX_STRING_CHARS, "age": 120, "timestamp": 0}})
    assert r.status_code == 200, r.text


def test_deeply_nested_or_malformed_json_is_400():
  with _client() as c:
    for body in (b"[" * 60000, b'{"user_id": ' + b"[" * 30000 + b"]" * 30000 + b"}",
                 b"{not json", b'{"user_id": "1", "k": 1' + b"0" * 5000 + b"}",
                 b"\xff\xfe"):
      r = c.post("/recommend", **_post(body))
      assert 400 <= r.status_code < 500, (body[:30], r.status_code, r.text)
      assert r.json()["detail"], body[:30]
    r = c.post("/recommend", **_post(b"[" * 60000))
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"]


def test_non_json_posts_are_415():
  with _client() as c:
    for headers in ({"content-type": "text/plain"}, {},
                    {"content-type": "application/x-www-form-urlencoded"}):
      r = c.post("/recommend", content=b'{"user_id": "1"}', headers=headers)
      assert r.status_code == 415, (headers, r.text)
      assert "application/json" in r.json()["detail"]
    r = c.post("/recommend", **_post(b'{"user_id": "1"}',
                                    "application/json; charset=utf-8"))
    assert r.status_code == 200, r.text


def test_a_non_finite_model_score_is_503_with_valid_json():
  for score in (math.nan, math.inf):
    with _client(FakeRecommender(score=score)) as c:
      r = c.get("/recommend", params={"user_id": "1"})
    assert r.status_code == 503
    assert "non-finite score" in json.loads(r.text)["detail"]


def test_docs_are_off_unless_asked_for():
  with _client() as c:
    for path in ("/docs", "/redoc", "/openapi.json"):
      assert c.get(path).status_code == 404, path
  with _client(docs=True) as c:
    for path in ("/docs", "/redoc", "/openapi.json"):
      assert c.get(path).status_code == 200, path


def test_healthz_status_codes_and_polling():
  rec = FakeRecommender(status="degraded")
  with _client(rec) as c:
    r = c.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    assert r.json()["pending_requests"] == 0 and rec.polls == 1
    rec.status = "unavailable"
    assert c.get("/healthz").status_code == 503


def test_success_response_is_the_recommenders_result():
  with _client() as c:
    r = c.post("/recommend", json={"user_id": 7, "k": 3, "features": {"age": 30}})
  assert r.status_code == 200
  assert r.json()["user_id"] == "7" and r.json()["features"] == [
      "bucketized_user_age", "raw_user_age"]


def test_server_limits_validate_and_round_trip(monkeypatch):
  with pytest.raises(ValueError, match="threads must be positive"):
    limits.ServerLimits(threads=0)
  lim = limits.ServerLimits(max_body_bytes=10, docs=True)
  assert limits.ServerLimits.from_dict(lim.to_dict()) == lim
  monkeypatch.setenv(limits.SERVE_CONFIG_ENV, json.dumps({"limits": {"header_timeout": 3}}))
  assert limits.limits_from_env().header_timeout == 3
  monkeypatch.delenv(limits.SERVE_CONFIG_ENV)
  assert limits.limits_from_env() == limits.ServerLimits()
  with pytest.raises(RuntimeError, match="recommend serve"):
    http.app_from_env()


# --------------------------------------------------------------------------
# The service: busy, slow and silent clients.

def test_busy_is_503_and_a_timeout_is_504():
  import asyncio  # pylint: disable=g-import-not-at-top
  from serving import model_pool  # pylint: disable=g-import-not-at-top

  async def scenario():
    pool = model_pool.ModelPool(threads=1, max_pending=1, timeout=0.3)
    first = asyncio.ensure_future(pool.run(lambda: time.sleep(1.0) or "done"))
    await asyncio.sleep(0.05)
    with pytest.raises(model_pool.Busy):
      await pool.run(lambda: "never")
    with pytest.raises(model_pool.Timeout):
      await first
    assert pool.pending == 1  # still running in its thread
    await asyncio.sleep(1.0)
    assert pool.pending == 0
    assert await pool.run(lambda: "ok") == "ok"
    pool.shutdown()

  asyncio.run(scenario())
  with _client(FakeRecommender(delay=1.0), request_timeout=0.2) as c:
    r = c.get("/recommend", params={"user_id": "1"})
  assert r.status_code == 504 and "longer than 0.2 s" in r.json()["detail"]


def test_a_slow_request_does_not_delay_healthz_or_others(monkeypatch):
  import httpx  # pylint: disable=g-import-not-at-top
  rec = FakeRecommender(delay=3.0)
  with _server(rec, monkeypatch, threads=2, max_pending=2) as port:
    base = f"http://127.0.0.1:{port}"
    slow = []
    worker = threading.Thread(target=lambda: slow.append(
        httpx.get(f"{base}/recommend", params={"user_id": "1"}, timeout=30)))
    worker.start()
    while rec.calls == 0:
      time.sleep(0.01)
    t0 = time.perf_counter()
    health = httpx.get(f"{base}/healthz", timeout=30)
    took = time.perf_counter() - t0
    assert health.status_code == 200 and health.json()["pending_requests"] == 1
    assert took < 1.0, f"/healthz took {took:.2f} s behind a slow request"
    # A second slow request runs beside the first (threads=2); a third is
    # refused at once.
    second = []
    worker2 = threading.Thread(target=lambda: second.append(
        httpx.get(f"{base}/recommend", params={"user_id": "2"}, timeout=30)))
    worker2.start()
    while rec.calls < 2:
      time.sleep(0.01)
    t0 = time.perf_counter()
    busy = httpx.get(f"{base}/recommend", params={"user_id": "3"}, timeout=30)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "server busy" in busy.json()["detail"]
    assert time.perf_counter() - t0 < 1.0
    worker.join(30)
    worker2.join(30)
    assert slow[0].status_code == 200 and second[0].status_code == 200


def test_a_body_announced_too_large_is_413_before_it_is_read(monkeypatch):
  with _server(FakeRecommender(), monkeypatch) as port:
    with socket.create_connection(("127.0.0.1", port)) as s:
      t0 = time.perf_counter()
      s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: 300000000\r\n\r\n" + b"{" * 1000)
      reply = _recv_all(s)
      assert time.perf_counter() - t0 < 5
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"larger than 65536 bytes" in reply and not reply.endswith(b"<still open>")


def test_a_streamed_body_is_cut_off_at_the_limit(monkeypatch):
  with _server(FakeRecommender(), monkeypatch,
               max_body_bytes=1000) as port:
    with socket.create_connection(("127.0.0.1", port)) as s:
      s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
      for _ in range(3):  # 1.5 KB in 500-byte chunks, no final chunk
        s.sendall(b"1f4\r\n" + b" " * 500 + b"\r\n")
        time.sleep(0.05)
      reply = _recv_all(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert not reply.endswith(b"<still open>")


def test_a_slow_body_is_408_and_silent_connections_are_closed(monkeypatch):
  with _server(FakeRecommender(), monkeypatch,
               body_timeout=1.0, header_timeout=1.0) as port:
    with socket.create_connection(("127.0.0.1", port)) as s:
      t0 = time.perf_counter()
      s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"user_id"')
      reply = _recv_all(s)
      assert time.perf_counter() - t0 < 5
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert not reply.endswith(b"<still open>")
    # Connected, nothing sent / half a request line / a request then idle.
    for first in (b"", b"GET /recom", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
      with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.perf_counter()
        if first:
          s.sendall(first)
        reply = _recv_all(s)
        took = time.perf_counter() - t0
      assert not reply.endswith(b"<still open>"), first
      assert took < 8, (first, took)
      assert reply.startswith(b"HTTP/1.1 200") == first.endswith(b"\r\n\r\n")
