"""`recommend` console script.

  recommend user 42 --output-dir DIR [--k 10] [--json]
  recommend batch --users-file FILE --out FILE --output-dir DIR [--k 10]
  recommend serve --output-dir DIR [--host 127.0.0.1] [--port 8080]

--output-dir is a run's output directory (with serving/) or a serving dir
(with retrieval/ and ranking/); --version pins one model version.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

import common  # noqa: F401  pylint: disable=unused-import


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


def cmd_user(args) -> int:
  r = _recommender(args)
  try:
    result = r.recommend(args.user_id, k=args.k, n_candidates=args.n_candidates,
                         features=_features(args))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result) if args.json else _table(result))
  return 0


def cmd_batch(args) -> int:
  r = _recommender(args)
  with open(args.users_file, encoding="utf-8") as f:
    users = [line.strip() for line in f if line.strip()]
  t0 = time.time()
  errors = 0
  with open(args.out, "w", encoding="utf-8") as out:
    for i, user in enumerate(users, 1):
      try:
        result = r.recommend(user, k=args.k, n_candidates=args.n_candidates)
      except ValueError as e:
        result = {"user_id": user, "error": str(e)}
        errors += 1
      out.write(json.dumps(result) + "\n")
      if i % 100 == 0 or i == len(users):
        out.flush()
        print(f"\r{i}/{len(users)} users ({time.time() - t0:.1f}s)",
              end="" if i < len(users) else "\n", file=sys.stderr, flush=True)
  print(f"wrote {len(users)} lines to {args.out} ({errors} errors)", file=sys.stderr)
  return 0 if not errors else 1


def cmd_serve(args) -> int:
  from serving import http  # pylint: disable=g-import-not-at-top
  http.serve(args.output_dir, host=args.host, port=args.port, version=args.version)
  return 0


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
  s.set_defaults(func=cmd_serve)
  return p


def main(argv: Optional[List[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
