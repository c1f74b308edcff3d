"""Executor of RetrievalEvaluator: full-catalogue retrieval metrics + blessing.

Reads the raw ingested examples (train and eval splits) and the catalogue,
embeds one query per distinct eval user (user and context features of the
user's earliest eval row, via the SavedModel's `query_embedding` signature)
and every catalogue movie (`candidate_embedding`), scores users × catalogue
by dot product in user batches, and computes metrics.py's metrics for the
model, the most-popular baseline and (when given) the baseline model.

The blessing mirrors the stock Evaluator (tfx/components/evaluator/executor.py)
so that the stock Pusher and LatestBlessedModelStrategy work with it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from common import catalogue as catalogue_lib
from common import features as F
from common import ids
from components import blessing_stage
from components.retrieval_evaluator import metrics as M

# Keys (inputs, outputs, parameters).
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
CATALOGUE_KEY = "catalogue"
BASELINE_MODEL_KEY = "baseline_model"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
MARGIN_KEY = "margin_over_popularity"
TOLERANCE_KEY = "baseline_tolerance"
KS_KEY = "ks"
BLESSING_K_KEY = "blessing_k"
EVAL_SPLIT_KEY = "eval_split"
TRAIN_SPLIT_KEY = "train_split"
CATALOGUE_SPLIT_KEY = "catalogue_split"
BATCH_SIZE_KEY = "batch_size"

DEFAULTS = {MARGIN_KEY: 0.02, TOLERANCE_KEY: 0.01, KS_KEY: [10, 50, 100],
            BLESSING_K_KEY: 100, EVAL_SPLIT_KEY: "eval", TRAIN_SPLIT_KEY: "train",
            CATALOGUE_SPLIT_KEY: catalogue_lib.CATALOGUE_SPLIT, BATCH_SIZE_KEY: 512}

METRICS_FILE_NAME = "metrics.json"
SUMMARY_FILE_NAME = "summary.txt"
QUERY_SIGNATURE = F.RETRIEVAL_QUERY_SIGNATURE
CANDIDATE_SIGNATURE = F.RETRIEVAL_CANDIDATE_SIGNATURE
EMBEDDING_OUTPUT = F.EMBEDDING_OUTPUT
QUERY_FEATURES = F.QUERY_FEATURES


def _split_files(artifact: types.Artifact, split: str) -> List[str]:
  uri = artifact_utils.get_split_uri([artifact], split)
  files = sorted(fileio.glob(os.path.join(uri, "*")))
  if not files:
    raise FileNotFoundError(f"No files for split {split!r} in {uri}")
  return files


_ID_SPEC = {F.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
            F.MOVIE_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
            F.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0)}


def read_ids(files: Sequence[str], batch_size: int = 8192, keep_first: bool = False):
  """user_id and movie_id arrays (fixed-width bytes, common/ids.py) of
  rating examples (+ first rows per user).

  Parsed in batches with tf.io.parse_example; rows missing an id are dropped.
  With keep_first, also returns {user_id: serialized row} of each user's
  earliest row (lowest timestamp, then file order); otherwise None.
  """
  users, movies, first = [], [], {}
  for batch in catalogue_lib.record_dataset(files).batch(batch_size):
    parsed = tf.io.parse_example(batch, _ID_SPEC)
    u = ids.as_ids(parsed[F.USER_ID].numpy())  # fixed-width bytes
    m = ids.as_ids(parsed[F.MOVIE_ID].numpy())
    ok = (u != b"") & (m != b"")
    users.append(u[ok])
    movies.append(m[ok])
    if keep_first:
      t = parsed[F.TIMESTAMP].numpy()
      idx = np.flatnonzero(ok)
      idx = idx[np.lexsort((idx, t[idx], u[idx]))]  # by user, time, position
      _, at = np.unique(u[idx], return_index=True)  # each user's earliest row
      rec = batch.numpy()
      for i in idx[at]:
        key = bytes(u[i])
        cur = first.get(key)
        if cur is None or t[i] < cur[0]:
          first[key] = (t[i], rec[i])
  cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, "S1")
  return cat(users), cat(movies), (
      {k: v[1] for k, v in first.items()} if keep_first else None)


def query_examples_of(rows: Dict[bytes, bytes]) -> Dict[bytes, bytes]:
  """{user_id: serialized query example}: the user and context features of
  each user's row (no movie features, no rating)."""
  queries = {}
  for u, rec in rows.items():
    ex = tf.train.Example.FromString(rec)
    q = tf.train.Example()
    for name in QUERY_FEATURES:
      if name in ex.features.feature:
        q.features.feature[name].CopyFrom(ex.features.feature[name])
    queries[u] = q.SerializeToString()
  return queries


