"""`recommend` console script.

  recommend user 42 --output-dir DIR [--k 10] [--json]
  recommend batch --users-file FILE --out FILE --output-dir DIR [--k 10]
  recommend serve --output-dir DIR [--host 127.0.0.1] [--port 8080]
      [--workers N] [--threads N] [--max-pending N] [--request-timeout S]
      [--max-body-bytes B] [--body-timeout S] [--header-timeout S]
      [--keep-alive-timeout S] [--max-connections N] [--docs]

--output-dir is a run's output directory (with serving/) or a serving dir
(with retrieval/ and ranking/); --version pins one model version. Damaged
versions are skipped with a warning for the newest usable one; a pinned
version that is missing or damaged, or no usable version at all, is a
one-line error and exit status 1. Bad arguments exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import List, Optional

import common  # noqa: F401  pylint: disable=unused-import

from serving import errors
from serving import limits


def _recommender(args):
  """The models as pushed when the command starts, for all of its output.

  One-shot commands don't watch for newer versions: a batch is answered by
  one model version throughout, and no reload thread can still be loading a
  SavedModel while the interpreter exits (TensorFlow aborts the process
  then). `serve` builds its own, reloading, Recommender (serving/http.py).
  """
  from serving import recommender  # pylint: disable=g-import-not-at-top
  return recommender.Recommender(args.output_dir, version=args.version,
                                 check_interval=float("inf"),
                                 background_reload=False)


def _features(args):
  feats = {}
  for name in ("age", "gender", "occupation", "zip", "timestamp"):
    v = getattr(args, name, None)
    if v is not None:
      feats[name] = v
  return feats or None


def _table(result) -> str:
  lines = [f"user {result['user_id']} "
           f"({'known' if result['known_user'] else 'unknown'} user; "
           f"retrieval v{result['model_versions']['retrieval']}, "
           f"ranking v{result['model_versions']['ranking']})"]
  lines.append(f"{'#':>3}  {'movie_id':>8}  {'rating':>6}  {'score':>7}  title")
  for i, it in enumerate(result["items"], 1):
    rating = "-" if it["predicted_rating"] is None else f"{it['predicted_rating']:.2f}"
    lines.append(f"{i:>3}  {it['movie_id']:>8}  {rating:>6}  "
                 f"{it['score']:>7.3f}  {it['title']}")
  if result.get("message"):
    lines.append(f"note: {result['message']}")
  return "\n".join(lines)


def _check_args(args) -> None:
  """ValueError for arguments no request may have (serving/limits.py)."""
  limits.check_n_candidates(args.n_candidates)
  if getattr(args, "user_id", None) is not None:
    limits.check_user_id(args.user_id)


def cmd_user(args) -> int:
  try:
    _check_args(args)
    features = _features(args)
    if features:  # before loading the models: a bad argument is quick to tell
      _normalize(features)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  r = _recommender(args)
  try:
    result = r.recommend(args.user_id, k=args.k, n_candidates=args.n_candidates,
                         features=features)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  errors.check_finite(result)  # ModelOutputError: main() says it, exit 1
  print(json.dumps(result, allow_nan=False) if args.json else _table(result))
  return 0


def _normalize(features):
  from serving import recommender  # pylint: disable=g-import-not-at-top
  return recommender.normalize_features(features)


def cmd_batch(args) -> int:
  try:
    _check_args(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  r = _recommender(args)
  with open(args.users_file, encoding="utf-8") as f:
    users = [line.strip() for line in f if line.strip()]
  t0 = time.time()
  failed = 0
  with open(args.out, "w", encoding="utf-8") as out:
    for i, user in enumerate(users, 1):
      try:
        limits.check_user_id(user)
        result = r.recommend(user, k=args.k, n_candidates=args.n_candidates)
        errors.check_finite(result)
      except (ValueError, errors.ModelOutputError) as e:
        result = {"user_id": user[:limits.MAX_STRING_CHARS], "error": str(e)}
        failed += 1
      out.write(json.dumps(result, allow_nan=False) + "\n")
      if i % 100 == 0 or i == len(users):
        out.flush()
        print(f"\r{i}/{len(users)} users ({time.time() - t0:.1f}s)",
              end="" if i < len(users) else "\n", file=sys.stderr, flush=True)
  print(f"wrote {len(users)} lines to {args.out} ({failed} errors)", file=sys.stderr)
  return 0 if not failed else 1


def cmd_serve(args) -> int:
  from serving import http  # pylint: disable=g-import-not-at-top
  try:
    server_limits = limits.ServerLimits(docs=args.docs, **{
        name: getattr(args, name) for name in _LIMIT_FLAGS})
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.workers < 1:
    print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
    return 2
  http.serve(args.output_dir, host=args.host, port=args.port, version=args.version,
             server_limits=server_limits, workers=args.workers)
  return 0


# `serve` flags: the fields of limits.ServerLimits (help: its docstring).
_LIMIT_FLAGS = {
    "max_body_bytes": "largest POST body in bytes (413 above)",
    "body_timeout": "seconds to receive a whole body (408 after)",
    "header_timeout": "seconds a connection may take to send a request's "
                      "line and headers (then closed)",
    "keep_alive_timeout": "seconds an idle keep-alive connection stays open",
    "request_timeout": "seconds a request may wait for the models (504 after)",
    "threads": "threads running model calls",
    "max_pending": "model calls running or queued before 503 (busy)",
    "max_connections": "open connections before 503 (uvicorn limit_concurrency)",
}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="recommend", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  def common_args(sp):
    sp.add_argument("--output-dir", required=True,
                    help="run output dir (with serving/) or serving dir")
    sp.add_argument("--version", type=int, default=None, help="pin a model version")

  u = sub.add_parser("user", help="recommendations for one user")
  u.add_argument("user_id")
  common_args(u)
  u.add_argument("--k", type=int, default=10)
  u.add_argument("--n-candidates", type=int, default=100)
  u.add_argument("--json", action="store_true", help="print JSON")
  u.add_argument("--age", type=float)
  u.add_argument("--gender", help="M or F")
  u.add_argument("--occupation")
  u.add_argument("--zip")
  u.add_argument("--timestamp", type=int,
                 help="request time (seconds since 1970); default: the "
                      "user's last training time")
  u.set_defaults(func=cmd_user)

  b = sub.add_parser("batch", help="recommendations for a file of user ids")
  b.add_argument("--users-file", required=True, help="one user id per line")
  b.add_argument("--out", required=True, help="JSON lines output")
  common_args(b)
  b.add_argument("--k", type=int, default=10)
  b.add_argument("--n-candidates", type=int, default=100)
  b.set_defaults(func=cmd_batch)

  s = sub.add_parser("serve", help="HTTP API (serving/http.py)")
  common_args(s)
  s.add_argument("--host", default="127.0.0.1")
  s.add_argument("--port", type=int, default=8080)
  s.add_argument("--workers", type=int, default=1,
                 help="uvicorn worker processes, each with its own models "
                      "and hot reload")
  defaults = limits.ServerLimits()
  for name, text in _LIMIT_FLAGS.items():
    default = getattr(defaults, name)
    s.add_argument("--" + name.replace("_", "-"), type=type(default),
                   default=default, help=f"{text} (default {default})")
  s.add_argument("--docs", action="store_true",
                 help="serve /docs, /redoc and /openapi.json")
  s.set_defaults(func=cmd_serve)
  return p


def _log_to_stderr(level: int) -> None:
  """Serving's log (a skipped damaged version: WARNING) as one stderr line
  per message."""
  logger = logging.getLogger("serving")
  if not logger.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
  logger.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  _log_to_stderr(logging.INFO if args.command == "serve" else logging.WARNING)
  try:
    return args.func(args)
  except errors.RecommenderError as e:  # no usable model, a model's bad output
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
