"""Executor of TwoStageEvaluator: scores what `recommend` returns, blesses ranking.

For every eval user (≥1 eval movie; the first `max_users` in id order when
capped) it asks `serving.recommender.Recommender` — the class `recommend`
serves with, built over this run's two exported models — for the two-stage
top-k (retrieve n_candidates unseen movies → rank → k) and, over the
retrieval model alone, for the retrieval order of the same n_candidates.
So the candidate count, the seen-movie masking (the retrieval export's
seen table) and the ordering are serving's by construction, not re-coded.
Most-popular and EASE (fitted on the training split; skipped with a reason
above ease.MAX_ITEMS) are scored on the same users with the raw training
split's movies masked (topk.top_k_from_scores). Relevance is binary: the
user's eval movies; eval movies missing from the catalogue count as misses.

Rating quality: the ranking model's `serving_default` on the raw eval
examples (batched, output `predictions`) against
trainer_modules/baselines.rating_baselines on the same train/eval split;
null when the model has no `predictions` output or the data no rating.

Blessing (the RANKING model; stock-Evaluator compatible, tagged
blessing_stage=ranking): blessed iff two-stage ndcg@k ≥ retrieval-only
ndcg@k + ndcg_margin, and (ratings) RMSE < user+item-bias RMSE, and (when
given) TFMA's rating blessing is blessed.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from common import catalogue as catalogue_lib
from common import features as F
from common import ids
from components import blessing_stage
from components.retrieval_evaluator.executor import _split_files
from components.two_stage_evaluator import topk
from serving.recommender import MAX_K
from serving.recommender import Recommender
from trainer_modules import baselines
from trainer_modules import ease

# Keys (inputs, outputs, parameters).
MODEL_KEY = "model"
RANKING_MODEL_KEY = "ranking_model"
EXAMPLES_KEY = "examples"
CATALOGUE_KEY = "catalogue"
RATING_BLESSING_KEY = "rating_blessing"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
K_KEY = "k"
N_CANDIDATES_KEY = "n_candidates"
NDCG_MARGIN_KEY = "ndcg_margin"
EASE_LAMBDA_KEY = "ease_lambda"
MAX_USERS_KEY = "max_users"
EVAL_SPLIT_KEY = "eval_split"
TRAIN_SPLIT_KEY = "train_split"
CATALOGUE_SPLIT_KEY = "catalogue_split"
BATCH_SIZE_KEY = "batch_size"
PROGRESS_EVERY_KEY = "progress_every"

DEFAULTS = {K_KEY: 10, N_CANDIDATES_KEY: 100, NDCG_MARGIN_KEY: 0.005,
            EASE_LAMBDA_KEY: ease.DEFAULT_LAMBDA, MAX_USERS_KEY: None,
            EVAL_SPLIT_KEY: "eval", TRAIN_SPLIT_KEY: "train",
            CATALOGUE_SPLIT_KEY: catalogue_lib.CATALOGUE_SPLIT, BATCH_SIZE_KEY: 1024,
            PROGRESS_EVERY_KEY: 500}

METRICS_FILE_NAME = "metrics.json"
SUMMARY_FILE_NAME = "summary.txt"
PREDICTIONS_OUTPUT = "predictions"
ROWS = ("two_stage", "retrieval_only", "most_popular", "ease")

_RATING_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    F.MOVIE_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    F.USER_RATING: tf.io.FixedLenFeature([], tf.float32, default_value=np.nan),
}


def serving_dir_of(model: types.Artifact) -> str:
  return path_utils.serving_model_path(model.uri,
                                       path_utils.is_old_model_artifact(model))


def local_copy(path: str, local: str) -> str:
  """`path`, or its copy in `local` when remote (serving reads assets.extra
  with plain open())."""
  if "://" not in path:
    return path
  logging.info("Copying %s to %s", path, local)
  io_utils.copy_dir(path, local)
  return local


def read_rated(files: Sequence[str], batch_size: int = 8192,
               keep_records: bool = True):
  """(serialized, user_ids, movie_ids, ratings) of rows with both ids.

  Ids are `S` arrays (common/ids.py: a few bytes per row, not a Python
  object); ratings are NaN where a row has no user_rating; `serialized` (the
  rows, for rating predictions) is empty unless `keep_records`.
  """
  recs, users, movies, ratings = [], [], [], []
  for batch in catalogue_lib.record_dataset(files).batch(batch_size):
    parsed = tf.io.parse_example(batch, _RATING_SPEC)
    u = parsed[F.USER_ID].numpy().astype("S")
    m = parsed[F.MOVIE_ID].numpy().astype("S")
    ok = (u != b"") & (m != b"")
    if keep_records:
      recs.extend(batch.numpy()[ok])
    users.append(u[ok])
    movies.append(m[ok])
    ratings.append(parsed[F.USER_RATING].numpy()[ok])
  cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)
  return recs, cat(users, "S1"), cat(movies, "S1"), cat(ratings, np.float32)


def predict_ratings(model_dir: str, serialized: Sequence[bytes],
                    batch_size: int) -> Optional[np.ndarray]:
  """The model's `predictions` for each example, or None if it has none."""
  loaded = tf.saved_model.load(model_dir)
  fn = loaded.signatures.get("serving_default")
  if fn is None or PREDICTIONS_OUTPUT not in fn.structured_outputs:
    logging.warning("Ranking model %s has no serving_default %r output: no "
                    "rating evaluation.", model_dir, PREDICTIONS_OUTPUT)
    return None
  outs = []
  for start in range(0, len(serialized), batch_size):
    batch = tf.constant(list(serialized[start:start + batch_size]), dtype=tf.string)
    outs.append(np.asarray(fn(examples=batch)[PREDICTIONS_OUTPUT],
                           np.float64).reshape(-1))
  pred = np.concatenate(outs) if outs else np.zeros(0)
  if len(pred) != len(serialized):
    raise ValueError(f"{PREDICTIONS_OUTPUT} has {len(pred)} values for "
                     f"{len(serialized)} examples")
  return pred


