"""The end-of-run summary, read back from ML Metadata.

The runner prints this after a successful run: examples per split, the
validation verdict, each evaluator's metrics against its baselines, whether
each model was blessed, and what was pushed where. Everything comes from the
artifacts the components recorded, so a cached (unchanged) re-run reports the
same facts as the run that produced them.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Dict, List

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2


def _prop(artifact, key, default=None):
  if key in artifact.custom_properties:
    v = artifact.custom_properties[key]
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else default
  if key in artifact.properties:
    v = artifact.properties[key]
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else default
  return default


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
  """The SQLite ML Metadata of a local output directory, read-only."""
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(config)


def pipeline_runs(store, pipeline_name: str) -> List[metadata_store_pb2.Context]:
  """The pipeline_run contexts of `pipeline_name`, oldest first."""
  pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
  if pipeline_ctx is None:
    return []
  in_pipeline = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
  runs = [c for c in store.get_contexts_by_type("pipeline_run")
          if any(e.id in in_pipeline
                 for e in store.get_executions_by_context(c.id))]
  return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def run_executions(store, run) -> List[tuple]:
  """(node id, execution) of each execution of a pipeline run."""
  node_type_id = store.get_context_type("node").id
  out = []
  for execution in store.get_executions_by_context(run.id):
    node = next((c for c in store.get_contexts_by_execution(execution.id)
                 if c.type_id == node_type_id), None)
    if node is not None:
      out.append((node.name.split(".", 1)[-1], execution))
  return out


def execution_outputs(store, execution) -> Dict[str, List[metadata_store_pb2.Artifact]]:
  """{output key: [artifacts]} of one execution."""
  events = store.get_events_by_execution_ids([execution.id])
  outputs = [e for e in events if e.type in (metadata_store_pb2.Event.OUTPUT,
                                              metadata_store_pb2.Event.DECLARED_OUTPUT)]
  arts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in outputs])}
  per_key = collections.defaultdict(list)
  for e in outputs:
    key = e.path.steps[0].key if e.path.steps else "output"
    if e.artifact_id in arts:
      per_key[key].append(arts[e.artifact_id])
  return per_key


def run_outputs(store, run) -> Dict[str, Dict[str, List[metadata_store_pb2.Artifact]]]:
  """{node id: {output key: [artifacts]}} of one pipeline run."""
  out: Dict[str, Dict[str, list]] = {}
  for node_id, execution in run_executions(store, run):
    per_key = out.setdefault(node_id, collections.defaultdict(list))
    for key, arts in execution_outputs(store, execution).items():
      per_key[key] += arts
  return out


def latest_run_outputs(metadata_path: str, pipeline_name: str
                       ) -> Dict[str, Dict[str, List[metadata_store_pb2.Artifact]]]:
  """{node id: {output key: [artifacts]}} of the newest pipeline run."""
  store = open_store(metadata_path)
  runs = pipeline_runs(store, pipeline_name)
  return run_outputs(store, runs[-1]) if runs else {}


def _table(rows: List[List[str]]) -> str:
  widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
  lines = []
  for n, r in enumerate(rows):
    lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    if n == 0:
      lines.append("  ".join("-" * w for w in widths))
  return "\n".join(lines)


def _fmt(x):
  return f"{x:.4f}" if isinstance(x, float) else str(x)


RETRIEVAL_KEYS = ["hit@10", "hit@50", "hit@100", "hit@10_excl_seen",
                  "hit@50_excl_seen", "hit@100_excl_seen", "recall@100_excl_seen"]


def _retrieval_metrics(uri: str) -> str:
  """Model vs most-popular (vs last blessed model) from metrics.json."""
  with open(os.path.join(uri, "metrics.json")) as f:
    m = json.load(f)
  columns = [("model", m.get("model")), ("most-popular", m.get("popularity")),
             ("last blessed", m.get("baseline_model"))]
  columns = [(name, sec["all"]) for name, sec in columns if sec]
  rows = [["all eval users"] + [name for name, _ in columns]]
  for key in RETRIEVAL_KEYS:
    rows.append([key] + [_fmt(sec.get(key, "")) for _, sec in columns])
  return _table(rows)


TWO_STAGE_ID = "TwoStageEvaluator"
# Written by ranking trainers of earlier versions; read for their runs.
LEGACY_BASELINES_FILE = "baselines.json"


def _ranking_baselines(outs) -> Dict[str, float]:
  """Global-mean / user+item-bias RMSE on the eval split: the
  TwoStageEvaluator's (its metrics.json "rating", the baselines its blessing
  compares with), or the baselines.json ranking trainers wrote beside their
  model before that (runs recorded by older versions)."""
  two_stage = outs.get(TWO_STAGE_ID) or {}
  for evaluation in two_stage.get("evaluation", []):
    path = os.path.join(evaluation.uri, "metrics.json")
    if os.path.exists(path):
      with open(path) as f:
        rating = json.load(f).get("rating") or {}
      if rating.get("user_item_bias_rmse") is not None:
        return {"global_mean": rating["global_mean_rmse"],
                "user_item_bias": rating["user_item_bias_rmse"]}
  trainer = next((v for k, v in outs.items()
                  if k.startswith("Ranking") and "Trainer" in k), {})
  for run in trainer.get("model_run", []):
    path = os.path.join(run.uri, LEGACY_BASELINES_FILE)
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
  return {}


def ranking_overall_metrics(uri: str) -> Dict[str, Dict[str, float]]:
  """{"model"/"last blessed": {TFMA metric: value}} of the overall slice."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  overall = {}
  # With no baseline (first run) TFX evaluates a single, unnamed model.
  for label, model_name in (("model", None), ("model", "candidate"),
                            ("last blessed", "baseline")):
    if label in overall:
      continue
    try:
      result = tfma.load_eval_result(uri, model_name=model_name)
    except Exception:  # pylint: disable=broad-except
      continue
    for slice_key, metrics in result.slicing_metrics:
      if slice_key == ():
        values = metrics.get("", {}).get("", {})
        if values:
          overall[label] = {k: v.get("doubleValue") for k, v in values.items()}
  return overall


