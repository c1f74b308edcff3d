"""HTTP API over a Recommender (FastAPI; run with uvicorn or `recommend serve`).

* GET  /recommend?user_id=42&k=10[&n_candidates=100]
* POST /recommend  {"user_id": "42", "k": 10, "features": {"age": 30,
  "gender": "F", "occupation": "writer", "zip": "94110", "timestamp":
  893286638}}  (cold start: an unknown user_id with features; timestamp is
  the request time, by default the user's last training time)
* GET  /healthz    loaded model versions and whether they are the newest

Both /recommend answer {"user_id", "model_versions": {"retrieval", "ranking"},
"items": [{"movie_id", "title", "score", "predicted_rating", "rank_score",
"retrieval_rank", "ranking_rank", ...}], ...}.
Bad requests get a 4xx with {"detail": message}, never a 500:
* 400 malformed JSON (also nested too deeply), 415 a POST that is not
  `application/json`, 413 a body over max_body_bytes (refused from its
  Content-Length before reading, or once the bytes read pass it; the
  connection is closed), 408 a body not received within body_timeout;
* 422 a field out of its range, naming it: user_id and string features ≤ 256
  characters, numbers finite and in range (age 0..120), ≤ 16 features, k in
  1..min(1000, catalogue), n_candidates in 1..2000 (serving/limits.py).
The service's own limits are 5xx with {"detail"}: 503 busy (max_pending model
calls running or queued; Retry-After: 1), 504 a model call over
request_timeout, 503 no usable model, 503 a model that produced a non-finite
score (never invalid JSON).

Model calls run on a thread pool (serving/model_pool.py), never on the event
loop, so /healthz answers during a heavy request. /healthz: 200
{"status": "ok"} when the newest version of each model on disk is served;
200 {"status": "degraded", "last_reload_error": ...} when a newer version was
skipped (damaged) or a reload failed while the loaded models keep serving (a
bad push must not take every replica out of a load balancer); 503
{"status": "unavailable"} with no model loaded. It shows no absolute paths.
/docs, /redoc and /openapi.json are off unless `docs` (`recommend serve --docs`).

`recommend serve --workers N` runs N uvicorn processes, each with its own
models and hot reload: `app_from_env` builds each one's app from the
settings `serve` put in the environment (limits.SERVE_CONFIG_ENV).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from typing import Any, Mapping, Optional, Tuple

import common  # noqa: F401  pylint: disable=unused-import

import fastapi
from fastapi import responses
from fastapi.exceptions import RequestValidationError

from common import versions
from serving import errors
from serving import limits
from serving import model_pool
from serving import version_picker

# Imported lazily (they load TensorFlow): serving.recommender. The parent
# process of `serve --workers N` never needs it.
MAX_CANDIDATES = limits.MAX_CANDIDATES
JSON_TYPE = "application/json"


def _error(status: int, message: str, close: bool = False,
           headers: Optional[Mapping[str, str]] = None) -> responses.JSONResponse:
  """{"detail": message}; close=True when the request body was not read
  (uvicorn would otherwise read and discard the rest of it)."""
  headers = dict(headers or {})
  if close:
    headers["Connection"] = "close"
  return responses.JSONResponse(status_code=status, content={"detail": message},
                                headers=headers or None)


def _bad_input(e: ValueError) -> responses.JSONResponse:
  return _error(422 if "must" in str(e) or "unknown" in str(e) else 400, str(e))


def _shown(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 40 else f"{text[:40]}..."


def _int_param(name: str, value: Any, default: int) -> int:
  if value is None:
    return default
  if isinstance(value, bool):
    raise ValueError(f"{name} must be an integer")
  if isinstance(value, int):
    return value
  if isinstance(value, str):
    try:
      return int(value.strip())
    except ValueError:
      pass
  raise ValueError(f"{name} must be an integer, got {_shown(value)}")


async def _read_body(request: fastapi.Request, lim: limits.ServerLimits
                     ) -> Tuple[bytes, Optional[responses.JSONResponse]]:
  """(body, None), or (b"", the error response): 413 over max_body_bytes
  (from Content-Length before reading, else counted while reading), 408
  when the whole body takes longer than body_timeout."""
  too_large = functools.partial(
      _error, 413, f"request body larger than {lim.max_body_bytes} bytes",
      close=True)
  length = request.headers.get("content-length")
  if length is not None:
    try:
      if int(length) > lim.max_body_bytes:
        return b"", too_large()
    except ValueError:
      return b"", _error(400, "invalid Content-Length header", close=True)
  loop = asyncio.get_running_loop()
  deadline = loop.time() + lim.body_timeout
  body = bytearray()
  while True:
    try:
      message = await asyncio.wait_for(request.receive(),
                                       max(deadline - loop.time(), 0))
    except asyncio.TimeoutError:
      return b"", _error(408, "request body not received within "
                         f"{lim.body_timeout:g} s", close=True)
    if message["type"] == "http.disconnect":
      return b"", _error(400, "client disconnected", close=True)
    body += message.get("body", b"")
    if len(body) > lim.max_body_bytes:
      return b"", too_large()
    if not message.get("more_body", False):
      return bytes(body), None


def create_app(recommender, server_limits: Optional[limits.ServerLimits] = None,
               owns_recommender: bool = False) -> fastapi.FastAPI:
  """The API over `recommender` (a serving.recommender.Recommender).

  owns_recommender: close it when the server shuts down (its reload thread
  must not outlive the interpreter).
  """
  lim = server_limits or limits.ServerLimits()
  pool = model_pool.ModelPool(lim.threads, lim.max_pending, lim.request_timeout)

  @contextlib.asynccontextmanager
  async def lifespan(_app):
    try:
      yield
    finally:
      pool.shutdown()
      if owns_recommender:
        recommender.close()

  docs = lim.docs
  app = fastapi.FastAPI(title="Two-stage movie recommender", lifespan=lifespan,
                        docs_url="/docs" if docs else None,
                        redoc_url="/redoc" if docs else None,
                        openapi_url="/openapi.json" if docs else None)
  app.state.limits, app.state.pool = lim, pool

  @app.exception_handler(RequestValidationError)
  async def _validation(_request, exc):  # pragma: no cover - defensive
    return _error(422, f"invalid request: {exc.errors()}")

  async def _run(user_id, k, n_candidates, features) -> responses.JSONResponse:
    try:
      user_id = limits.check_user_id(user_id)
      k = _int_param("k", k, 10)
      n_candidates = limits.check_n_candidates(
          _int_param("n_candidates", n_candidates, 100))
      limits.check_features_count(features)
    except ValueError as e:
      return _bad_input(e)
    call = functools.partial(recommender.recommend, user_id, k=k,
                             n_candidates=n_candidates, features=features)
    try:
      result = await pool.run(call)
      errors.check_finite(result)
    except ValueError as e:
      return _bad_input(e)
    except model_pool.Busy as e:
      return _error(503, f"server busy: {e}; retry later",
                    headers={"Retry-After": "1"})
    except model_pool.Timeout as e:
      return _error(504, str(e))
    except errors.RecommenderError as e:
      return _error(503, str(e))
    return responses.JSONResponse(content=result)

  @app.get("/recommend")
  async def get_recommend(request: fastapi.Request):
    params = request.query_params
    unknown = set(params) - {"user_id", "k", "n_candidates"}
    if unknown:
      return _error(400, f"unknown query parameters: {sorted(unknown)} "
                    "(use POST with 'features' for user features)")
    return await _run(params.get("user_id"), params.get("k"),
                      params.get("n_candidates"), None)

  @app.post("/recommend")
  async def post_recommend(request: fastapi.Request):
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != JSON_TYPE:
      return _error(415, f"POST /recommend needs Content-Type: {JSON_TYPE}, "
                    f"got {_shown(ctype) if ctype else 'none'}", close=True)
    body, problem = await _read_body(request, lim)
    if problem is not None:
      return problem
    try:
      payload = json.loads(body or b"")
    except RecursionError:
      return _error(400, "malformed JSON body: nested too deeply")
    except (ValueError, UnicodeDecodeError) as e:
      return _error(400, f"malformed JSON body: {e}")
    if not isinstance(payload, dict):
      return _error(422, "body must be a JSON object")
    unknown = set(payload) - {"user_id", "k", "n_candidates", "features"}
    if unknown:
      return _error(422, f"unknown fields: {sorted(unknown)}")
    for name in ("k", "n_candidates"):
      if name in payload and (not isinstance(payload[name], int)
                              or isinstance(payload[name], bool)):
        return _error(422, f"{name} must be an integer")
    return await _run(payload.get("user_id"), payload.get("k"),
                      payload.get("n_candidates"), payload.get("features"))

  @app.get("/healthz")
  async def healthz():
    recommender.poll()
    health = dict(recommender.health(), pending_requests=pool.pending)
    return responses.JSONResponse(
        status_code=503 if health["status"] == "unavailable" else 200,
        content=health)

  return app


# ---------------------------------------------------------------------------
# Running it.

def app_from_env() -> fastapi.FastAPI:
  """The app of one `recommend serve --workers N` process (uvicorn factory):
  its own Recommender over the serve settings in the environment. A worker
  that finds no usable model answers 503 and keeps looking."""
  config = limits.serve_config_from_env()
  if not config or not config.get("serving_dir"):
    raise RuntimeError(f"{limits.SERVE_CONFIG_ENV} is not set: start the "
                       "server with `recommend serve`")
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  rec = rec_lib.Recommender(config["serving_dir"], version=config.get("version"),
                            allow_empty=True)
  return create_app(rec, limits.ServerLimits.from_dict(config.get("limits") or {}),
                    owns_recommender=True)


def check_servable(serving_dir: str, version: Optional[int] = None) -> None:
  """RecommenderError unless a complete retrieval version (the pinned one,
  when pinned) is on disk; without loading TensorFlow (the parent process of
  `serve --workers N`). Whether it loads, each worker finds out."""
  picker = version_picker.VersionPicker(serving_dir, versions.RETRIEVAL)
  on_disk = picker.on_disk()
  candidates = on_disk if version is None else [v for v in on_disk if v == version]
  reasons = []
  for v in candidates:
    reason = picker.why_unusable(v)
    if reason is None:
      return
    reasons.append(str(version_picker.Skip(picker.model, v, reason)))
  if version is not None and not candidates:
    raise errors.RecommenderError(
        f"Pinned retrieval version {version} not found under {picker.model_dir} "
        f"(versions on disk: {sorted(on_disk) or 'none'})")
  raise errors.RecommenderError(
      f"No complete retrieval model under {picker.model_dir}"
      + (": " + "; ".join(reasons) if reasons else
         " (integer version folders with saved_model.pb)"))


def serve(serving_dir: str, host: str = "127.0.0.1", port: int = 8080,
          version: Optional[int] = None,
          server_limits: Optional[limits.ServerLimits] = None,
          workers: int = 1, log_level: str = "info") -> None:
  """Serves until SIGINT / SIGTERM; RecommenderError when nothing is usable."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving import protocol  # pylint: disable=g-import-not-at-top
  lim = server_limits or limits.ServerLimits()
  serving_dir = version_picker.resolve_serving_dir(serving_dir)
  os.environ[limits.SERVE_CONFIG_ENV] = json.dumps(
      {"serving_dir": serving_dir, "version": version, "limits": lim.to_dict()})
  kwargs = dict(host=host, port=port, log_level=log_level,
                http=protocol.GuardedH11Protocol,
                timeout_keep_alive=lim.keep_alive_timeout,
                limit_concurrency=lim.max_connections)
  if workers > 1:
    check_servable(serving_dir, version)
    uvicorn.run("serving.http:app_from_env", factory=True, workers=workers,
                **kwargs)
    return
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  recommender = rec_lib.Recommender(serving_dir, version=version)
  try:
    uvicorn.run(create_app(recommender, lim, owns_recommender=True), **kwargs)
  finally:
    recommender.close()  # no reload thread may outlive the interpreter
