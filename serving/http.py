"""HTTP API over a Recommender (FastAPI; run with uvicorn or `recommend serve`).

* GET  /recommend?user_id=42&k=10[&n_candidates=100]
* POST /recommend  {"user_id": "42", "k": 10, "features": {"age": 30,
  "gender": "F", "occupation": "writer", "zip": "94110", "timestamp":
  893286638}}  (cold start: an unknown user_id with features; timestamp is
  the request time, by default the user's last training time)
* GET  /healthz    loaded model versions

Both /recommend answer {"user_id", "model_versions": {"retrieval", "ranking"},
"items": [{"movie_id", "title", "score", "predicted_rating", "rank_score",
"retrieval_rank", "ranking_rank", ...}], ...}.
Bad requests get a 4xx with {"detail": message}, never a 500.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import common  # noqa: F401  pylint: disable=unused-import

import fastapi
from fastapi import responses
from fastapi.exceptions import RequestValidationError

from serving import recommender as rec_lib

MAX_CANDIDATES = 2000


def _error(status: int, message: str) -> responses.JSONResponse:
  return responses.JSONResponse(status_code=status, content={"detail": message})


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
  raise ValueError(f"{name} must be an integer, got {value!r}")


def create_app(recommender: rec_lib.Recommender) -> fastapi.FastAPI:
  app = fastapi.FastAPI(title="Two-stage movie recommender")

  @app.exception_handler(RequestValidationError)
  async def _validation(_request, exc):  # pragma: no cover - defensive
    return _error(422, f"invalid request: {exc.errors()}")

  def _run(user_id, k, n_candidates, features) -> responses.JSONResponse:
    try:
      if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
        raise ValueError("user_id is required")
      if not isinstance(user_id, (str, int)) or isinstance(user_id, bool):
        raise ValueError("user_id must be a string")
      k = _int_param("k", k, 10)
      n_candidates = _int_param("n_candidates", n_candidates, 100)
      if n_candidates <= 0 or n_candidates > MAX_CANDIDATES:
        raise ValueError(f"n_candidates must be in 1..{MAX_CANDIDATES}")
      result = recommender.recommend(str(user_id), k=k, n_candidates=n_candidates,
                                     features=features)
    except ValueError as e:
      return _error(422 if "must" in str(e) or "unknown" in str(e) else 400, str(e))
    except rec_lib.RecommenderError as e:
      return _error(503, str(e))
    return responses.JSONResponse(content=result)

  @app.get("/recommend")
  async def get_recommend(request: fastapi.Request):
    params = request.query_params
    unknown = set(params) - {"user_id", "k", "n_candidates"}
    if unknown:
      return _error(400, f"unknown query parameters: {sorted(unknown)} "
                    "(use POST with 'features' for user features)")
    return _run(params.get("user_id"), params.get("k"),
                params.get("n_candidates"), None)

  @app.post("/recommend")
  async def post_recommend(request: fastapi.Request):
    body = await request.body()
    try:
      payload = json.loads(body or b"")
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
    return _run(payload.get("user_id"), payload.get("k"),
                payload.get("n_candidates"), payload.get("features"))

  @app.get("/healthz")
  async def healthz() -> Dict[str, Any]:
    return dict(recommender.info(), status="ok")

  return app


def serve(serving_dir: str, host: str = "127.0.0.1", port: int = 8080,
          version: Optional[int] = None) -> None:
  import uvicorn  # pylint: disable=g-import-not-at-top
  recommender = rec_lib.Recommender(serving_dir, version=version)
  try:
    uvicorn.run(create_app(recommender), host=host, port=port, log_level="info")
  finally:
    recommender.close()  # no reload thread may outlive the interpreter
