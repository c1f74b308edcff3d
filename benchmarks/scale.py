"""Scale benchmark: the real main job at several data sizes, cost against N.

    nice -n 15 .venv/bin/python -m benchmarks.scale --ratings 1000000,3000000,10000000
        [--work-dir /tmp/tfx-scale] [--seed 0] [--runner-args "--beam-args ..."]
        [--out benchmarks/results/scale.json] [--label scale]

For each N: generates ml-25m-format data of N ratings
(benchmarks/synthetic_ml25m.py; reused when the folder already holds that N
and seed), then runs `local_runner.py --data <that folder> --output-dir
<fresh folder> --force` as a subprocess, as a user would, and records

* per component (the runner's progress lines "▶ X ..." / "✔ X done in
  12.3s"; LocalDagRunner runs one component at a time): wall time, CPU time
  and peak RSS of the whole process tree while it ran;
* for the whole run: wall time, CPU time (user + system of the runner and
  every descendant, from wait4's rusage), CPU / wall (2.0 = both cores
  busy), peak RSS of the process tree (the sum over live processes, sampled
  every 0.5 s from /proc) and of its largest process.
* the quality the run measured (its evaluators' metrics.json): retrieval
  hit@100 excluding seen against popularity, per-user nDCG@10 of two-stage,
  retrieval-only, EASE and most-popular, RMSE against the user+item bias.

The JSON (default benchmarks/results/scale.json) holds every run and a fit
of cost against N per component: the log-log slope of wall and CPU time
(1.0 = linear in the data) and the per-rating cost at the largest N over
that at the smallest. A table is printed. `--label smoke` marks a run at
tiny N that only checks this script, not a scale result.

With `--data DIR` (a MovieLens folder, e.g. the real ml-100k) the main job
runs `--repeats` times on that folder instead (default
benchmarks/results/main_job_<folder>.json): the job's wall time on real data,
with its spread, rather than a single run.

    nice -n 15 .venv/bin/python -m benchmarks.scale --data ../shared/datasets/ml-100k --repeats 3

Data and outputs go to --work-dir (outside the repository by default); each
run's console output is kept there as run-<N>.log.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import synthetic_ml25m  # noqa: E402  pylint: disable=g-import-not-at-top

DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "scale.json")
DEFAULT_WORK_DIR = os.path.join("/tmp", "tfx-scale")
SAMPLE_SECONDS = 0.5
_START = re.compile(r"\] ▶ (\S+) \.\.\.")
_DONE = re.compile(r"\] ✔ (\S+) done in ([0-9.]+)s( \(cached\))?")
_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the process tree, from /proc ---------------------------------------------
def _children_map() -> Dict[int, List[int]]:
  children: Dict[int, List[int]] = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat") as f:
        stat = f.read()
    except OSError:
      continue
    ppid = int(stat[stat.rindex(")") + 2:].split()[1])
    children.setdefault(ppid, []).append(int(name))
  return children


def process_tree(pid: int) -> List[int]:
  """pid and all its descendants alive now."""
  children, out, todo = _children_map(), [], [pid]
  while todo:
    p = todo.pop()
    out.append(p)
    todo.extend(children.get(p, []))
  return out


def tree_usage(pid: int):
  """(CPU seconds, RSS bytes summed, largest RSS) of a live process tree.

  CPU counts each live process's user + system time and that of its reaped
  children (cutime, cstime), so work of finished workers is not lost.
  """
  cpu, rss, largest = 0.0, 0, 0
  for p in process_tree(pid):
    try:
      with open(f"/proc/{p}/stat") as f:
        stat = f.read()
      with open(f"/proc/{p}/statm") as f:
        pages = int(f.read().split()[1])
    except OSError:
      continue
    fields = stat[stat.rindex(")") + 2:].split()
    cpu += sum(int(x) for x in fields[11:15]) / _CLK  # utime stime cutime cstime
    rss += pages * _PAGE
    largest = max(largest, pages * _PAGE)
  return cpu, rss, largest


class Monitor:
  """Samples a process tree; splits its usage by the runner's components."""

  def __init__(self, pid: int):
    self.pid = pid
    self.peak_rss = self.peak_single_rss = 0
    self.components: Dict[str, Dict[str, float]] = {}
    self._current: Optional[str] = None
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._cpu = 0.0
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _sample(self) -> None:
    cpu, rss, largest = tree_usage(self.pid)
    with self._lock:
      self._cpu = max(self._cpu, cpu)
      self.peak_rss = max(self.peak_rss, rss)
      self.peak_single_rss = max(self.peak_single_rss, largest)
      if self._current:
        c = self.components[self._current]
        c["peak_rss_bytes"] = max(c["peak_rss_bytes"], rss)

  def _run(self) -> None:
    while not self._stop.wait(SAMPLE_SECONDS):
      self._sample()

  def line(self, text: str) -> None:
    """Feeds one console line of the runner."""
    start, done = _START.search(text), _DONE.search(text)
    if not (start or done):
      return
    self._sample()
    with self._lock:
      if start:
        self._current = start.group(1)
        self.components[self._current] = {
            "wall_seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_bytes": 0,
            "cached": False, "_cpu0": self._cpu}
      elif done.group(1) in self.components:
        c = self.components[done.group(1)]
        c["wall_seconds"] = float(done.group(2))
        c["cpu_seconds"] = round(self._cpu - c.pop("_cpu0"), 2)
        c["cached"] = bool(done.group(3))
        self._current = None

  def stop(self) -> None:
    self._stop.set()
    self._thread.join()
    for c in self.components.values():
      c.pop("_cpu0", None)


