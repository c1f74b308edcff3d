"""Two-stage quality on real ml-100k: what `recommend` returns, per user,
beside most-popular, EASE and implicit ALS on the same split.

  nice -n 15 .venv/bin/python benchmarks/two_stage_quality.py [--seeds 3 | --quick]
      [--retrieval-config '{"epochs": 8}'] [--ranking-config '{"epochs": 4}']
      [--k 10] [--candidates 100] [--ease-lambda 500] [--skip-ease] [--skip-als]
      [--out benchmarks/results/two_stage_quality.json]

Why: both models pass their own gates (hit@100, RMSE) while the list a user
receives can be worse than most-popular (issue 10). This measures the list.

* data: ml-100k read, split (random 80/20 by the pipeline's stable hash of
  (user_id, movie_id)) and transformed by the real preprocessing_fn with TFT
  Beam, cached (benchmarks/ml100k_data.py); the catalogue is every movie
  (benchmarks/retrieval_quality.py's write_catalogue);
* models, once per seed: trainer_modules.retrieval.run_fn and
  trainer_modules.ranking.run_fn with their defaults plus the JSON overrides
  (the helpers of retrieval_quality.py / ranking_quality.py);
* rows, per eval user (relevant = the user's eval movies; training-seen
  movies excluded everywhere):
  - two_stage: `Recommender.from_model_dirs(retrieval, ranking).recommend(
    user, k, n_candidates)`, exactly what serving returns;
  - retrieval_only: the same without a ranking model (retrieval order);
  - most_popular (training counts, ties by movie order), ease
    (components/two_stage_evaluator/ease.py) and als (`implicit`'s CPU ALS,
    confidence 1 + alpha·x; one BLAS thread as implicit recommends);
    most_popular and ease are deterministic and fitted once, als per seed;
* metrics (components/two_stage_evaluator/topk.py, MS Recommenders
  definitions): precision/recall/nDCG/MAP@k, and hit@100 / recall@100 for the
  rows that produce a full-catalogue ranking (retrieval_only's top-100 is
  recommend(k=100, n_candidates=100)); the ranking model's test RMSE through
  its serving_default on the eval rows (with their timestamp, and without it
  as serving sends requests today) beside the user+item bias baseline
  (trainer_modules/baselines.py); fit/train seconds per row, wall time.
Prints a table (mean ± std over seeds) and writes JSON with per-seed values
and the configs used.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top
import numpy as np  # noqa: E402

from benchmarks import ml100k_data  # noqa: E402
from benchmarks import ranking_quality  # noqa: E402
from common import features as F  # noqa: E402
from trainer_modules import ease as ease_lib  # noqa: E402
from components.two_stage_evaluator import topk  # noqa: E402

BIG_K = 100  # hit@100 / recall@100, as the retrieval evaluator
MODEL_ROWS = ("two_stage", "retrieval_only")
ALS_DEFAULTS = {"factors": 64, "regularization": 50.0, "alpha": 10.0,
                "iterations": 15}
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "two_stage_quality.json")


# ---------------------------------------------------------------------------
# The evaluation problem in index form (tested in tests/test_two_stage_metrics.py).

def index_problem(train: Sequence[Mapping], evals: Sequence[Mapping],
                  movie_ids: Sequence[str]) -> Dict[str, object]:
  """Users, training matrix and relevant sets of a split.

  Returns users (every user with a training or eval row, sorted), eval_users
  (users with eval rows), train_matrix (CSR [users, movies] of training
  pairs), eval_rows (its rows for eval_users: what is excluded) and relevant
  (per eval user, the eval movies not rated in training).
  """
  col = {m: i for i, m in enumerate(movie_ids)}
  key = lambda u: (0, int(u)) if str(u).isdigit() else (1, str(u))
  users = sorted({r[F.USER_ID] for r in train} | {r[F.USER_ID] for r in evals}, key=key)
  row = {u: i for i, u in enumerate(users)}
  x = topk.user_item_matrix([row[r[F.USER_ID]] for r in train],
                            [col[r[F.MOVIE_ID]] for r in train], len(users), len(movie_ids))
  eval_users = sorted({r[F.USER_ID] for r in evals}, key=key)
  eval_pos = {u: j for j, u in enumerate(eval_users)}
  seen_rows = x[[row[u] for u in eval_users]]
  relevant: List[set] = [set() for _ in eval_users]
  for r in evals:
    relevant[eval_pos[r[F.USER_ID]]].add(col[r[F.MOVIE_ID]])
  for j, rel in enumerate(relevant):
    rel.difference_update(seen_rows.indices[seen_rows.indptr[j]:seen_rows.indptr[j + 1]])
  return {"users": users, "user_row": row, "eval_users": eval_users,
          "train_matrix": x, "eval_rows": seen_rows, "relevant": relevant,
          "movie_ids": list(movie_ids), "col": col}


def list_metrics(top: Sequence[Sequence[int]], relevant: Sequence[Collection[int]],
                 k: int, big_top: Optional[Sequence[Sequence[int]]] = None
                 ) -> Dict[str, float]:
  """metrics_at_k at k, plus hit@100 and recall@100 when big_top is given."""
  m = topk.metrics_at_k(top, relevant, k)
  if big_top is not None:
    m[f"hit@{BIG_K}"] = topk.hit_rate_at_k(big_top, relevant, BIG_K)
    m[f"recall@{BIG_K}"] = topk.metrics_at_k(big_top, relevant, BIG_K)[f"recall@{BIG_K}"]
  return m


def score_rows(score_fn: Callable[[np.ndarray], np.ndarray], problem: Mapping,
               k: int, batch: int = 512) -> Dict[str, float]:
  """Metrics of a full-catalogue scorer: score_fn(eval user indices) → [b, N]."""
  n_eval = len(problem["eval_users"])
  depth = max(k, BIG_K)
  tops = []
  for start in range(0, n_eval, batch):
    idx = np.arange(start, min(start + batch, n_eval))
    tops.append(topk.top_k_from_scores(score_fn(idx), depth,
                                       exclude=problem["eval_rows"][idx]))
  lists = topk.rows_to_lists(np.concatenate(tops)) if tops else []
  return list_metrics([row[:k] for row in lists], problem["relevant"], k, lists)


def recommend_lists(recommend: Callable[..., Mapping], users: Sequence[str],
                    col: Mapping[str, int], k: int, n_candidates: int
                    ) -> Dict[str, object]:
  """Index lists of recommend(user, k=, n_candidates=) for every user.

  Also counts returned movies the caller's index does not know and lists
  shorter than k.
  """
  lists, unknown, short = [], 0, 0
  for u in users:
    items = recommend(u, k=k, n_candidates=n_candidates)["items"]
    ids = [col.get(it["movie_id"], topk.PAD) for it in items]
    unknown += sum(i == topk.PAD for i in ids)
    short += len(items) < k
    lists.append(ids)
  return {"lists": lists, "unknown_movies": unknown, "short_lists": short}


def seen_violations(lists: Sequence[Sequence[int]], seen_rows) -> int:
  """Recommended movies the user rated in training (must be 0)."""
  bad = 0
  for j, row in enumerate(lists):
    seen = set(seen_rows.indices[seen_rows.indptr[j]:seen_rows.indptr[j + 1]].tolist())
    bad += sum(int(i) in seen for i in row)
  return bad


# ---------------------------------------------------------------------------
# Baselines.

def popularity_row(problem: Mapping, k: int) -> Dict[str, object]:
  t0 = time.time()
  pop = topk.popularity_scores(problem["train_matrix"])
  fit = time.time() - t0
  m = score_rows(lambda idx: np.broadcast_to(pop, (len(idx), len(pop))), problem, k)
  return {"metrics": m, "fit_seconds": fit}


def ease_row(problem: Mapping, k: int, lam: float) -> Dict[str, object]:
  reason = ease_lib.can_fit(problem["train_matrix"].shape[1])
  if reason:
    return {"skipped": reason}
  t0 = time.time()
  b = ease_lib.fit(problem["train_matrix"], lam=lam)
  fit = time.time() - t0
  rows = problem["eval_rows"]
  m = score_rows(lambda idx: ease_lib.scores(rows[idx], b), problem, k)
  return {"metrics": m, "fit_seconds": fit}


def als_row(problem: Mapping, k: int, params: Mapping, seed: int) -> Dict[str, object]:
  """implicit's CPU ALS on the binary training matrix (confidence 1 + alpha·x)."""
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
  from implicit.cpu.als import AlternatingLeastSquares  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  with threadpool_limits(limits=1, user_api="blas"):  # checked in __init__
    model = AlternatingLeastSquares(random_state=seed, calculate_training_loss=False,
                                    **params)
    model.fit(problem["train_matrix"], show_progress=False)
  fit = time.time() - t0
  rows = np.array([problem["user_row"][u] for u in problem["eval_users"]])
  uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
  m = score_rows(lambda idx: uf[rows[idx]] @ itf.T, problem, k)
  return {"metrics": m, "fit_seconds": fit}


