"""What the run report shows, read from ML Metadata and the artifacts it names.

Every fact comes from metadata.db (pipeline_run contexts, executions, their
properties and events) and from files inside the artifacts MLMD points at
(metrics.json, baselines.json, warm_start.json, TFMA results, TensorBoard
event files). Nothing is read from log files, so `--report-only` rebuilds
the same report later, and a cached (unchanged) re-run reports the artifacts
it reused.

The MLMD walking helpers are runners/run_report.py's (the console summary);
this module adds what a report needs beyond the newest run: every run of the
output directory, execution states and times, and lineage of pushed models.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

from ml_metadata.proto import metadata_store_pb2

from runners import run_report
from runners.run_report import _prop as prop  # pylint: disable=protected-access

Execution = metadata_store_pb2.Execution
STATE_NAMES = {Execution.NEW: "new", Execution.RUNNING: "running",
               Execution.COMPLETE: "complete", Execution.FAILED: "failed",
               Execution.CACHED: "cached", Execution.CANCELED: "canceled"}

# Node ids as pipeline/*.py wires them (each branch module defines its own).
EXAMPLE_GEN = "MovieLensExampleGen"
STATISTICS_GEN = "StatisticsGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
VALIDATION_GATE = "ValidationGate"
DRIFT_STATISTICS_GEN = "DriftStatisticsGen"
DRIFT_GATE = "DriftGate"
TWO_STAGE_EVALUATOR = "TwoStageEvaluator"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One model branch: its node ids (pipeline/retrieval_branch.py, ...)."""
  name: str
  trainer: str
  evaluator: str
  pusher: str


def stages() -> List[Stage]:
  from pipeline import ranking_branch  # pylint: disable=g-import-not-at-top
  from pipeline import retrieval_branch  # pylint: disable=g-import-not-at-top
  return [Stage("retrieval", retrieval_branch.TRAINER_ID,
                retrieval_branch.EVALUATOR_ID, retrieval_branch.PUSHER_ID),
          Stage("ranking", ranking_branch.TRAINER_ID,
                ranking_branch.EVALUATOR_ID, ranking_branch.PUSHER_ID)]