def embed(signature, serialized: Sequence[bytes], batch_size: int) -> np.ndarray:
  """Runs an `examples` → `embedding` signature over batches."""
  outs = []
  for start in range(0, len(serialized), batch_size):
    batch = tf.constant(list(serialized[start:start + batch_size]), dtype=tf.string)
    res = signature(examples=batch)
    outs.append(np.asarray(res[EMBEDDING_OUTPUT], dtype=np.float32))
  if not outs:
    return np.zeros((0, 0), dtype=np.float32)
  emb = np.concatenate(outs, axis=0)
  if emb.ndim != 2 or emb.shape[0] != len(serialized):
    raise ValueError(f"embedding has shape {emb.shape}, expected "
                     f"[{len(serialized)}, d]")
  return emb


def evaluate_saved_model(model_dir: str, query_examples: Sequence[bytes],
                         catalogue_examples: Sequence[bytes], data: M.EvalData,
                         ks: Sequence[int], batch_size: int):
  """Metrics of one exported retrieval SavedModel."""
  loaded = tf.saved_model.load(model_dir)
  for sig in (QUERY_SIGNATURE, CANDIDATE_SIGNATURE):
    if sig not in loaded.signatures:
      raise ValueError(f"SavedModel {model_dir} has no {sig!r} signature "
                       f"(has {list(loaded.signatures)})")
  q = embed(loaded.signatures[QUERY_SIGNATURE], query_examples, batch_size)
  c = embed(loaded.signatures[CANDIDATE_SIGNATURE], catalogue_examples, batch_size)
  if q.shape[1] != c.shape[1]:
    raise ValueError(f"query dim {q.shape[1]} != candidate dim {c.shape[1]}")
  return M.evaluate(M.embedding_scorer(q, c), data, ks, batch_size)


def decide_blessing(model: Dict[str, Any], popularity: Dict[str, Any],
                    baseline: Optional[Dict[str, Any]], blessing_k: int,
                    margin: float, tolerance: float) -> Dict[str, Any]:
  """The blessing rule; returns {blessed, metric, message, values...}."""
  metric = f"hit@{blessing_k}_excl_seen"
  value = model["all"][metric] or 0.0
  pop = popularity["all"][metric] or 0.0
  ok_pop = value >= pop + margin
  reasons = [f"{metric} {value:.4f} {'>=' if ok_pop else '<'} popularity "
             f"{pop:.4f} + margin {margin}"]
  ok_base, base = True, None
  if baseline is not None:
    base = baseline["all"][metric] or 0.0
    ok_base = value >= base - tolerance
    reasons.append(f"{metric} {value:.4f} {'>=' if ok_base else '<'} baseline "
                   f"model {base:.4f} - tolerance {tolerance}")
  else:
    reasons.append("no baseline model")
  blessed = bool(ok_pop and ok_base)
  return {"blessed": blessed, "metric": metric, "model": value,
          "popularity": pop, "baseline_model": base,
          "margin_over_popularity": margin, "baseline_tolerance": tolerance,
          "passed_popularity": bool(ok_pop), "passed_baseline": bool(ok_base),
          "message": ("BLESSED: " if blessed else "NOT BLESSED: ") + "; ".join(reasons)}


def _ks(value) -> List[int]:
  if value is None:
    return list(DEFAULTS[KS_KEY])
  if isinstance(value, str):
    value = json.loads(value)
  ks = sorted(set(int(k) for k in value))
  if not ks or ks[0] <= 0:
    raise ValueError(f"ks must be positive integers, got {value}")
  return ks