# ---------------------------------------------------------------------------
# The project's models.

def train_models(prep: Mapping, catalogue_dir: str, work: str, seed: int,
                 retrieval_config: dict, ranking_config: dict) -> Dict[str, object]:
  """Both trainers' run_fn (the existing benchmark helpers) for one seed."""
  from benchmarks import retrieval_quality  # pylint: disable=g-import-not-at-top  (TF)
  rdir = os.path.join(work, "retrieval")
  shutil.rmtree(os.path.join(rdir, f"model_seed{seed}"), ignore_errors=True)
  retrieval_dir, retrieval_s = retrieval_quality.train_one(
      prep, catalogue_dir, rdir, seed, retrieval_config)
  ranking = ranking_quality.train_once(
      prep, os.path.join(work, f"ranking_seed{seed}"),
      dict(ranking_config, seed=seed, catalogue_uri=catalogue_dir))
  return {"retrieval_dir": retrieval_dir, "ranking_dir": ranking["serving_dir"],
          "retrieval_seconds": retrieval_s, "ranking_seconds": ranking["seconds"]}


def model_rows(dirs: Mapping, problem: Mapping, k: int, candidates: int
               ) -> Dict[str, Dict[str, object]]:
  """two_stage and retrieval_only rows through serving.recommender."""
  from serving.recommender import Recommender  # pylint: disable=g-import-not-at-top
  users, col, rel = problem["eval_users"], problem["col"], problem["relevant"]
  out = {}
  t0 = time.time()
  two = Recommender.from_model_dirs(dirs["retrieval_dir"], dirs["ranking_dir"])
  res = recommend_lists(two.recommend, users, col, k, candidates)
  out["two_stage"] = {
      "metrics": list_metrics(res["lists"], rel, k),
      "fit_seconds": dirs["retrieval_seconds"] + dirs["ranking_seconds"],
      "eval_seconds": time.time() - t0,
      "checks": {"unknown_movies": res["unknown_movies"], "short_lists": res["short_lists"],
                 "seen_recommended": seen_violations(res["lists"], problem["eval_rows"])}}
  t0 = time.time()
  one = Recommender.from_model_dirs(dirs["retrieval_dir"], None)
  res = recommend_lists(one.recommend, users, col, k, candidates)
  big = recommend_lists(one.recommend, users, col, BIG_K, BIG_K)
  out["retrieval_only"] = {
      "metrics": list_metrics(res["lists"], rel, k, big["lists"]),
      "fit_seconds": dirs["retrieval_seconds"], "eval_seconds": time.time() - t0,
      "checks": {"unknown_movies": res["unknown_movies"] + big["unknown_movies"],
                 "short_lists": res["short_lists"],
                 "seen_recommended": seen_violations(big["lists"], problem["eval_rows"])}}
  return out


