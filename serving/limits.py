"""What one request may ask of the server, and the server's own bounds.

Why each bound exists: the ranking signature takes one serialized tf.Example
per candidate, the user's features included, so every request string is
copied into every candidate. Unbounded, a 1 MiB `occupation` cost ~300 MiB at
100 candidates and a 50 MB one drove the server to 13.7 GB. With strings of
at most MAX_STRING_CHARS characters (≤ 4 bytes each in UTF-8: user_id,
occupation and zip ≤ 3 KiB together) and at most MAX_CANDIDATES candidates,
one ranking batch holds at most ~2000 × (3 KiB + a movie's ~0.2 KiB) ≈ 6.5 MB
of examples: the copy is harmless, and the exported signatures
(trainer_modules/) stay as they are.

Numbers must be finite and in NUMBER_RANGES: JSON parsers turn 1e400 into
infinity, and a non-finite feature gave non-finite scores that JSON cannot
carry. No TensorFlow here (see serving/errors.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Optional

from common import features as F

MAX_BODY_BYTES = 64 * 1024  # a POST body; the largest valid one is ~2 KiB
MAX_STRING_CHARS = 256  # user_id and every string feature
MAX_FEATURES = 16  # entries of a request's `features` (8 names are known)
MAX_K = 1000
MAX_CANDIDATES = 2000
# Accepted closed ranges of numeric request features (raw contract names).
NUMBER_RANGES = {
    F.RAW_USER_AGE: (0, 120),
    F.BUCKETIZED_USER_AGE: (0, 120),
    F.USER_GENDER: (0, 1),
    F.USER_OCCUPATION_LABEL: (0, 1000),
    F.TIMESTAMP: (0, 32_503_680_000),  # seconds: 1970 .. 3000-01-01
}

# How `recommend serve` passes its settings to uvicorn worker processes
# (and to serving/protocol.py in the server process itself).
SERVE_CONFIG_ENV = "RECOMMEND_SERVE_CONFIG"


def check_number(name: str, value: float, shown: Optional[str] = None) -> None:
  """ValueError unless value is finite and within NUMBER_RANGES[name]."""
  shown = shown or name
  low, high = NUMBER_RANGES.get(name, (-math.inf, math.inf))
  if not math.isfinite(value) or not low <= value <= high:
    raise ValueError(f"{shown} must be a finite number in {low}..{high}, "
                     f"got {value!r}")


def check_string(name: str, value: str) -> None:
  if len(value) > MAX_STRING_CHARS:
    raise ValueError(f"{name} must be at most {MAX_STRING_CHARS} characters, "
                     f"got {len(value)}")


def check_user_id(user_id: Any) -> str:
  """The request's user id as a string (ValueError when absent or too long)."""
  if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
    raise ValueError("user_id is required")
  if not isinstance(user_id, (str, int)) or isinstance(user_id, bool):
    raise ValueError("user_id must be a string")
  user_id = str(user_id)
  check_string("user_id", user_id)
  return user_id


def check_n_candidates(n_candidates: int) -> int:
  if n_candidates <= 0 or n_candidates > MAX_CANDIDATES:
    raise ValueError(f"n_candidates must be in 1..{MAX_CANDIDATES}, "
                     f"got {n_candidates}")
  return n_candidates


def check_features_count(features: Any) -> None:
  if isinstance(features, Mapping) and len(features) > MAX_FEATURES:
    raise ValueError(f"features must have at most {MAX_FEATURES} entries, "
                     f"got {len(features)}")


@dataclasses.dataclass(frozen=True)
class ServerLimits:
  """Bounds of `recommend serve` (flags of the same names, see serving/cli.py).

  max_body_bytes: a larger POST body is answered 413 as soon as its
    Content-Length or its bytes so far exceed this, and the connection closed.
  body_timeout: seconds to receive a whole body (408 after, connection closed).
  header_timeout: seconds a connection may take to send a request's line and
    headers (from connecting, or from the previous response); then closed.
  keep_alive_timeout: seconds an idle keep-alive connection stays open.
  request_timeout: seconds a request may wait for and use the models (504).
  threads: threads that run model calls (never the event loop).
  max_pending: model calls running or queued; one more is answered 503.
  max_connections: open connections (uvicorn's limit_concurrency, 503 above).
  docs: serve /docs, /redoc and /openapi.json.
  """
  max_body_bytes: int = MAX_BODY_BYTES
  body_timeout: float = 10.0
  header_timeout: float = 10.0
  keep_alive_timeout: int = 5
  request_timeout: float = 30.0
  threads: int = 4
  max_pending: int = 64
  max_connections: int = 256
  docs: bool = False

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.type != "bool" and not value > 0:
        raise ValueError(f"{field.name} must be positive, got {value!r}")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ServerLimits":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def serve_config_from_env() -> Optional[dict]:
  """The settings `recommend serve` put in SERVE_CONFIG_ENV, or None."""
  raw = os.environ.get(SERVE_CONFIG_ENV)
  if not raw:
    return None
  try:
    config = json.loads(raw)
  except ValueError as e:
    raise ValueError(f"{SERVE_CONFIG_ENV} is not valid JSON: {e}") from None
  if not isinstance(config, dict):
    raise ValueError(f"{SERVE_CONFIG_ENV} must be a JSON object")
  return config


def limits_from_env() -> ServerLimits:
  config = serve_config_from_env() or {}
  return ServerLimits.from_dict(config.get("limits") or {})