def _ranking_metrics(uri: str, baselines: Dict[str, float] = None) -> str:
  """Overall TFMA metrics of the candidate (and baseline) ranking model."""
  overall = ranking_overall_metrics(uri)
  if not overall:
    return "(no TFMA metrics)"
  names = list(overall)
  keys = ["root_mean_squared_error", "mean_absolute_error", "example_count"]
  rows = [["eval split"] + names]
  for key in keys:
    rows.append([key] + [_fmt(overall[n].get(key)) for n in names])
  if baselines:
    rows[0] += ["global mean", "user+item bias"]
    rows[1] += [_fmt(baselines["global_mean"]), _fmt(baselines["user_item_bias"])]
    for row in rows[2:]:
      row += ["", ""]
  return _table(rows)


TWO_STAGE_ROWS = ("two_stage", "retrieval_only", "most_popular", "ease")


def _two_stage_metrics(uri: str) -> str:
  """The TwoStageEvaluator's table (components/two_stage_evaluator)."""
  with open(os.path.join(uri, "metrics.json")) as f:
    m = json.load(f)
  k = m["k"]
  keys = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}"]
  rows = [["per user", f"P@{k}", f"R@{k}", f"nDCG@{k}", f"MAP@{k}"]]
  for name in TWO_STAGE_ROWS:
    row = m["rows"].get(name)
    rows.append([name] + ([_fmt(row.get(key)) for key in keys] if row else
                          ["skipped", "", "", ""]))
  lines = [f"Two-stage top-{k} (what recommend returns; {m['num_users']} eval "
           f"users, {m['n_candidates']} candidates, seen movies excluded):",
           _table(rows)]
  if m.get("ease_skipped"):
    lines.append(m["ease_skipped"])
  rating = m.get("rating")
  if rating:
    lines.append(f"rating RMSE {rating['rmse']:.4f} vs user+item bias "
                 f"{rating['user_item_bias_rmse']:.4f} (global mean "
                 f"{rating['global_mean_rmse']:.4f}), same split")
  else:
    lines.append("rating RMSE: not measured (implicit data or no predictions)")
  return "\n".join(lines)