def rating_quality(model_dir: str, train, eval_, batch_size: int
                   ) -> Optional[Dict[str, float]]:
  """{rmse, user_item_bias_rmse, global_mean_rmse, count} or None."""
  _, tr_u, tr_m, tr_y = train
  ev_rec, ev_u, ev_m, ev_y = eval_
  tr_ok, ev_ok = np.isfinite(tr_y), np.isfinite(ev_y)
  if not tr_ok.any() or not ev_ok.any():
    logging.info("No user_rating in the data: no rating evaluation.")
    return None
  pred = predict_ratings(model_dir, [r for r, ok in zip(ev_rec, ev_ok) if ok],
                         batch_size)
  if pred is None:
    return None
  base = baselines.rating_baselines(tr_u[tr_ok], tr_m[tr_ok], tr_y[tr_ok],
                                    ev_u[ev_ok], ev_m[ev_ok], ev_y[ev_ok])
  return {"rmse": baselines.rmse(pred, ev_y[ev_ok]),
          "user_item_bias_rmse": base["user_item_bias"],
          "global_mean_rmse": base["global_mean"], "count": int(ev_ok.sum())}


class _Problem:
  """Users, catalogue indices, relevance and training rows in index form.

  Vectorised over rows (common/ids.py): at tens of millions of training rows
  a dict lookup per row costs minutes and a Python object per id gigabytes.
  """

  def __init__(self, cat_ids: Sequence[bytes], tr_u, tr_m, ev_u, ev_m,
               max_users: Optional[int]):
    cat = ids.as_ids(cat_ids)
    ids.require_distinct(cat, "catalogue movie ids")
    self.cat_ids = cat.tolist()
    self.n_items = len(cat)
    self.index_of = {m: i for i, m in enumerate(self.cat_ids)}  # per movie
    ev_u, ev_m = ids.as_ids(ev_u), ids.as_ids(ev_m)
    ev_i = ids.positions(cat, ev_m)
    # Eval movies outside the catalogue: distinct indices ≥ N (never hit).
    outside = ev_i < 0
    missing, inverse = np.unique(ev_m[outside], return_inverse=True)
    ev_i[outside] = self.n_items + inverse
    self.missing_movies = len(missing)
    users = np.unique(ev_u)
    self.num_eval_users = len(users)
    if max_users is not None and len(users) > max_users:
      users = users[:int(max_users)]
    self.users = users.tolist()
    order = np.argsort(ev_u, kind="stable")
    sorted_u = ev_u[order]
    lo = np.searchsorted(sorted_u, users, side="left")
    hi = np.searchsorted(sorted_u, users, side="right")
    self.relevant = [set(ev_i[order[a:b]].tolist()) for a, b in zip(lo, hi)]
    # Training rows: every training user (EASE fit) and the eval users' rows.
    tr_u, tr_m = ids.as_ids(tr_u), ids.as_ids(tr_m)
    train_users = np.union1d(np.unique(tr_u), users)
    tr_i = ids.positions(cat, tr_m)
    known = tr_i >= 0
    self.train = topk.user_item_matrix(
        np.searchsorted(train_users, tr_u[known]), tr_i[known],
        len(train_users), self.n_items)
    self.user_rows = np.searchsorted(train_users, users).astype(np.int64)


