"""BatchRecommender throughput and memory on real ml-100k.

  nice -n 15 .venv/bin/python benchmarks/batch_recommendations.py
      [--data ../shared/datasets/ml-100k] [--work /tmp/batch_recommendations]
      [--k 50] [--extra-users 1000,10000]
      [--out benchmarks/results/batch_recommendations.json]

* models: small retrieval and ranking models trained on ml-100k (80/20
  split, benchmarks/ml100k_data.py) with the trainers' run_fns through the
  helpers of benchmarks/retrieval_quality.py and ranking_quality.py (2
  epochs each: throughput does not depend on quality), laid out as pushed
  versions `<work>/serving/{retrieval,ranking}/1`;
* each case runs the component's executor (components/batch_recommender)
  in a fresh child process, as the pipeline does: PushedModel artifacts
  marked pushed, top-k of every known user (943) plus N synthetic unknown
  ids from a users_file (cold start), streamed to Parquet;
* measured per case: users per second (the recommend loop, model loading
  excluded), and the child's peak RSS (model loading included). Memory is
  bounded when the peak barely moves from 1k to 10k extra users; with
  --unstreamed-case a last case writes the same 10k users in one row group
  (no streaming) to show what buffering everything would cost.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "datasets", "ml-100k")
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "batch_recommendations.json")
TRAIN_CONFIG = {"epochs": 2}


def train_models(data: str, work: str) -> str:
  """Trains both models once (cached in work) and returns the serving dir."""
  serving = os.path.join(work, "serving")
  done = os.path.join(serving, "DONE")
  if os.path.exists(done):
    return serving
  from benchmarks import ml100k_data  # pylint: disable=g-import-not-at-top
  from benchmarks import ranking_quality  # pylint: disable=g-import-not-at-top
  from benchmarks import retrieval_quality  # pylint: disable=g-import-not-at-top
  prep = ml100k_data.prepare(os.path.abspath(data), os.path.join(work, "data"))
  catalogue_dir = os.path.join(work, "data", "catalogue")
  retrieval_quality.write_catalogue(prep["rows"]["train"] + prep["rows"]["eval"],
                                    catalogue_dir)
  t0 = time.time()
  rdir, _ = retrieval_quality.train_one(prep, catalogue_dir, work, 0, TRAIN_CONFIG)
  kdir = ranking_quality.train_once(prep, os.path.join(work, "ranking"),
                                    dict(TRAIN_CONFIG, seed=0))["serving_dir"]
  print(f"trained both models in {time.time() - t0:.0f}s", flush=True)
  if os.path.exists(serving):
    shutil.rmtree(serving)
  shutil.copytree(rdir, os.path.join(serving, "retrieval", "1"))
  shutil.copytree(kdir, os.path.join(serving, "ranking", "1"))
  open(done, "w").close()
  return serving


def child(serving: str, out_dir: str, users_file: str, k: int,
          chunk_users: int) -> dict:
  """One executor run (in this process); its counts and peak RSS."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.batch_recommender import executor as ex  # pylint: disable=g-import-not-at-top

  def artifact(cls, uri, **props):
    a = cls()
    a.uri = uri
    for key, value in props.items():
      (a.set_int_custom_property if isinstance(value, int)
       else a.set_string_custom_property)(key, value)
    return a

  def pushed(stage):
    return artifact(standard_artifacts.PushedModel, os.path.join(out_dir, stage),
                    pushed=1, pushed_destination=os.path.join(serving, stage, "1"))

  out = artifact(standard_artifacts.Examples, os.path.join(out_dir, "recommendations"))
  inputs = {ex.RETRIEVAL_MODEL_KEY: [artifact(standard_artifacts.Model, out_dir)],
            ex.RETRIEVAL_PUSHED_MODEL_KEY: [pushed("retrieval")],
            ex.RANKING_MODEL_KEY: [artifact(standard_artifacts.Model, out_dir)],
            ex.RANKING_PUSHED_MODEL_KEY: [pushed("ranking")]}
  t0 = time.time()
  ex.Executor().Do(inputs, {ex.RECOMMENDATIONS_KEY: [out]},
                   {ex.K_KEY: k, ex.N_CANDIDATES_KEY: 100, ex.USERS_FILE_KEY: users_file,
                    ex.SERVING_DIR_KEY: serving, ex.CHUNK_USERS_KEY: chunk_users,
                    ex.LOG_EVERY_KEY: 1000})
  props = {key: out.get_custom_property(key) for key in (
      "num_users", "num_known_users", "num_file_users", "num_rows",
      "seconds", "users_per_second")}
  props["total_seconds"] = round(time.time() - t0, 2)
  props["file_bytes"] = os.path.getsize(ex.output_file(out))
  props["peak_rss_mb"] = round(
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
  return props


def run_case(serving: str, work: str, extra_users: int, k: int,
             chunk_users: int) -> dict:
  name = f"extra{extra_users}_chunk{chunk_users}"
  case_dir = os.path.join(work, "cases", name)
  if os.path.exists(case_dir):
    shutil.rmtree(case_dir)
  os.makedirs(case_dir)
  users_file = ""
  if extra_users:
    users_file = os.path.join(case_dir, "users.txt")
    with open(users_file, "w") as f:
      for i in range(extra_users):
        f.write(f"bench-user-{i}\n")
  cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(
      {"serving": serving, "out_dir": case_dir, "users_file": users_file,
       "k": k, "chunk_users": chunk_users})]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"case {name} failed:\n{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result.update(extra_users=extra_users, chunk_users=chunk_users)
  return result


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default=DEFAULT_DATA)
  p.add_argument("--work", default="/tmp/batch_recommendations")
  p.add_argument("--k", type=int, default=50)
  p.add_argument("--extra-users", default="1000,10000",
                 help="comma-separated counts of synthetic users_file ids")
  p.add_argument("--chunk-users", type=int, default=1000)
  p.add_argument("--unstreamed-case", action="store_true",
                 help="also write the largest case in one row group")
  p.add_argument("--out", default=DEFAULT_OUT)
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(child(**json.loads(args.child))))
    return 0

  from benchmarks import serving_latency  # pylint: disable=g-import-not-at-top
  machine = serving_latency.machine_info()
  serving = train_models(args.data, args.work)
  extra = [int(x) for x in args.extra_users.split(",") if x.strip()]
  cases = [(0, args.chunk_users)] + [(n, args.chunk_users) for n in extra]
  if extra and args.unstreamed_case:
    cases.append((max(extra), max(extra) + 1000))  # one row group: not streamed
  results = []
  for n, chunk in cases:
    r = run_case(serving, args.work, n, args.k, chunk)
    print(f"extra users {n:>6}, chunk {chunk:>6}: {r['num_users']} users, "
          f"{r['users_per_second']} users/s, peak RSS {r['peak_rss_mb']} MB",
          flush=True)
    results.append(r)
  machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

  print(f"\nk={args.k}, n_candidates=100, catalogue 1,682 movies, "
        f"{machine['cpus']} cores, load {machine['loadavg_before']} → "
        f"{machine['loadavg_after']}")
  print(f"{'extra users':>11} {'chunk':>6} {'users':>6} {'rows':>8} {'users/s':>8} "
        f"{'peak RSS MB':>11} {'file MB':>8}")
  for r in results:
    print(f"{r['extra_users']:>11} {r['chunk_users']:>6} {r['num_users']:>6} "
          f"{r['num_rows']:>8} {r['users_per_second']:>8} {r['peak_rss_mb']:>11} "
          f"{r['file_bytes'] / 1e6:>8.2f}")
  streamed = [r for r in results if r["chunk_users"] == args.chunk_users]
  growth = streamed[-1]["peak_rss_mb"] - streamed[0]["peak_rss_mb"]
  print(f"peak RSS growth from {streamed[0]['num_users']} to "
        f"{streamed[-1]['num_users']} users (streamed): {growth:.1f} MB")
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": machine, "data": os.path.abspath(args.data),
      "train_config": TRAIN_CONFIG, "k": args.k, "n_candidates": 100,
      "cases": results, "streamed_peak_rss_growth_mb": round(growth, 1)}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