# -- one run ------------------------------------------------------------------
def prepare_data(num_ratings: int, work_dir: str, seed: int) -> Dict:
  """Generates (or reuses) the data of N ratings; returns its summary."""
  data_dir = os.path.join(work_dir, f"data-{num_ratings}-seed{seed}")
  summary_path = os.path.join(data_dir, "synthetic.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    if summary.get("ratings") == num_ratings and summary.get("seed") == seed:
      summary["reused"] = True
      return dict(summary, data_dir=data_dir)
  shutil.rmtree(data_dir, ignore_errors=True)
  t0 = time.time()
  summary = synthetic_ml25m.generate(num_ratings, data_dir, seed)
  summary["wall_seconds"] = round(time.time() - t0, 1)
  return dict(summary, data_dir=data_dir, reused=False)


def run_pipeline(data_dir: str, output_dir: str, log_path: str,
                 runner_args: List[str]) -> Dict:
  """local_runner.py on data_dir into a fresh output_dir, measured."""
  shutil.rmtree(output_dir, ignore_errors=True)
  cmd = [sys.executable, os.path.join(REPO, "local_runner.py"), "--data",
         data_dir, "--output-dir", output_dir, "--force"] + runner_args
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1)
  monitor = Monitor(proc.pid)
  with open(log_path, "w") as log:
    log.write(" ".join(cmd) + "\n")
    for text in proc.stdout:
      log.write(text)
      log.flush()
      monitor.line(text)
      if _START.search(text) or _DONE.search(text):
        print("   " + text.rstrip(), flush=True)
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.time() - t0
  monitor.stop()
  proc.returncode = os.waitstatus_to_exitcode(status)
  cpu = usage.ru_utime + usage.ru_stime
  return {
      "command": cmd[1:], "exit_code": proc.returncode,
      "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
      "cpu_per_wall": round(cpu / wall, 2) if wall else None,
      "peak_rss_bytes": monitor.peak_rss,
      "peak_single_process_rss_bytes": max(monitor.peak_single_rss,
                                           usage.ru_maxrss * 1024),
      "components": monitor.components, "log": log_path,
  }


def describe_data(data_dir: str) -> Dict:
  """Ratings, users and movies of a MovieLens folder (u.data, ratings.dat
  or ratings.csv), counted from its ratings file."""
  for name, sep, header in (("u.data", "\t", False), ("ratings.dat", "::", False),
                            ("ratings.csv", ",", True)):
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      break
  else:
    raise FileNotFoundError(f"{data_dir} has no u.data, ratings.dat or ratings.csv")
  users, movies, n = set(), set(), 0
  with open(path, encoding="latin-1") as f:
    if header:
      next(f, None)
    for line in f:
      parts = line.rstrip("\n").split(sep)
      if len(parts) >= 2:
        users.add(parts[0])
        movies.add(parts[1])
        n += 1
  return {"ratings": n, "users": len(users), "movies": len(movies),
          "data_dir": os.path.abspath(data_dir), "ratings_file": name}