def _row_metrics(ranked: List[List[int]], relevant, k: int,
                 n_candidates: Optional[int]) -> Dict[str, Any]:
  out = topk.metrics_at_k([r[:k] for r in ranked], relevant, k)
  out.pop("users")
  if n_candidates is not None:
    out[f"hit@{n_candidates}_excl_seen"] = topk.hit_rate_at_k(ranked, relevant,
                                                             n_candidates)
    out[f"recall@{n_candidates}_excl_seen"] = topk.metrics_at_k(
        ranked, relevant, n_candidates)[f"recall@{n_candidates}"]
  return out


def _scored_lists(score_fn, problem: _Problem, depth: int, batch_size: int):
  """Top-`depth` lists (seen masked) of score_fn(user rows) in user batches."""
  lists = []
  for start in range(0, len(problem.users), batch_size):
    rows = problem.user_rows[start:start + batch_size]
    seen = problem.train[rows]
    lists += topk.rows_to_lists(topk.top_k_from_scores(score_fn(rows, seen), depth,
                                                       exclude=seen))
  return lists


def serving_lists(retrieval_dir: str, ranking_dir: str, problem: _Problem, k: int,
                  n_candidates: int, progress_every: int):
  """Two-stage top-k and retrieval-only top-n_candidates via Recommender."""
  two_stage = Recommender.from_model_dirs(retrieval_dir, ranking_dir)
  depth = min(n_candidates, two_stage.catalogue_size, MAX_K)
  k = min(k, depth)
  ts_lists, rt_lists, unranked = [], [], 0
  t0 = time.time()
  for n, user in enumerate(problem.users, 1):
    # One call ranks every candidate: the two-stage top-k is the head of
    # that order, and the candidates by retrieval_rank are the retrieval
    # model's own order (what rank=False returns).
    res = two_stage.recommend(user.decode("utf-8"), k=depth,
                              n_candidates=n_candidates)
    unranked += not res["ranked"]
    items = [problem.index_of.get(it["movie_id"].encode(), -1)
             for it in res["items"]]
    ts_lists.append(items[:k])
    by_retrieval = sorted(range(len(items)),
                          key=lambda j: res["items"][j]["retrieval_rank"])
    rt_lists.append([items[j] for j in by_retrieval])
    if progress_every and (n % progress_every == 0 or n == len(problem.users)):
      logging.info("TwoStageEvaluator: %d/%d users (%.1f users/s)", n,
                   len(problem.users), n / max(time.time() - t0, 1e-9))
  if unranked:
    logging.warning("%d users got retrieval order instead of a ranked list",
                    unranked)
  return ts_lists, rt_lists, time.time() - t0