def _warm_start_line(model_run_uri: str) -> str:
  """What the trainer started from (trainer_modules/warm_start.py's report)."""
  path = os.path.join(model_run_uri, "warm_start.json")
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    message = json.load(f).get("message", "")
  # "warm start from <long path>: ..." → the path is the latest blessed model.
  head, sep, rest = message.partition(": ")
  if sep and head.startswith("warm start from "):
    message = "warm start from the latest blessed model: " + rest
  return message if message.startswith("warm start") else "warm start: " + message


def _tuner_line(tuner_outputs) -> str:
  """"tuned (best of N trials, score S): key=value, ..." from a Tuner's outputs."""
  def only_file(artifacts):
    files = sorted(os.listdir(artifacts[0].uri)) if artifacts else []
    return os.path.join(artifacts[0].uri, files[0]) if len(files) == 1 else None
  best = only_file(tuner_outputs.get("best_hyperparameters"))
  if not best:
    return ""
  with open(best) as f:
    values = json.load(f).get("values", {})
  trials = only_file(tuner_outputs.get("tuner_results"))
  how = ""
  if trials:
    with open(trials) as f:
      results = json.load(f)  # completed trials, best first
    if results:
      how = f" (best of {len(results)} trials, score {_fmt(results[0]['score'])})"
  return (f"tuned{how}: "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in sorted(values.items())))


def _drift_line(result) -> str:
  """"span 2 vs span 1: passed (user_rating 0.004 ...)" from a DriftGate."""
  if not _prop(result, "checked", 0):
    return "passed, " + str(_prop(result, "note", "nothing to compare with"))
  distances = sorted((k[len("drift_"):], v) for k, v in
                     ((k, _prop(result, k)) for k in result.custom_properties)
                     if k.startswith("drift_"))
  spans = (f"span {_prop(result, 'current_span', '?')} vs span "
           f"{_prop(result, 'previous_span', '?')}: ")
  return spans + "passed (" + ", ".join(f"{f} {d:.3f}" for f, d in distances) + ")"


def _batch_line(artifact) -> str:
  """What the BatchRecommender wrote (components/batch_recommender)."""
  if not _prop(artifact, "generated", 0):
    return f"Batch recommendations: none ({_prop(artifact, 'skip_reason', '?')})"
  from components.batch_recommender import executor  # pylint: disable=g-import-not-at-top
  path = os.path.join(artifact.uri, f"Split-{executor.SPLIT}", executor.FILE_NAME)
  return (f"Batch recommendations: {_prop(artifact, 'num_users', '?')} users, "
          f"top {_prop(artifact, 'k', '?')} ({_prop(artifact, 'num_rows', '?')} rows, "
          f"{_prop(artifact, 'users_per_second', '?')} users/s)\n  {path}")