def quality(output_dir: str) -> Dict:
  """What the run's evaluators measured (their metrics.json, newest run):
  retrieval hit@100 excluding seen against popularity, the per-user top-10
  of two-stage, retrieval-only, most-popular and EASE, rating RMSE against
  the user+item bias, and each stage's blessing. Quality at scale is read
  beside the cost, from the same run."""
  # Imported here: the executors bring TensorFlow, which the runs do not need.
  from components.retrieval_evaluator import executor as retrieval_eval  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import executor as two_stage_eval  # pylint: disable=g-import-not-at-top
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  root = configs.output_paths(output_dir)["pipeline_root"]

  def newest(component: str, file_name: str) -> Optional[Dict]:
    paths = glob.glob(os.path.join(root, component, "evaluation", "*", file_name))
    paths.sort(key=lambda p: int(os.path.basename(os.path.dirname(p))))
    if not paths:
      return None
    with open(paths[-1]) as f:
      return json.load(f)

  out: Dict = {}
  ret = newest("RetrievalEvaluator", retrieval_eval.METRICS_FILE_NAME)
  if ret:
    b = ret["blessing"]
    out["retrieval"] = {"metric": b["metric"], "model": b["model"],
                        "popularity": b["popularity"], "blessed": b["blessed"]}
  two = newest("TwoStageEvaluator", two_stage_eval.METRICS_FILE_NAME)
  if two:
    out["two_stage"] = {row: two["rows"][row] for row in two_stage_eval.ROWS
                        if row in two["rows"]}
    out["rating"] = two.get("rating")
    out["ranking_blessed"] = two["blessing"]["blessed"]
  return out


def quality_table(runs: List[Dict]) -> str:
  """Quality per N: what the user receives, beside the simple models."""
  head = ["ratings", "retrieval hit@100 excl.", "popularity",
          "nDCG@10 two-stage", "retrieval-only", "EASE", "most-popular",
          "RMSE", "user+item bias"]
  rows = [head]
  f = lambda x: "-" if x is None else f"{x:.4f}"
  for r in runs:
    q = r.get("quality") or {}
    ret, two, rating = q.get("retrieval", {}), q.get("two_stage", {}), q.get("rating") or {}
    nd = lambda row: (two.get(row) or {}).get("ndcg@10")  # None: skipped (EASE)
    rows.append([f"{r['ratings']:,}", f(ret.get("model")), f(ret.get("popularity")),
                 f(nd("two_stage")), f(nd("retrieval_only")), f(nd("ease")),
                 f(nd("most_popular")), f(rating.get("rmse")),
                 f(rating.get("user_item_bias_rmse"))])
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths))
                   for row in rows)


# -- the fit ------------------------------------------------------------------
def loglog_slope(ns: List[float], costs: List[float]) -> Optional[float]:
  """Least-squares slope of log(cost) on log(N); None below two points."""
  points = [(math.log(n), math.log(c)) for n, c in zip(ns, costs) if c > 0]
  if len(points) < 2 or len({x for x, _ in points}) < 2:
    return None
  mx = sum(x for x, _ in points) / len(points)
  my = sum(y for _, y in points) / len(points)
  sxx = sum((x - mx) ** 2 for x, _ in points)
  return round(sum((x - mx) * (y - my) for x, y in points) / sxx, 3)