@dataclasses.dataclass
class NodeRun:
  """One component's execution in a run, with its output artifacts."""
  node_id: str
  execution: Any  # metadata_store_pb2.Execution
  outputs: Dict[str, List[Any]]

  @property
  def state(self) -> str:
    return STATE_NAMES.get(self.execution.last_known_state, "unknown")

  @property
  def seconds(self) -> float:
    e = self.execution
    return max(0.0, (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3)

  def output(self, key: str):
    """The first artifact of output `key`, or None."""
    arts = self.outputs.get(key) or []
    return arts[0] if arts else None

  def exec_property(self, key: str, default=None):
    return prop(self.execution, key, default)


@dataclasses.dataclass
class Run:
  """One pipeline_run context (one LocalDagRunner run)."""
  context: Any  # metadata_store_pb2.Context
  nodes: Dict[str, NodeRun]

  @property
  def run_id(self) -> str:
    return self.context.name

  @property
  def started(self) -> float:
    """Seconds since the epoch when the run registered its first node."""
    return self.context.create_time_since_epoch / 1e3

  @property
  def ended(self) -> float:
    return max([n.execution.last_update_time_since_epoch / 1e3
                for n in self.nodes.values()] or [self.started])

  @property
  def stamp(self) -> str:
    """20261201-221426: the run id (local time) as a file name part."""
    try:
      t = datetime.datetime.fromisoformat(self.run_id)
    except ValueError:
      t = datetime.datetime.fromtimestamp(self.started)
    return t.strftime("%Y%m%d-%H%M%S")

  def failed(self) -> List[str]:
    return [n for n, r in self.nodes.items() if r.state == "failed"]

  def unfinished(self) -> List[str]:
    return [n for n, r in self.nodes.items() if r.state in ("new", "running")]

  def node(self, node_id: str) -> Optional[NodeRun]:
    return self.nodes.get(node_id)


def load_runs(store, pipeline_name: str) -> List[Run]:
  """Every run of the pipeline in this MLMD, oldest first."""
  runs = []
  for ctx in run_report.pipeline_runs(store, pipeline_name):
    nodes = {}
    for node_id, execution in run_report.run_executions(store, ctx):
      # Several executions of one node in a run: the newest one counts.
      old = nodes.get(node_id)
      if old is None or execution.id > old.execution.id:
        nodes[node_id] = NodeRun(node_id, execution,
                                 dict(run_report.execution_outputs(store, execution)))
    runs.append(Run(ctx, nodes))
  return runs


def producer(store, artifact) -> Optional[Any]:
  """The execution that computed `artifact` (not one that reused it from cache)."""
  events = store.get_events_by_artifact_ids([artifact.id])
  ids = [e.execution_id for e in events
         if e.type in (metadata_store_pb2.Event.OUTPUT,
                       metadata_store_pb2.Event.DECLARED_OUTPUT)]
  executions = store.get_executions_by_id(ids) if ids else []
  done = [e for e in executions if e.last_known_state == Execution.COMPLETE]
  return min(done or executions, key=lambda e: e.id) if executions else None


def read_json(path: str) -> Optional[Any]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_live(artifact) -> bool:
  """Its files are still there (retention marks pruned artifacts DELETED)."""
  return (artifact.state != metadata_store_pb2.Artifact.DELETED
          and os.path.exists(artifact.uri))


# -- training: TensorBoard event files --------------------------------------

def epoch_scalars(model_run_uri: str) -> Dict[str, Dict[str, List[Tuple[int, float]]]]:
  """{"train"/"validation": {tag: [(epoch, value)]}} from the Keras
  TensorBoard callback's event files in a ModelRun directory."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out: Dict[str, Dict[str, List[Tuple[int, float]]]] = {}
  for sub in sorted(glob.glob(os.path.join(model_run_uri, "*"))):
    if not os.path.isdir(sub) or not glob.glob(os.path.join(sub, "events.out.tfevents.*")):
      continue
    acc = event_accumulator.EventAccumulator(
        sub, size_guidance={event_accumulator.TENSORS: 0,
                            event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    series = {}
    for tag in tags.get("tensors", []):
      if tag.startswith("epoch_"):
        series[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                       for e in acc.Tensors(tag)]
    for tag in tags.get("scalars", []):
      if tag.startswith("epoch_"):
        series[tag] = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
    if series:
      out[os.path.basename(sub)] = series
  return out


# -- evaluation ---------------------------------------------------------------

def retrieval_metrics(evaluation) -> Optional[Dict[str, Any]]:
  """The RetrievalEvaluator's metrics.json (model, popularity, baseline_model)."""
  from components.retrieval_evaluator import executor  # pylint: disable=g-import-not-at-top
  return read_json(os.path.join(evaluation.uri, executor.METRICS_FILE_NAME))


def retrieval_headline(evaluation) -> Dict[str, float]:
  """The blessing metric of model / popularity / last blessed, from the
  evaluation artifact's MLMD custom properties (kept after retention)."""
  floats = {k: v.double_value for k, v in evaluation.custom_properties.items()
            if v.WhichOneof("value") == "double_value"}
  metric = next((k for k in floats if not k.startswith(("popularity_", "baseline_"))), None)
  if metric is None:
    return {}
  out = {"metric": metric, "model": floats[metric]}
  for who in ("popularity", "baseline"):
    if f"{who}_{metric}" in floats:
      out[who] = floats[f"{who}_{metric}"]
  return out


_TFMA_CACHE: Dict[str, Dict[str, Dict[str, float]]] = {}


def ranking_metrics(evaluation) -> Dict[str, Dict[str, float]]:
  """{"model"/"last blessed": {TFMA metric: value}} (overall slice)."""
  if not is_live(evaluation):
    return {}
  if evaluation.uri not in _TFMA_CACHE:
    _TFMA_CACHE[evaluation.uri] = run_report.ranking_overall_metrics(evaluation.uri)
  return _TFMA_CACHE[evaluation.uri]


def ranking_validation(evaluation) -> Optional[str]:
  """TFMA's verdict on the thresholds: "" when passed, else the failures."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  try:
    result = tfma.load_validation_result(evaluation.uri)
  except Exception:  # pylint: disable=broad-except
    return None
  if result.validation_ok:
    return ""
  lines = []
  for per_slice in result.metric_validations_per_slice:
    for f in per_slice.failures:
      lines.append(f"{f.metric_key.name}: {f.message or 'threshold not met'} "
                   f"(value {f.metric_value.double_value.value:.4f})")
  return "; ".join(lines) or "validation failed"


def ranking_baselines(run: Run) -> Dict[str, float]:
  """Global-mean / user+item-bias RMSE on the run's eval split
  (run_report._ranking_baselines: the TwoStageEvaluator's)."""
  nodes = [run.node(TWO_STAGE_EVALUATOR),
           run.node(next(s for s in stages() if s.name == "ranking").trainer)]
  return run_report._ranking_baselines(  # pylint: disable=protected-access
      {n.node_id: n.outputs for n in nodes if n is not None})


def two_stage_metrics(run: Run) -> Optional[Dict[str, Any]]:
  """TwoStageEvaluator's metrics.json: {"k", "rows", "rating", "blessing"}."""
  node = run.node(TWO_STAGE_EVALUATOR)
  evaluation = node.output("evaluation") if node else None
  if evaluation is None:
    return None
  return read_json(os.path.join(evaluation.uri, "metrics.json"))


def _nan(x) -> float:
  return float(x) if isinstance(x, (int, float)) else math.nan


def headline(run: Run) -> Dict[str, float]:
  """The few numbers per run that the history plots: NaN when absent."""
  out: Dict[str, float] = {}
  by_stage = {s.name: s for s in stages()}
  ev = run.node(by_stage["retrieval"].evaluator)
  if ev is not None and ev.output("evaluation") is not None:
    h = retrieval_headline(ev.output("evaluation"))
    if h:
      out["retrieval.metric"] = h["metric"]
      out["retrieval.model"] = h["model"]
      out["retrieval.most_popular"] = _nan(h.get("popularity"))
  ev = run.node(by_stage["ranking"].evaluator)
  if ev is not None and ev.output("evaluation") is not None:
    m = ranking_metrics(ev.output("evaluation")).get("model", {})
    out["ranking.model"] = _nan(m.get("root_mean_squared_error"))
    b = ranking_baselines(run)
    out["ranking.global_mean"] = _nan(b.get("global_mean"))
    out["ranking.user_item_bias"] = _nan(b.get("user_item_bias"))
  two = two_stage_metrics(run)
  if two and two.get("rows"):
    k = two.get("k", 10)
    out["two_stage.k"] = k
    for row, metrics in two["rows"].items():
      if metrics:
        out[f"two_stage.{row}"] = _nan(metrics.get(f"ndcg@{k}"))
  return out


# -- pushes and lineage -------------------------------------------------------

@dataclasses.dataclass
class Push:
  """A model version a Pusher pushed, and what produced it."""
  stage: str
  version: str
  destination: str
  run_id: str            # the run that pushed it
  run_index: int         # its position in the run list (0-based)
  live: bool             # the pushed folder is still there
  data: Dict[str, Any]   # ingestion: source, split, spans, fingerprint, ...
  trainer_config: Dict[str, Any]
  code: Dict[str, Any]   # run_fn / preprocessing_fn / Transform config
  model_uri: str


def new_pushes(runs: List[Run]) -> Dict[int, List[Tuple[str, Any]]]:
  """{run index: [(stage, PushedModel artifact)]} of versions each run pushed
  itself (a cached Pusher re-reports an earlier push: not counted again)."""
  out: Dict[int, List[Tuple[str, Any]]] = {}
  for i, run in enumerate(runs):
    for stage in stages():
      node = run.node(stage.pusher)
      pushed = node.output("pushed_model") if node else None
      if (pushed is not None and node.state == "complete"
          and prop(pushed, "pushed", 0) == 1):
        out.setdefault(i, []).append((stage.name, pushed))
  return out


_SKIPPED_INPUTS = ("base_model", "baseline_model")  # earlier models: not this one's data


def ancestors(store, artifact) -> Dict[str, Any]:
  """{node id: execution} of every execution upstream of `artifact`,
  not following earlier models (warm start / evaluation baselines)."""
  node_type_id = store.get_context_type("node").id
  found: Dict[str, Any] = {}
  seen_artifacts, frontier = {artifact.id}, [artifact.id]
  while frontier:
    events = store.get_events_by_artifact_ids(frontier)
    producers = {e.execution_id for e in events
                 if e.type in (metadata_store_pb2.Event.OUTPUT,
                               metadata_store_pb2.Event.DECLARED_OUTPUT)}
    frontier = []
    for execution in store.get_executions_by_id(sorted(producers)):
      if execution.last_known_state == Execution.CACHED:
        continue  # the execution that computed it is among the producers too
      node = next((c for c in store.get_contexts_by_execution(execution.id)
                   if c.type_id == node_type_id), None)
      node_id = node.name.split(".", 1)[-1] if node else str(execution.id)
      if node_id in found:
        continue
      found[node_id] = execution
      for e in store.get_events_by_execution_ids([execution.id]):
        key = e.path.steps[0].key if e.path.steps else ""
        if (e.type == metadata_store_pb2.Event.INPUT and key not in _SKIPPED_INPUTS
            and e.artifact_id not in seen_artifacts):
          seen_artifacts.add(e.artifact_id)
          frontier.append(e.artifact_id)
  return found


def _json_prop(execution, key) -> Any:
  value = prop(execution, key)
  if isinstance(value, str):
    try:
      return json.loads(value)
    except ValueError:
      return value
  return value


def lineage(store, runs: List[Run]) -> List[Push]:
  """Every version pushed by a run of this MLMD, oldest first, with the data
  and configuration that produced it."""
  out = []
  stage_by_name = {s.name: s for s in stages()}
  for index, pushed_list in sorted(new_pushes(runs).items()):
    for stage_name, pushed in pushed_list:
      up = ancestors(store, pushed)
      gen = up.get(EXAMPLE_GEN)
      data: Dict[str, Any] = {}
      if gen is not None:
        for key in ("source", "data_config", "split", "eval_fraction",
                    "range_config", "source_fingerprint"):
          value = prop(gen, key)
          if value not in (None, ""):
            data[key] = value
        examples = run_report.execution_outputs(store, gen).get("examples") or []
        if examples:
          spans = prop(examples[0], "spans", "")
          if spans:
            data["spans"] = spans
          for split in ("train", "eval"):
            n = prop(examples[0], f"num_examples_{split}")
            if n is not None:
              data[f"num_examples_{split}"] = n
      trainer = up.get(stage_by_name[stage_name].trainer)
      transform = up.get("Transform")
      code = {}
      if trainer is not None:
        code["run_fn"] = prop(trainer, "run_fn", "")
      if transform is not None:
        code["preprocessing_fn"] = prop(transform, "preprocessing_fn", "")
        code["transform_config"] = _json_prop(transform, "custom_config")
      model_uri = ""
      if trainer is not None:
        models = run_report.execution_outputs(store, trainer).get("model") or []
        model_uri = models[0].uri if models else ""
      out.append(Push(
          stage=stage_name, version=str(prop(pushed, "pushed_version", "?")),
          destination=str(prop(pushed, "pushed_destination", "")),
          run_id=runs[index].run_id, run_index=index,
          live=os.path.exists(str(prop(pushed, "pushed_destination", ""))),
          data=data,
          trainer_config=(_json_prop(trainer, "custom_config") or {}) if trainer else {},
          code=code, model_uri=model_uri))
  return out