def decide_blessing(rows: Dict[str, Any], rating: Optional[Dict[str, float]],
                    rating_blessed: Optional[bool], k: int, margin: float
                    ) -> Dict[str, Any]:
  """The blessing rule; returns {blessed, message, values compared...}."""
  metric = f"ndcg@{k}"
  two = rows["two_stage"][metric] or 0.0
  ret = rows["retrieval_only"][metric] or 0.0
  ok_ndcg = two >= ret + margin
  reasons = [f"two-stage {metric} {two:.4f} {'>=' if ok_ndcg else '<'} "
             f"retrieval-only {ret:.4f} + margin {margin}"]
  ok_rmse = True
  if rating is not None:
    ok_rmse = rating["rmse"] < rating["user_item_bias_rmse"]
    reasons.append(f"RMSE {rating['rmse']:.4f} {'<' if ok_rmse else '>='} "
                   f"user+item bias {rating['user_item_bias_rmse']:.4f}")
  else:
    reasons.append("no rating check (no ratings or no predictions)")
  ok_tfma = True
  if rating_blessed is not None:
    ok_tfma = bool(rating_blessed)
    reasons.append("TFMA RMSE thresholds " + ("passed" if ok_tfma else "failed"))
  blessed = bool(ok_ndcg and ok_rmse and ok_tfma)
  return {"blessed": blessed, "metric": metric, "two_stage": two,
          "retrieval_only": ret, "ndcg_margin": margin,
          "rmse": None if rating is None else rating["rmse"],
          "user_item_bias_rmse": None if rating is None else rating["user_item_bias_rmse"],
          "rating_blessing": rating_blessed, "passed_ndcg": bool(ok_ndcg),
          "passed_rmse": bool(ok_rmse), "passed_rating_blessing": bool(ok_tfma),
          "message": ("BLESSED: " if blessed else "NOT BLESSED: ") + "; ".join(reasons)}