def fit(runs: List[Dict]) -> Dict[str, Dict]:
  """Per component and for the whole run: slopes and per-rating cost ratio."""
  ok = sorted((r for r in runs if r["pipeline"]["exit_code"] == 0),
              key=lambda r: r["ratings"])
  series: Dict[str, Dict[str, List[float]]] = {}

  def add(name, n, wall, cpu, rss):
    s = series.setdefault(name, {"n": [], "wall": [], "cpu": [], "rss": []})
    s["n"].append(n)
    s["wall"].append(wall)
    s["cpu"].append(cpu)
    s["rss"].append(rss)

  for r in ok:
    p = r["pipeline"]
    add("whole run", r["ratings"], p["wall_seconds"], p["cpu_seconds"],
        p["peak_rss_bytes"])
    for name, c in p["components"].items():
      if not c["cached"]:
        add(name, r["ratings"], c["wall_seconds"], c["cpu_seconds"],
            c["peak_rss_bytes"])
  out = {}
  for name, s in series.items():
    if len(s["n"]) < 2:
      continue
    ratio = lambda k: round((s[k][-1] / s["n"][-1]) / (s[k][0] / s["n"][0]),
                            2) if s[k][0] > 0 else None
    out[name] = {
        "ratings": s["n"],
        "wall_slope": loglog_slope(s["n"], s["wall"]),
        "cpu_slope": loglog_slope(s["n"], s["cpu"]),
        "peak_rss_slope": loglog_slope(s["n"], s["rss"]),
        "per_rating_wall_ratio": ratio("wall"),
        "per_rating_cpu_ratio": ratio("cpu"),
    }
  return out


def table(runs: List[Dict], slopes: Dict[str, Dict]) -> str:
  """Components down, N across: wall s / CPU s (peak RSS GiB), then slopes."""
  ns = [r["ratings"] for r in runs]
  names: List[str] = []
  for r in runs:
    names += [n for n in r["pipeline"]["components"] if n not in names]
  head = ["component"] + [r.get("name") or f"{n:,}" for r, n in zip(runs, ns)] + [
      "slope wall/cpu"]
  rows = [head]
  gb = lambda b: f"{b / 2**30:.2f}"
  for name in names + ["whole run"]:
    cells = [name]
    for r in runs:
      p = r["pipeline"]
      c = p if name == "whole run" else p["components"].get(name)
      if c is None:
        cells.append("-")
      else:
        cells.append(f"{c['wall_seconds']:.0f}s / {c['cpu_seconds']:.0f}s "
                     f"({gb(c['peak_rss_bytes'])} GiB)"
                     + (" cached" if c.get("cached") else ""))
    s = slopes.get(name, {})
    cells.append(f"{s.get('wall_slope')} / {s.get('cpu_slope')}" if s else "-")
    rows.append(cells)
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths))
                   for row in rows)


def _machine() -> Dict:
  mem = 0
  with open("/proc/meminfo") as f:
    for text in f:
      if text.startswith("MemTotal:"):
        mem = int(text.split()[1]) * 1024
  return {"cpus": os.cpu_count(), "memory_bytes": mem,
          "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
          "niceness": os.nice(0)}


