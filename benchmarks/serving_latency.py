"""Latency of Recommender.recommend() (serving/recommender.py), in process.

  python -m benchmarks.serving_latency --output-dir DIR [--requests 500]
      [--k 10] [--n-candidates 100] [--json-out FILE]

Measures p50/p90/p99/max over requests for known users (ids from the
retrieval model's seen.jsonl, cycled) and for cold-start users (unknown ids
with age/gender/occupation/zip), after a warm-up. Prints a table and JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import common  # noqa: F401  pylint: disable=unused-import

import numpy as np

from serving import recommender as rec_lib

OCCUPATIONS = ["writer", "student", "programmer", "artist", "other"]


def _stats(ms):
  ms = np.asarray(ms)
  return {"n": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 3),
          "p90_ms": round(float(np.percentile(ms, 90)), 3),
          "p99_ms": round(float(np.percentile(ms, 99)), 3),
          "max_ms": round(float(ms.max()), 3)}


def run(output_dir: str, requests: int = 500, k: int = 10,
        n_candidates: int = 100, seed: int = 0):
  rng = random.Random(seed)
  t0 = time.time()
  rec = rec_lib.Recommender(output_dir, check_interval=3600)
  load_s = time.time() - t0
  m = rec._models  # pylint: disable=protected-access
  users = sorted(m.seen) or ["1"]
  rng.shuffle(users)
  for u in users[:20]:  # warm-up
    rec.recommend(u, k=k, n_candidates=n_candidates)
  known, cold = [], []
  for i in range(requests):
    u = users[i % len(users)]
    t = time.perf_counter()
    rec.recommend(u, k=k, n_candidates=n_candidates)
    known.append((time.perf_counter() - t) * 1e3)
  for i in range(requests):
    feats = {"age": rng.randint(15, 70), "gender": rng.choice("MF"),
             "occupation": rng.choice(OCCUPATIONS),
             "zip": f"{rng.randint(0, 99999):05d}"}
    t = time.perf_counter()
    rec.recommend(f"cold-{i}", k=k, n_candidates=n_candidates, features=feats)
    cold.append((time.perf_counter() - t) * 1e3)
  return {"serving_dir": rec.serving_dir, "model_versions": rec.versions,
          "catalogue_size": rec.catalogue_size, "k": k,
          "n_candidates": n_candidates, "load_seconds": round(load_s, 2),
          "known_user": _stats(known), "cold_start": _stats(cold)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--output-dir", required=True)
  p.add_argument("--requests", type=int, default=500)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--n-candidates", type=int, default=100)
  p.add_argument("--json-out", default=None)
  args = p.parse_args(argv)
  result = run(args.output_dir, args.requests, args.k, args.n_candidates)
  print(f"models {result['model_versions']}, catalogue {result['catalogue_size']}, "
        f"k={args.k}, N={args.n_candidates}, load {result['load_seconds']}s")
  print(f"{'case':<12} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
  for case in ("known_user", "cold_start"):
    s = result[case]
    print(f"{case:<12} {s['n']:>5} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} "
          f"{s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}")
  text = json.dumps(result, indent=1)
  print(text)
  if args.json_out:
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
      f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
