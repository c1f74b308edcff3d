"""Retrieval quality on real ml-100k: the TFRS two-tower model vs most-popular.

  .venv/bin/python benchmarks/retrieval_quality.py [--data PATH] [--seeds 3]
      [--config '{"epochs": 20}'] [--out benchmarks/results/retrieval_quality.json]

* data: GroupLens ml-100k (default ../shared/datasets/ml-100k relative to the
  repo root), read and split 80/20 by a stable hash of (user_id, movie_id)
  with the real preprocessing_fn run by TFT Beam (benchmarks/ml100k_data.py);
  the catalogue is every movie of the data (1,682), written as raw
  catalogue tf.Examples like ingestion's `catalogue` output;
* model: trainer_modules.retrieval.run_fn with its defaults (plus --config),
  once per seed; evaluated through the EXPORTED signatures: query_embedding
  on requests carrying only user_id (the serving path: stored user features
  are looked up inside the model) and candidate_embedding on the raw
  catalogue examples;
* metric: every (user, movie) pair of the eval split is a hit@K when the
  movie is in the user's top-K over the whole catalogue; "incl_seen" ranks
  all movies, "excl_seen" first removes the movies the user rated in
  training. Scores are batched matrix products in numpy;
* baseline: most popular (training rating count) on the same split.
Prints a table (mean ± std over seeds) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import ml100k_data  # noqa: E402
from common import catalogue as catalogue_lib  # noqa: E402
from common import features as F  # noqa: E402

KS = (10, 50, 100)


def write_catalogue(rows: Sequence[Mapping[str, object]], path: str) -> List[str]:
  """One raw catalogue tf.Example per movie of `rows`; returns the movie ids."""
  movies: Dict[str, Mapping[str, object]] = {}
  for r in rows:
    movies.setdefault(r[F.MOVIE_ID], r)
  os.makedirs(os.path.join(path, "Split-catalogue"), exist_ok=True)
  ids = sorted(movies, key=int)
  with tf.io.TFRecordWriter(os.path.join(path, "Split-catalogue", "data.gz"),
                            options="GZIP") as w:
    for m in ids:
      r = movies[m]
      w.write(F.to_tf_example({k: r[k] for k in F.CATALOGUE_FEATURES})
              .SerializeToString())
  return ids


def hit_rates(scores_fn, users: Sequence[str], movie_ids: Sequence[str],
              train_rows, eval_rows, ks=KS, batch: int = 256) -> Dict[str, float]:
  """hit@K incl./excl. training-seen movies; scores_fn(user_batch) → [b, n]."""
  col = {m: i for i, m in enumerate(movie_ids)}
  urow = {u: i for i, u in enumerate(users)}
  seen = [[] for _ in users]
  for r in train_rows:
    seen[urow[r[F.USER_ID]]].append(col[r[F.MOVIE_ID]])
  targets = [[] for _ in users]
  for r in eval_rows:
    if r[F.USER_ID] in urow:
      targets[urow[r[F.USER_ID]]].append(col[r[F.MOVIE_ID]])
  n_pairs = sum(len(t) for t in targets)
  hits = {(mode, k): 0 for mode in ("incl_seen", "excl_seen") for k in ks}
  for start in range(0, len(users), batch):
    block = list(range(start, min(start + batch, len(users))))
    s = np.asarray(scores_fn([users[i] for i in block]), np.float64)
    for j, i in enumerate(block):
      if not targets[i]:
        continue
      row = s[j]
      for mode in ("incl_seen", "excl_seen"):
        r = row.copy()
        if mode == "excl_seen":
          r[seen[i]] = -np.inf
        # Rank = movies scoring strictly higher (ties favour the target:
        # only the popularity baseline has ties, and it breaks them by id
        # through a tiny offset below).
        tgt = np.asarray(targets[i])
        ranks = (r[None, :] > r[tgt][:, None]).sum(axis=1)
        for k in ks:
          hits[(mode, k)] += int((ranks < k).sum())
  return {f"hit@{k}_{mode}": hits[(mode, k)] / max(1, n_pairs)
          for (mode, k) in hits}


def popularity_scores(movie_ids, train_rows):
  counts = {m: 0 for m in movie_ids}
  for r in train_rows:
    counts[r[F.MOVIE_ID]] += 1
  n = len(movie_ids)
  # Ties broken by catalogue order, with an offset below one rating.
  return np.array([counts[m] - i / (2.0 * n) for i, m in enumerate(movie_ids)])


def train_one(prep, catalogue_dir: str, work: str, seed: int, config: dict):
  from tfx.components.trainer import fn_args_utils  # pylint: disable=g-import-not-at-top
  from trainer_modules import retrieval  # pylint: disable=g-import-not-at-top
  out = os.path.join(work, f"model_seed{seed}")
  cfg = dict(config, seed=seed, catalogue_uri=catalogue_dir)
  fn_args = fn_args_utils.FnArgs(
      train_files=[prep["train_pattern"]], eval_files=[prep["eval_pattern"]],
      transform_output=prep["tft_dir"], transform_graph_path=prep["tft_dir"],
      serving_model_dir=os.path.join(out, "serving"),
      model_run_dir=os.path.join(out, "run"), custom_config=cfg)
  t0 = time.time()
  retrieval.run_fn(fn_args)
  return fn_args.serving_model_dir, time.time() - t0


def embed(fn, serialized: Sequence[bytes], batch: int = 1024) -> np.ndarray:
  parts = [fn(examples=tf.constant(list(serialized[i:i + batch])))["embedding"].numpy()
           for i in range(0, len(serialized), batch)]
  return np.concatenate(parts)


def evaluate_model(model_dir: str, users, movie_ids, catalogue_dir, prep) -> Dict[str, float]:
  model = tf.saved_model.load(model_dir)
  cat = catalogue_lib.read_catalogue(catalogue_dir)
  cand = embed(model.signatures["candidate_embedding"], cat["serialized"])
  pos = {m.decode(): i for i, m in enumerate(cat["movie_ids"])}
  cand = cand[[pos[m] for m in movie_ids]]
  requests = [F.to_tf_example({F.USER_ID: u}).SerializeToString() for u in users]
  query = embed(model.signatures["query_embedding"], requests)
  qpos = {u: i for i, u in enumerate(users)}
  return hit_rates(lambda us: query[[qpos[u] for u in us]] @ cand.T, users,
                   movie_ids, prep["rows"]["train"], prep["rows"]["eval"])


def summarize(runs: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
  keys = runs[0].keys()
  return {k: {"mean": float(np.mean([r[k] for r in runs])),
              "std": float(np.std([r[k] for r in runs])),
              "min": float(np.min([r[k] for r in runs])),
              "max": float(np.max([r[k] for r in runs]))} for k in keys}


def main(argv=None) -> Dict[str, object]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared",
                                                     "datasets", "ml-100k"))
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(),
                                                     "retrieval_quality"))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--config", default="{}",
                      help="JSON custom_config overrides for run_fn")
  parser.add_argument("--out", default=os.path.join(
      ROOT, "benchmarks", "results", "retrieval_quality.json"))
  args = parser.parse_args(argv)
  config = json.loads(args.config)

  prep = ml100k_data.prepare(os.path.abspath(args.data),
                             os.path.join(args.work, "data"))
  all_rows = prep["rows"]["train"] + prep["rows"]["eval"]
  catalogue_dir = os.path.join(args.work, "data", "catalogue")
  movie_ids = write_catalogue(all_rows, catalogue_dir)
  users = sorted({r[F.USER_ID] for r in prep["rows"]["train"]}, key=int)
  print(f"{len(prep['rows']['train'])} train / {len(prep['rows']['eval'])} eval "
        f"ratings, {len(users)} users, {len(movie_ids)} catalogue movies")

  pop = popularity_scores(movie_ids, prep["rows"]["train"])
  baseline = hit_rates(lambda us: np.tile(pop, (len(us), 1)), users, movie_ids,
                       prep["rows"]["train"], prep["rows"]["eval"])

  runs, seconds = [], []
  for seed in range(args.seeds):
    model_dir, secs = train_one(prep, catalogue_dir, args.work, seed, config)
    metrics = evaluate_model(model_dir, users, movie_ids, catalogue_dir, prep)
    metrics["run_fn_seconds"] = secs
    with open(os.path.join(model_dir, "assets.extra", "manifest.json")) as f:
      metrics["train_seconds"] = json.load(f)["train_seconds"]
    print(f"seed {seed}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
          flush=True)
    runs.append(metrics)
    seconds.append(secs)
  summary = summarize(runs)

  from trainer_modules import retrieval  # pylint: disable=g-import-not-at-top
  effective = dict(retrieval.DEFAULT_CONFIG, **config)
  print(f"\n{'metric':28s} {'two-tower (mean ± std)':>24s} {'most popular':>14s}")
  for k in baseline:
    print(f"{k:28s} {summary[k]['mean']:>15.4f} ± {summary[k]['std']:.4f} "
          f"{baseline[k]:>14.4f}")
  print(f"run_fn seconds per run (train + export): "
        f"{np.mean(seconds):.1f} ± {np.std(seconds):.1f}; training alone "
        f"{summary['train_seconds']['mean']:.1f} ± {summary['train_seconds']['std']:.1f}")
  result = {"data": os.path.abspath(args.data), "split": "80/20 md5(user_id, movie_id)",
            "num_train": len(prep["rows"]["train"]), "num_eval": len(prep["rows"]["eval"]),
            "catalogue_size": len(movie_ids), "seeds": args.seeds,
            "config": effective, "two_tower": summary, "per_seed": runs,
            "most_popular": baseline,
            "host": {"cpus": os.cpu_count()}}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