def summarize(metadata_path: str, pipeline_name: str, serving_dir: str,
              report_path: str = None) -> str:
  """A human-readable summary of the newest run (and where its HTML report is)."""
  outs = latest_run_outputs(metadata_path, pipeline_name)
  if not outs:
    return "No run recorded in ML Metadata."
  parts = []

  gen = next((v for k, v in outs.items() if "ExampleGen" in k), {})
  if gen.get("examples"):
    ex = gen["examples"][0]
    rows = [["split", "examples"]]
    for split in ("train", "eval"):
      rows.append([split, _prop(ex, f"num_examples_{split}", "?")])
    if gen.get("catalogue"):
      rows.append(["catalogue (movies)", _prop(gen["catalogue"][0], "num_movies", "?")])
    bad = _prop(ex, "num_bad_rows", 0)
    dups = _prop(ex, "num_duplicates_dropped", 0)
    spans = _prop(ex, "spans", "")
    parts.append("Data: " + str(_prop(ex, "source", ""))
                 + (f"; spans read: {spans}" if spans else "") + "\n" + _table(rows)
                 + (f"\nskipped unparsable rows: {bad}" if bad else "")
                 + (f"\nduplicate (user, movie) ratings dropped (newest kept): {dups}"
                    if dups else ""))

  gate = next((v for k, v in outs.items() if "ValidationGate" in k), None)
  parts.append("Validation: " + ("passed, no anomalies" if gate else
                                 "not run"))

  drift = next((v for k, v in outs.items() if "DriftGate" in k), None)
  if drift and drift.get("result"):
    parts.append("Drift: " + _drift_line(drift["result"][0]))

  ranking_baselines = _ranking_baselines(outs)
  for stage, metrics_fn in (("Retrieval", _retrieval_metrics),
                            ("Ranking", lambda uri: _ranking_metrics(
                                uri, ranking_baselines))):
    evaluation = next((v for k, v in outs.items()
                       if k.startswith(stage) and "Evaluator" in k), None)
    pusher = next((v for k, v in outs.items()
                   if k.startswith(stage) and "Pusher" in k), None)
    two_stage = outs.get(TWO_STAGE_ID) if stage == "Ranking" else None
    if evaluation is None and two_stage is None:
      continue
    evaluation = evaluation or {}
    lines = [f"{stage}:"]
    trainer = next((v for k, v in outs.items()
                    if k.startswith(stage) and "Trainer" in k), None)
    if trainer and trainer.get("model_run"):
      warm = _warm_start_line(trainer["model_run"][0].uri)
      if warm:
        lines.append(warm)
    tuner = next((v for k, v in outs.items()
                  if k.startswith(stage) and "Tuner" in k), None)
    if tuner:
      lines.append(_tuner_line(tuner) or "tuned: (no best hyperparameters recorded)")
    if evaluation.get("evaluation"):
      try:
        lines.append(metrics_fn(evaluation["evaluation"][0].uri))
      except Exception as e:  # pylint: disable=broad-except
        lines.append(f"(metrics unreadable: {e})")
    if two_stage and two_stage.get("evaluation"):
      try:
        lines.append(_two_stage_metrics(two_stage["evaluation"][0].uri))
      except Exception as e:  # pylint: disable=broad-except
        lines.append(f"(two-stage metrics unreadable: {e})")
    # With a TwoStageEvaluator, its blessing is the one the Pusher follows.
    for label, source in (("TFMA RMSE thresholds passed" if two_stage else "blessed",
                           evaluation), ("blessed", two_stage or {})):
      if source.get("blessing"):
        blessing = source["blessing"][0]
        blessed = _prop(blessing, "blessed", 0) == 1
        why = _prop(blessing, "blessing_message", "") if label == "blessed" else ""
        lines.append(f"{label}: {'yes' if blessed else 'no'}"
                     + (f" ({why})" if why else ""))
    if pusher and pusher.get("pushed_model"):
      pm = pusher["pushed_model"][0]
      if _prop(pm, "pushed", 0) == 1:
        lines.append(f"pushed to: {_prop(pm, 'pushed_destination', '?')}")
      else:
        lines.append("pushed: nothing (not blessed; the served version stays)")
    parts.append("\n".join(lines))
  batch = next((v for k, v in outs.items() if "BatchRecommender" in k), {})
  if batch.get("recommendations"):
    parts.append(_batch_line(batch["recommendations"][0]))
  parts.append(f"Serving directory: {serving_dir}")
  if report_path:
    parts.append(f"Run report: {report_path}")
  return "\n\n".join(parts)