def main(argv: Optional[List[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--ratings", default="1000000,3000000,10000000",
                 help="comma-separated N (e.g. 1000000,3000000,10000000)")
  p.add_argument("--work-dir", default=DEFAULT_WORK_DIR,
                 help="data and pipeline outputs (not in the repository)")
  p.add_argument("--seed", type=int, default=0, help="of the generated data")
  p.add_argument("--runner-args", default="",
                 help="extra local_runner.py arguments, e.g. "
                      "'--retrieval-epochs 1 --no-batch-recommendations'")
  p.add_argument("--out", default=DEFAULT_OUT)
  p.add_argument("--label", default="scale",
                 help="'scale' for a real result, 'smoke' for a check at "
                      "tiny N")
  p.add_argument("--keep-outputs", action="store_true",
                 help="keep each run's pipeline output folder")
  p.add_argument("--data", default=None,
                 help="run on this MovieLens folder (e.g. ../shared/datasets/"
                      "ml-100k) instead of generated data")
  p.add_argument("--repeats", type=int, default=3, help="runs on --data")
  args = p.parse_args(argv)
  if args.data:
    return main_on_data(args)
  ns = [int(float(x)) for x in args.ratings.split(",") if x.strip()]
  os.makedirs(args.work_dir, exist_ok=True)
  result = {
      "benchmark": "benchmarks/scale.py", "label": args.label,
      "note": ("SMOKE RUN at tiny N: checks that the benchmark works; not a "
               "scale result" if args.label == "smoke" else
               "the main job (local_runner.py, default settings unless "
               "runner_args) on generated ml-25m-format data"),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": _machine(), "runner_args": args.runner_args, "runs": [],
  }
  extra = shlex.split(args.runner_args or "")
  for n in ns:
    print(f"== {n:,} ratings", flush=True)
    data = prepare_data(n, args.work_dir, args.seed)
    print(f"   data: {data['users']:,} users, {data['movies']:,} movies "
          f"({'reused' if data['reused'] else str(data['wall_seconds']) + ' s'})",
          flush=True)
    out_dir = os.path.join(args.work_dir, f"out-{n}")
    run = run_pipeline(data["data_dir"], out_dir,
                       os.path.join(args.work_dir, f"run-{n}.log"), extra)
    measured = quality(out_dir) if run["exit_code"] == 0 else {}
    if not args.keep_outputs:
      shutil.rmtree(out_dir, ignore_errors=True)
    print(f"   exit {run['exit_code']}, {run['wall_seconds']:.0f} s wall, "
          f"{run['cpu_seconds']:.0f} s CPU, peak RSS "
          f"{run['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    result["runs"].append({
        "ratings": n, "users": data["users"], "movies": data["movies"],
        "data": {k: data[k] for k in ("seed", "ratings_per_user",
                                      "rated_movies", "reused")
                 } | {"generate_seconds": data.get("wall_seconds")},
        "pipeline": run, "quality": measured})
    result["fit"] = fit(result["runs"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:  # after every N: a partial result survives
      json.dump(result, f, indent=2)
  print()
  print(table(result["runs"], result["fit"]))
  print()
  print(quality_table(result["runs"]))
  print(f"\nWrote {args.out}")
  return 0 if all(r["pipeline"]["exit_code"] == 0 for r in result["runs"]) else 1


def main_on_data(args) -> int:
  """`--repeats` runs of the main job on one folder; mean and spread."""
  data = describe_data(args.data)
  folder = os.path.basename(os.path.normpath(args.data))
  out = args.out if args.out != DEFAULT_OUT else os.path.join(
      REPO, "benchmarks", "results", f"main_job_{folder}.json")
  os.makedirs(args.work_dir, exist_ok=True)
  extra = shlex.split(args.runner_args or "")
  result = {
      "benchmark": "benchmarks/scale.py --data", "label": f"main_job_{folder}",
      "note": (f"the main job (local_runner.py --data <{folder}>, default "
               "settings unless runner_args, a fresh output folder and "
               "--force each run), repeated"),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": _machine(), "runner_args": args.runner_args,
      "data": {k: data[k] for k in ("ratings", "users", "movies", "ratings_file")},
      "runs": []}
  for i in range(args.repeats):
    print(f"== run {i + 1}/{args.repeats} on {data['data_dir']} "
          f"({data['ratings']:,} ratings)", flush=True)
    out_dir = os.path.join(args.work_dir, f"out-{folder}")
    run = run_pipeline(data["data_dir"], out_dir,
                       os.path.join(args.work_dir, f"run-{folder}-{i + 1}.log"), extra)
    shutil.rmtree(out_dir, ignore_errors=True)
    print(f"   exit {run['exit_code']}, {run['wall_seconds']:.0f} s wall, "
          f"{run['cpu_seconds']:.0f} s CPU", flush=True)
    result["runs"].append({"name": f"run {i + 1}", "ratings": data["ratings"],
                           "users": data["users"], "movies": data["movies"],
                           "pipeline": run})
  walls = [r["pipeline"]["wall_seconds"] for r in result["runs"]
           if r["pipeline"]["exit_code"] == 0]
  if walls:
    mean = sum(walls) / len(walls)
    result["wall_seconds"] = {
        "mean": round(mean, 1), "min": min(walls), "max": max(walls),
        "std": round(math.sqrt(sum((w - mean) ** 2 for w in walls) / len(walls)), 1)}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print()
  print(table(result["runs"], {}))
  if walls:
    w = result["wall_seconds"]
    print(f"\nwhole run: {w['mean']:.0f} s mean ({w['min']:.0f}-{w['max']:.0f} s) "
          f"over {len(walls)} runs")
  print(f"Wrote {out}")
  return 0 if len(walls) == len(result["runs"]) else 1


if __name__ == "__main__":
  sys.exit(main())