# A subclass of the stock Evaluator's executor (Do is our own): TFX's
# Kubeflow V2 entrypoint only rewrites a blessing's current_model_id into the
# model's artifact name for such executors, and the compiled blessed-model
# resolver query matches on that name.
class Executor(evaluator_executor.Executor):
  """Evaluates a retrieval model on the full catalogue and blesses it."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    props = dict(DEFAULTS)
    props.update({k: v for k, v in exec_properties.items() if v is not None})
    ks = _ks(props[KS_KEY])
    blessing_k = int(props[BLESSING_K_KEY])
    if blessing_k not in ks:
      ks = sorted(ks + [blessing_k])
    batch_size = int(props[BATCH_SIZE_KEY])

    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    catalogue = artifact_utils.get_single_instance(input_dict[CATALOGUE_KEY])
    baselines = input_dict.get(BASELINE_MODEL_KEY) or []
    if len(baselines) > 1:
      raise ValueError(f"There can be only one baseline model, got {len(baselines)}")
    baseline = baselines[0] if baselines else None

    tr_u, tr_m, _ = read_ids(_split_files(examples, props[TRAIN_SPLIT_KEY]))
    ev_u, ev_m, first_rows = read_ids(_split_files(examples, props[EVAL_SPLIT_KEY]),
                                      keep_first=True)
    queries = query_examples_of(first_rows)
    cat = catalogue_lib.read_catalogue(catalogue.uri, props[CATALOGUE_SPLIT_KEY])
    cat_ids, cat_examples = cat["movie_ids"], cat["serialized"]
    data, users = M.build_eval_data_arrays(ev_u, ev_m, tr_u, tr_m, cat_ids,
                                           sorted(queries))
    query_examples = [queries[u] for u in users]
    counts = M.counts(data)
    logging.info("RetrievalEvaluator data: %s", counts)
    if counts["eval_pairs_not_in_catalogue"]:
      logging.warning("%d eval pairs have a movie missing from the catalogue; "
                      "they count as misses.", counts["eval_pairs_not_in_catalogue"])

    results = {"model": evaluate_saved_model(
        path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)),
        query_examples, cat_examples, data, ks, batch_size)}
    results["popularity"] = M.evaluate(M.popularity_scorer(data), data, ks, batch_size)
    results["baseline_model"] = None
    if baseline is not None:
      results["baseline_model"] = evaluate_saved_model(
          path_utils.serving_model_path(baseline.uri,
                                        path_utils.is_old_model_artifact(baseline)),
          query_examples, cat_examples, data, ks, batch_size)

    decision = decide_blessing(results["model"], results["popularity"],
                               results["baseline_model"], blessing_k,
                               float(props[MARGIN_KEY]), float(props[TOLERANCE_KEY]))
    table = M.summary_table(results, ks)
    logging.info("Retrieval evaluation (full catalogue, split %s):\n%s\n%s",
                 props[EVAL_SPLIT_KEY], table, decision["message"])

    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    payload = dict(results)
    payload.update({
        "counts": counts, "ks": ks, "blessing": decision,
        "eval_split": props[EVAL_SPLIT_KEY], "train_split": props[TRAIN_SPLIT_KEY],
        "model_uri": model.uri, "model_id": model.id,
        "baseline_model_uri": baseline.uri if baseline is not None else None,
        "baseline_model_id": baseline.id if baseline is not None else None,
    })
    io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_FILE_NAME),
                               json.dumps(payload, indent=2, sort_keys=True))
    io_utils.write_string_file(os.path.join(evaluation.uri, SUMMARY_FILE_NAME),
                               table + "\n" + decision["message"] + "\n")
    metric = decision["metric"]
    evaluation.set_float_custom_property(metric, decision["model"])
    evaluation.set_float_custom_property(f"popularity_{metric}", decision["popularity"])
    if decision["baseline_model"] is not None:
      evaluation.set_float_custom_property(f"baseline_{metric}",
                                           decision["baseline_model"])

    self._write_blessing(output_dict, model, baseline, decision, exec_properties)

  @staticmethod
  def _write_blessing(output_dict, model, baseline, decision, exec_properties):
    """Same properties and marker files as the stock Evaluator."""
    blessing_stage.write_blessing(
        artifact_utils.get_single_instance(output_dict[BLESSING_KEY]), model,
        decision["blessed"], decision["message"], blessing_stage.RETRIEVAL,
        baseline=baseline,
        component_id=exec_properties.get("current_component_id"))
