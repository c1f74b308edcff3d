"""Latency of two-stage recommendations (serving/), in process and over HTTP.

  .venv/bin/python benchmarks/serving_latency.py --output-dir DIR
      [--requests 500] [--k 10] [--n-candidates 100] [--no-http]
      [--concurrency 1,8,32] [--concurrency-requests 400]
      [--server-workers 1] [--server-threads 4] [--no-concurrency]
      [--out benchmarks/results/serving_latency.json]

* in process: Recommender.recommend() for known users (ids from the
  retrieval model's seen table, cycled) and cold-start users (unknown ids
  with age/gender/occupation/zip), after a warm-up;
* batch: every known user once, one after another, as `recommend batch`
  does (users per second);
* HTTP: the FastAPI app (serving/http.py) under uvicorn on a loopback port,
  GET /recommend for known users and cold-start POSTs with features, timed
  by a client in the same process (so client and server share the cores).
* concurrency: a real `recommend serve` subprocess (--server-workers
  uvicorn processes, --server-threads model threads each) on a loopback
  port, and 1, 8 and 32 client threads in this process, each with its own
  keep-alive connection, sending GET /recommend for known users until
  --concurrency-requests requests are answered: p50/p99 latency, requests
  per second and non-200 answers per level (clients and server share the
  cores).
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
import signal
import socket
import subprocess
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


def concurrent_load(base_url: str, users, clients: int, requests: int, k: int,
                    n_candidates: int):
  """`requests` GET /recommend spread over `clients` threads (one keep-alive
  connection each): latency percentiles, throughput and non-200 answers."""
  import httpx  # pylint: disable=g-import-not-at-top
  latencies, failures = [], []
  lock = threading.Lock()
  counter = iter(range(requests))

  def client():
    with httpx.Client(base_url=base_url, timeout=120) as c:
      while True:
        with lock:
          i = next(counter, None)
        if i is None:
          return
        params = {"user_id": users[i % len(users)], "k": k,
                  "n_candidates": n_candidates}
        t = time.perf_counter()
        try:
          status = c.get("/recommend", params=params).status_code
        except httpx.HTTPError as e:
          status = type(e).__name__
        ms = (time.perf_counter() - t) * 1e3
        with lock:
          latencies.append(ms)
          if status != 200:
            failures.append(status)

  threads = [threading.Thread(target=client) for _ in range(clients)]
  t0 = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.perf_counter() - t0
  out = dict(_stats(latencies), clients=clients,
             requests_per_second=round(len(latencies) / wall, 1),
             seconds=round(wall, 2), non_200=len(failures))
  if failures:
    out["non_200_kinds"] = sorted({str(f) for f in failures})
  return out


def start_server(output_dir: str, workers: int, threads: int,
                 timeout: float = 300.0):
  """A `recommend serve` subprocess on a free loopback port, once /healthz
  answers 200: (process, base url)."""
  import httpx  # pylint: disable=g-import-not-at-top
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  proc = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, "-m", "serving.cli", "serve", "--output-dir", output_dir,
       "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
       "--threads", str(threads)],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  base = f"http://127.0.0.1:{port}"
  deadline = time.time() + timeout
  while True:
    if proc.poll() is not None:
      raise RuntimeError(f"recommend serve exited with {proc.returncode}")
    if time.time() > deadline:
      stop_server(proc)
      raise RuntimeError("recommend serve did not answer /healthz")
    try:
      if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
        return proc, base
    except httpx.TransportError:
      pass
    time.sleep(0.5)


def stop_server(proc) -> None:
  """SIGTERM by pid, SIGKILL after 60 s."""
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait(timeout=30)


def concurrency(output_dir: str, users, levels, requests: int, k: int,
                n_candidates: int, workers: int = 1, threads: int = 4):
  """concurrent_load at each level against one `recommend serve`."""
  proc, base = start_server(output_dir, workers, threads)
  try:
    concurrent_load(base, users, 1, 20, k, n_candidates)  # warm-up
    rows = [concurrent_load(base, users, c, requests, k, n_candidates)
            for c in levels]
  finally:
    stop_server(proc)
  return {"server": {"kind": "recommend serve subprocess, clients are threads "
                             "of the benchmark process",
                     "workers": workers, "threads": threads},
          "levels": rows}


def run(output_dir: str, requests: int = 500, k: int = 10,
        n_candidates: int = 100, seed: int = 0, http: bool = True,
        concurrency_levels=(), concurrency_requests: int = 400,
        server_workers: int = 1, server_threads: int = 4):
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
  if concurrency_levels:
    result["concurrency"] = concurrency(
        output_dir, users, concurrency_levels, concurrency_requests, k,
        n_candidates, server_workers, server_threads)
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
  if "concurrency" in result:
    srv = result["concurrency"]["server"]
    print(f"concurrent clients against `recommend serve` ({srv['workers']} "
          f"worker(s), {srv['threads']} model threads each):")
    print(f"{'clients':>8} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
          f"{'non-200':>8}")
    for row in result["concurrency"]["levels"]:
      print(f"{row['clients']:>8} {row['n']:>6} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['requests_per_second']:>8.1f} "
            f"{row['non_200']:>8}")
  t = result["target"]
  print(f"target p99 ≤ {t['p99_ms']:.0f} ms (in-process, known users): "
        f"{'met' if t['met'] else 'NOT met'} ({t['in_process_known_user_p99_ms']} ms)"
        + (f"; over HTTP {'met' if t['met_over_http'] else 'NOT met'} "
           f"(worst p99 {t['http_worst_p99_ms']} ms)" if "met_over_http" in t else ""))
  m = result["machine"]
  print(f"{m['cpus']} cores, load {m['loadavg_before']} → {m['loadavg_after']}")


def _levels(text: str):
  try:
    levels = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected client counts like 1,8,32, got {text!r}") from None
  if not levels or min(levels) < 1:
    raise argparse.ArgumentTypeError(f"client counts must be >= 1, got {text!r}")
  return levels


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--output-dir", required=True,
                 help="run output dir (with serving/) or serving dir")
  p.add_argument("--requests", type=int, default=500)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--n-candidates", type=int, default=100)
  p.add_argument("--no-http", action="store_true", help="skip the HTTP cases")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--concurrency", type=_levels, default=[1, 8, 32],
                 help="concurrent client counts (default 1,8,32)")
  p.add_argument("--concurrency-requests", type=int, default=400,
                 help="requests per concurrency level")
  p.add_argument("--server-workers", type=int, default=1,
                 help="`recommend serve --workers` of the concurrency server")
  p.add_argument("--server-threads", type=int, default=4,
                 help="`recommend serve --threads` of the concurrency server")
  p.add_argument("--no-concurrency", action="store_true",
                 help="skip the concurrent-clients cases")
  p.add_argument("--out", "--json-out", dest="out", default=os.path.join(
      ROOT, "benchmarks", "results", "serving_latency.json"))
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  result = run(args.output_dir, args.requests, args.k, args.n_candidates,
               args.seed, http=not args.no_http,
               concurrency_levels=() if args.no_concurrency else args.concurrency,
               concurrency_requests=args.concurrency_requests,
               server_workers=args.server_workers,
               server_threads=args.server_threads)
  print_table(result)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