def rmse_row(ranking_dir: str, test: Sequence[Mapping]) -> Dict[str, float]:
  """Test RMSE of the exported ranking model, with and without the timestamp."""
  y = np.array([r[F.USER_RATING] for r in test])
  with_ts = ranking_quality.serving_predictions(ranking_dir, test)
  no_ts = ranking_quality.serving_predictions(
      ranking_dir, [{k: v for k, v in r.items() if k != F.TIMESTAMP} for r in test])
  return {"rmse": ranking_quality.rmse(with_ts, y),
          "rmse_without_timestamp": ranking_quality.rmse(no_ts, y)}


def code_state() -> Dict[str, object]:
  """HEAD and the uncommitted model/serving files (what was measured)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  run = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True,
                                  text=True, check=False).stdout.strip()
  return {"head": run("rev-parse", "HEAD"),
          "uncommitted": run("status", "--porcelain", "--", "trainer_modules",
                             "serving", "transform").splitlines()}


# ---------------------------------------------------------------------------
# Report.

def summarize_rows(per_seed: Sequence[Mapping[str, Mapping]]) -> Dict[str, Dict]:
  """{row: {"metrics": {m: {mean, std, min, max}}, "fit_seconds": {...}}}."""
  out: Dict[str, Dict] = {}
  for name in per_seed[0]:
    runs = [s[name] for s in per_seed if name in s]
    if "skipped" in runs[0]:
      out[name] = {"skipped": runs[0]["skipped"]}
      continue
    metrics = {m: [r["metrics"][m] for r in runs] for m in runs[0]["metrics"]}
    stats = lambda v: ({"mean": float(np.mean(v)), "std": float(np.std(v)),
                        "min": float(np.min(v)), "max": float(np.max(v))}
                       if all(x is not None for x in v) else None)
    out[name] = {"metrics": {m: stats(v) for m, v in metrics.items()},
                 "fit_seconds": stats([r["fit_seconds"] for r in runs]),
                 "runs": len(runs)}
  return out


def table(summary: Mapping[str, Mapping], k: int) -> str:
  """One line per row: mean ± std over seeds (mean alone for one run)."""
  cols = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}",
          f"hit@{BIG_K}", f"recall@{BIG_K}", "fit_seconds"]
  cell = lambda s, runs: (f"{'-':>16}" if s is None else
                          f"{s['mean']:>16.4f}" if runs == 1 else
                          f"{s['mean']:>9.4f} ± {s['std']:.3f}")
  lines = [f"{'row':<16}" + "".join(f"{c:>16}" for c in cols)]
  for name, row in summary.items():
    if "skipped" in row:
      lines.append(f"{name:<16}{row['skipped']}")
      continue
    stats = dict(row["metrics"], fit_seconds=row["fit_seconds"])
    lines.append(f"{name:<16}" + "".join(cell(stats.get(c), row["runs"]) for c in cols))
  return "\n".join(lines)


def main(argv=None) -> Dict[str, object]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "datasets", "ml-100k"))
  p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "two_stage_quality"),
                 help="cache of the Transform output and the models")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--quick", action="store_true", help="one seed")
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--candidates", type=int, default=100)
  p.add_argument("--retrieval-config", default="{}", help="JSON overrides for retrieval.run_fn")
  p.add_argument("--ranking-config", default="{}", help="JSON overrides for ranking.run_fn")
  p.add_argument("--ease-lambda", type=float, default=ease_lib.DEFAULT_LAMBDA)
  p.add_argument("--als-config", default="{}",
                 help=f"JSON overrides of the ALS parameters {ALS_DEFAULTS}")
  p.add_argument("--skip-ease", action="store_true")
  p.add_argument("--skip-als", action="store_true")
  p.add_argument("--out", default=DEFAULT_OUT)
  args = p.parse_args(argv)
  seeds = 1 if args.quick else args.seeds
  retrieval_config = json.loads(args.retrieval_config)
  ranking_config = json.loads(args.ranking_config)
  als_params = dict(ALS_DEFAULTS, **json.loads(args.als_config))
  t_start = time.time()
  code_at_start = code_state()
  from benchmarks import retrieval_quality  # pylint: disable=g-import-not-at-top  (TF)

  prep = ml100k_data.prepare(os.path.abspath(args.data), os.path.join(args.work, "data"))
  train, test = prep["rows"]["train"], prep["rows"]["eval"]
  catalogue_dir = os.path.join(args.work, "data", "catalogue")
  movie_ids = retrieval_quality.write_catalogue(train + test, catalogue_dir)
  problem = index_problem(train, test, movie_ids)
  n_rel = sum(bool(r) for r in problem["relevant"])
  print(f"ml-100k: {len(train)} train / {len(test)} eval ratings, "
        f"{len(problem['eval_users'])} eval users ({n_rel} with unseen eval movies), "
        f"{len(movie_ids)} movies; data ready in {time.time() - t_start:.0f}s", flush=True)

  fixed = {"most_popular": popularity_row(problem, args.k)}
  if not args.skip_ease:
    fixed["ease"] = ease_row(problem, args.k, args.ease_lambda)
  bias = ranking_quality.bias_baseline(train, test)
  y = np.array([r[F.USER_RATING] for r in test])
  mu = float(np.mean([r[F.USER_RATING] for r in train]))
  rating_baselines = {"user_item_bias": bias["rmse"],
                      "global_mean": ranking_quality.rmse(np.full(len(y), mu), y)}

  per_seed, rmse_runs = [], []
  for seed in range(seeds):
    dirs = train_models(prep, catalogue_dir, args.work, seed, retrieval_config,
                        ranking_config)
    rows = model_rows(dirs, problem, args.k, args.candidates)
    if not args.skip_als:
      rows["als"] = als_row(problem, args.k, als_params, seed)
    rows.update(fixed)
    rmse = dict(rmse_row(dirs["ranking_dir"], test), seed=seed,
                train_seconds=dirs["ranking_seconds"])
    per_seed.append(rows)
    rmse_runs.append(rmse)
    print(f"seed {seed}: " + ", ".join(
        f"{n} nDCG@{args.k}={r['metrics'][f'ndcg@{args.k}']:.4f}"
        for n, r in rows.items() if "metrics" in r) +
        f"; ranking RMSE {rmse['rmse']:.4f} (no timestamp {rmse['rmse_without_timestamp']:.4f})",
        flush=True)

  summary = summarize_rows(per_seed)
  order = ["two_stage", "retrieval_only", "most_popular", "ease", "als"]
  summary = {n: summary[n] for n in order if n in summary}
  rm = np.array([r["rmse"] for r in rmse_runs])
  rm0 = np.array([r["rmse_without_timestamp"] for r in rmse_runs])
  wall = time.time() - t_start

  from trainer_modules import ranking, retrieval  # pylint: disable=g-import-not-at-top
  result = {
      "protocol": "random 80/20 by the pipeline's stable hash of (user_id, movie_id)",
      "data": os.path.abspath(args.data), "num_train": len(train), "num_eval": len(test),
      "eval_users": len(problem["eval_users"]), "eval_users_with_relevant": n_rel,
      "catalogue_size": len(movie_ids), "k": args.k, "candidates": args.candidates,
      "seeds": seeds, "relevance": "binary: the user's eval movies; training-seen excluded",
      "configs": {
          "retrieval": dict(retrieval.DEFAULT_CONFIG, **retrieval_config),
          "ranking": ranking.resolve_config(ranking_config),
          "retrieval_overrides": retrieval_config, "ranking_overrides": ranking_config,
          "ease_lambda": None if args.skip_ease else args.ease_lambda,
          "als": None if args.skip_als else als_params},
      "rows": summary,
      "rating_rmse": {"ranking": {"mean": float(rm.mean()), "std": float(rm.std())},
                      "ranking_without_timestamp": {"mean": float(rm0.mean()),
                                                    "std": float(rm0.std())},
                      "baselines": rating_baselines, "per_seed": rmse_runs},
      "per_seed": per_seed, "wall_seconds": round(wall, 1),
      "code": {"start": code_at_start, "end": code_state()},
      "host": {"cpus": os.cpu_count()}}

  print()
  print(table(summary, args.k))
  print(f"ranking test RMSE {rm.mean():.4f} ± {rm.std():.4f} through serving_default "
        f"(without timestamp {rm0.mean():.4f}); user+item bias "
        f"{rating_baselines['user_item_bias']:.4f}, global mean "
        f"{rating_baselines['global_mean']:.4f}")
  checks = {n: r.get("checks") for s in per_seed for n, r in s.items() if r.get("checks")}
  print(f"serving checks (last seed): {checks}")
  print(f"wall time {wall:.0f}s ({seeds} seed{'s' if seeds > 1 else ''})")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
