"""Latency of two-stage recommendations (serving/), in process and over HTTP.

  .venv/bin/python benchmarks/serving_latency.py --output-dir DIR
      [--requests 500] [--k 10] [--n-candidates 100] [--no-http]
      [--out benchmarks/results/serving_latency.json]

* in process: Recommender.recommend() for known users (ids from the
  retrieval model's seen table, cycled) and cold-start users (unknown ids
  with age/gender/occupation/zip), after a warm-up;
* batch: every known user once, one after another, as `recommend batch`
  does (users per second);
* HTTP: the FastAPI app (serving/http.py) under uvicorn on a loopback port,
  GET /recommend for known users and cold-start POSTs with features, timed
  by a client in the same process (so client and server share the cores).
p50/p90/p99/max per case, checked against the serving target (p99 ≤ 20 ms
for top-10 over the whole catalogue on 2 cores). Prints a table and writes
JSON with model versions and machine info.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import socket
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top
import numpy as np  # noqa: E402

from serving import recommender as rec_lib  # noqa: E402

OCCUPATIONS = ["writer", "student", "programmer", "artist", "other"]
TARGET_P99_MS = 20.0


def _stats(ms):
  ms = np.asarray(ms)
  return {"n": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 3),
          "p90_ms": round(float(np.percentile(ms, 90)), 3),
          "p99_ms": round(float(np.percentile(ms, 99)), 3),
          "max_ms": round(float(ms.max()), 3)}


def _cold_features(rng):
  return {"age": rng.randint(15, 70), "gender": rng.choice("MF"),
          "occupation": rng.choice(OCCUPATIONS),
          "zip": f"{rng.randint(0, 99999):05d}"}


def machine_info():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {"cpus": os.cpu_count(), "platform": platform.platform(),
          "processor": platform.processor() or platform.machine(),
          "python": platform.python_version(), "numpy": np.__version__,
          "tensorflow": tf.__version__,
          "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def http_latency(rec, users, requests: int, k: int, n_candidates: int, rng):
  """GET (known users) and POST (cold start) latency against a local server."""
  import httpx  # pylint: disable=g-import-not-at-top
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving import http  # pylint: disable=g-import-not-at-top
  port = _free_port()
  server = uvicorn.Server(uvicorn.Config(http.create_app(rec), host="127.0.0.1",
                                         port=port, log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + 60
  while not server.started:
    if time.time() > deadline or not thread.is_alive():
      raise RuntimeError("uvicorn did not start")
    time.sleep(0.05)
  known, cold = [], []
  try:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
      for u in users[:20]:  # warm-up (connection, first requests)
        c.get("/recommend", params={"user_id": u, "k": k}).raise_for_status()
      for i in range(requests):
        params = {"user_id": users[i % len(users)], "k": k,
                  "n_candidates": n_candidates}
        t = time.perf_counter()
        c.get("/recommend", params=params).raise_for_status()
        known.append((time.perf_counter() - t) * 1e3)
      for i in range(requests):
        body = {"user_id": f"http-cold-{i}", "k": k, "n_candidates": n_candidates,
                "features": _cold_features(rng)}
        t = time.perf_counter()
        c.post("/recommend", json=body).raise_for_status()
        cold.append((time.perf_counter() - t) * 1e3)
  finally:
    server.should_exit = True
    thread.join(10)
  return {"known_user_get": _stats(known), "cold_start_post": _stats(cold)}


def run(output_dir: str, requests: int = 500, k: int = 10,
        n_candidates: int = 100, seed: int = 0, http: bool = True):
  rng = random.Random(seed)
  machine = machine_info()
  t0 = time.time()
  rec = rec_lib.Recommender(output_dir, check_interval=3600)
  load_s = time.time() - t0
  m = rec._models  # pylint: disable=protected-access
  users = sorted(m.seen.user_ids()) or ["1"]
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
    feats = _cold_features(rng)
    t = time.perf_counter()
    rec.recommend(f"cold-{i}", k=k, n_candidates=n_candidates, features=feats)
    cold.append((time.perf_counter() - t) * 1e3)
  t = time.perf_counter()
  for u in users:
    rec.recommend(u, k=k, n_candidates=n_candidates)
  batch_s = time.perf_counter() - t
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": machine, "serving_dir": rec.serving_dir,
      "model_versions": rec.versions, "catalogue_size": rec.catalogue_size,
      "known_users": len(m.seen), "k": k, "n_candidates": n_candidates,
      "load_seconds": round(load_s, 2),
      "in_process": {"known_user": _stats(known), "cold_start": _stats(cold)},
      "batch": {"users": len(users), "seconds": round(batch_s, 2),
                "users_per_second": round(len(users) / batch_s, 1)}}
  if http:
    result["http"] = http_latency(rec, users, requests, k, n_candidates, rng)
  p99 = result["in_process"]["known_user"]["p99_ms"]
  result["target"] = {"p99_ms": TARGET_P99_MS, "in_process_known_user_p99_ms": p99,
                      "met": bool(p99 <= TARGET_P99_MS)}
  if http:
    worst = max(s["p99_ms"] for s in result["http"].values())
    result["target"]["http_worst_p99_ms"] = worst
    result["target"]["met_over_http"] = bool(worst <= TARGET_P99_MS)
  result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
  return result


def print_table(result) -> None:
  print(f"models {result['model_versions']}, catalogue {result['catalogue_size']}, "
        f"k={result['k']}, N={result['n_candidates']}, load {result['load_seconds']}s")
  print(f"{'case':<26} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
  rows = [("in-process known user", result["in_process"]["known_user"]),
          ("in-process cold start", result["in_process"]["cold_start"])]
  if "http" in result:
    rows += [("HTTP GET known user", result["http"]["known_user_get"]),
             ("HTTP POST cold start", result["http"]["cold_start_post"])]
  for name, s in rows:
    print(f"{name:<26} {s['n']:>5} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} "
          f"{s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}")
  b = result["batch"]
  print(f"batch: {b['users']} users in {b['seconds']}s = {b['users_per_second']} users/s")
  t = result["target"]
  print(f"target p99 ≤ {t['p99_ms']:.0f} ms (in-process, known users): "
        f"{'met' if t['met'] else 'NOT met'} ({t['in_process_known_user_p99_ms']} ms)"
        + (f"; over HTTP {'met' if t['met_over_http'] else 'NOT met'} "
           f"(worst p99 {t['http_worst_p99_ms']} ms)" if "met_over_http" in t else ""))
  m = result["machine"]
  print(f"{m['cpus']} cores, load {m['loadavg_before']} → {m['loadavg_after']}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--output-dir", required=True,
                 help="run output dir (with serving/) or serving dir")
  p.add_argument("--requests", type=int, default=500)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--n-candidates", type=int, default=100)
  p.add_argument("--no-http", action="store_true", help="skip the HTTP cases")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", "--json-out", dest="out", default=os.path.join(
      ROOT, "benchmarks", "results", "serving_latency.json"))
  args = p.parse_args(argv)
  result = run(args.output_dir, args.requests, args.k, args.n_candidates,
               args.seed, http=not args.no_http)
  print_table(result)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