def summary_table(payload: Dict[str, Any]) -> str:
  k, n = payload["k"], payload["n_candidates"]
  keys = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}",
          f"hit@{n}_excl_seen", f"recall@{n}_excl_seen"]
  rows = [["top-k per user"] + keys]
  for name in ROWS:
    row = payload["rows"].get(name)
    if row is None:
      rows.append([name, payload.get("ease_skipped") or "skipped"])
      continue
    rows.append([name] + [("" if row.get(c) is None else f"{row[c]:.4f}")
                          for c in keys])
  widths = [max(len(r[i]) if i < len(r) else 0 for r in rows)
            for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  rating = payload.get("rating")
  if rating:
    lines.append(f"rating RMSE {rating['rmse']:.4f} vs user+item bias "
                 f"{rating['user_item_bias_rmse']:.4f}, global mean "
                 f"{rating['global_mean_rmse']:.4f} ({rating['count']} eval ratings)")
  return "\n".join(lines)


def _int_or_none(value) -> Optional[int]:
  return None if value in (None, "", 0) else int(value)


# A subclass of the stock Evaluator's executor (Do is our own): TFX's
# Kubeflow V2 entrypoint only rewrites a blessing's current_model_id into the
# model's artifact name for such executors, and the compiled blessed-model
# resolver query matches on that name.
class Executor(evaluator_executor.Executor):
  """Evaluates the two-stage top-k per user and blesses the ranking model."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    props = dict(DEFAULTS)
    props.update({k: v for k, v in exec_properties.items() if v is not None})
    k, n_candidates = int(props[K_KEY]), int(props[N_CANDIDATES_KEY])
    if k < 1 or n_candidates < k:
      raise ValueError(f"need 1 <= k <= n_candidates, got k={k}, "
                       f"n_candidates={n_candidates}")
    batch_size = int(props[BATCH_SIZE_KEY])
    margin = float(props[NDCG_MARGIN_KEY])

    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    ranking = artifact_utils.get_single_instance(input_dict[RANKING_MODEL_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    catalogue = artifact_utils.get_single_instance(input_dict[CATALOGUE_KEY])
    rating_blessings = input_dict.get(RATING_BLESSING_KEY) or []
    if len(rating_blessings) > 1:
      raise ValueError(f"There can be only one rating_blessing, got "
                       f"{len(rating_blessings)}")
    rating_blessed = (blessing_stage.is_blessed(rating_blessings[0])
                      if rating_blessings else None)

    t0 = time.time()
    train = read_rated(_split_files(examples, props[TRAIN_SPLIT_KEY]),
                       keep_records=False)
    eval_ = read_rated(_split_files(examples, props[EVAL_SPLIT_KEY]))
    cat_ids = catalogue_lib.read_catalogue(
        catalogue.uri, props[CATALOGUE_SPLIT_KEY])["movie_ids"]
    problem = _Problem(cat_ids, train[1], train[2], eval_[1], eval_[2],
                       _int_or_none(props[MAX_USERS_KEY]))
    if not problem.users:
      raise ValueError(f"No eval user with an eval movie in split "
                       f"{props[EVAL_SPLIT_KEY]!r} of {examples.uri}")
    logging.info("TwoStageEvaluator: %d of %d eval users, %d movies, k=%d, "
                 "%d candidates", len(problem.users), problem.num_eval_users,
                 problem.n_items, k, n_candidates)
    depth = min(n_candidates, problem.n_items, MAX_K)

    ranking_dir = serving_dir_of(ranking)
    with tempfile.TemporaryDirectory() as tmp:
      ts_lists, rt_lists, serve_secs = serving_lists(
          local_copy(serving_dir_of(model), os.path.join(tmp, "retrieval")),
          local_copy(ranking_dir, os.path.join(tmp, "ranking")), problem, k,
          n_candidates, int(props[PROGRESS_EVERY_KEY]))
    rel = problem.relevant
    rows: Dict[str, Any] = {
        "two_stage": _row_metrics(ts_lists, rel, k, None),
        "retrieval_only": _row_metrics(rt_lists, rel, k, n_candidates)}
    popularity = topk.popularity_scores(problem.train)
    rows["most_popular"] = _row_metrics(_scored_lists(
        lambda r, seen: np.broadcast_to(popularity, (len(r), problem.n_items)),
        problem, depth, batch_size), rel, k, n_candidates)
    ease_skipped = ease.can_fit(problem.n_items)
    rows["ease"] = None
    if ease_skipped:
      logging.warning(ease_skipped)
    else:
      te = time.time()
      b = ease.fit(problem.train, float(props[EASE_LAMBDA_KEY]))
      rows["ease"] = _row_metrics(_scored_lists(
          lambda r, seen: ease.scores(seen, b), problem, depth, batch_size),
                                  rel, k, n_candidates)
      logging.info("EASE (lambda %s) fitted and scored in %.1fs",
                   props[EASE_LAMBDA_KEY], time.time() - te)
    rating = rating_quality(ranking_dir, train, eval_, batch_size)

    decision = decide_blessing(rows, rating, rating_blessed, k, margin)
    payload = {
        "k": k, "n_candidates": n_candidates, "num_users": len(problem.users),
        "rows": rows, "ease_skipped": ease_skipped, "rating": rating,
        "blessing": decision,
        "num_eval_users": problem.num_eval_users,
        "catalogue_size": problem.n_items,
        "eval_movies_not_in_catalogue": problem.missing_movies,
        "ease_lambda": None if ease_skipped else float(props[EASE_LAMBDA_KEY]),
        "serving_seconds": round(serve_secs, 3),
        "seconds": round(time.time() - t0, 3),
        "model_uri": model.uri, "model_id": model.id,
        "ranking_model_uri": ranking.uri, "ranking_model_id": ranking.id,
        "eval_split": props[EVAL_SPLIT_KEY], "train_split": props[TRAIN_SPLIT_KEY],
    }
    table = summary_table(payload)
    logging.info("Two-stage evaluation (%d users, split %s, %.1fs):\n%s\n%s",
                 len(problem.users), props[EVAL_SPLIT_KEY], payload["seconds"],
                 table, decision["message"])

    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_FILE_NAME),
                               json.dumps(payload, indent=2, sort_keys=True))
    io_utils.write_string_file(os.path.join(evaluation.uri, SUMMARY_FILE_NAME),
                               table + "\n" + decision["message"] + "\n")
    for name in ("two_stage", "retrieval_only"):
      evaluation.set_float_custom_property(f"{name}_ndcg@{k}",
                                           rows[name][f"ndcg@{k}"] or 0.0)
    blessing_stage.write_blessing(
        artifact_utils.get_single_instance(output_dict[BLESSING_KEY]), ranking,
        decision["blessed"], decision["message"], blessing_stage.RANKING,
        component_id=exec_properties.get("current_component_id"))
