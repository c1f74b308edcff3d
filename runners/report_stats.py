"""Data facts of a run for the report: statistics, anomalies, drift.

Statistics are StatisticsGen's (TFDV DatasetFeatureStatistics per split),
read with `tfdv.load_stats_binary`. TFDV's own HTML view
(`tensorflow_data_validation.utils.display_util.get_statistics_html`, what
`tfdv.visualize_statistics` shows in a notebook) is not embedded: it loads
Facets from cdnjs.cloudflare.com and raw.githubusercontent.com when opened
(through HTML imports, which current browsers no longer support), and the
report must open offline. The same statistics are laid out here as tables
and histograms instead.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from runners import report_data as D

NUMERIC, STRING = "numeric", "string"


def split_statistics(statistics_artifact, split: str):
  """The DatasetFeatureStatistics of one split, or None when unreadable."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  path = os.path.join(statistics_artifact.uri, f"Split-{split}", "FeatureStats.pb")
  if not os.path.exists(path):
    return None
  stats_list = tfdv.load_stats_binary(path)
  return stats_list.datasets[0] if stats_list.datasets else None


def _feature_name(f) -> str:
  return ".".join(f.path.step) if f.path.step else f.name


def summarize_feature(f, num_examples: int) -> Dict[str, Any]:
  """The Facets-overview numbers of one feature in one split."""
  kind = f.WhichOneof("stats")
  out: Dict[str, Any] = {}
  if kind == "num_stats":
    s = f.num_stats
    common = s.common_stats
    out.update(kind=NUMERIC, count=common.num_non_missing,
               missing=common.num_missing, mean=s.mean, std=s.std_dev,
               zeros=s.num_zeros, min=s.min, median=s.median, max=s.max)
    standard = [h for h in s.histograms if h.type == h.STANDARD]
    if standard:
      out["histogram"] = [(b.low_value, b.high_value, b.sample_count)
                          for b in standard[0].buckets]
  elif kind == "string_stats":
    s = f.string_stats
    common = s.common_stats
    out.update(kind=STRING, count=common.num_non_missing,
               missing=common.num_missing, unique=s.unique,
               avg_length=s.avg_length,
               top=[(v.value, v.frequency) for v in s.top_values[:5]])
  else:
    out.update(kind=kind or "?", count=None, missing=None)
  if num_examples and out.get("missing") is not None:
    out["missing_share"] = out["missing"] / num_examples
  return out


def compare_splits(statistics_artifact, splits=("train", "eval")) -> Dict[str, Any]:
  """{"num_examples": {split: n}, "features": {name: {split: summary}}}."""
  out: Dict[str, Any] = {"num_examples": {}, "features": {}}
  for split in splits:
    ds = split_statistics(statistics_artifact, split)
    if ds is None:
      continue
    out["num_examples"][split] = ds.num_examples
    for f in ds.features:
      out["features"].setdefault(_feature_name(f), {})[split] = summarize_feature(
          f, ds.num_examples)
  return out


def anomalies(validator: Optional[D.NodeRun]) -> Optional[Dict[str, List[str]]]:
  """{split: [anomaly lines]} ExampleValidator found (the ValidationGate's
  wording); None when there is no anomalies artifact."""
  from components import validation_gate  # pylint: disable=g-import-not-at-top
  artifact = validator.output("anomalies") if validator else None
  if artifact is None or not D.is_live(artifact):
    return None
  out = {}
  for split in json.loads(D.prop(artifact, "split_names", "[]") or "[]"):
    try:
      found = validation_gate._read_anomalies(  # pylint: disable=protected-access
          os.path.join(artifact.uri, f"Split-{split}"))
      out[split] = validation_gate.describe_anomalies(found)
    except Exception as e:  # pylint: disable=broad-except
      out[split] = [f"(anomalies unreadable: {e})"]
  return out


def drift(run: D.Run, store) -> Optional[Dict[str, Any]]:
  """The DriftGate's distances against thresholds (span data only).

  From the gate's result when it passed; when it stopped the run there is
  no result, so the distances are measured again, with the gate's own
  function, on the statistics and thresholds the gate was given.
  """
  from components import drift_gate  # pylint: disable=g-import-not-at-top
  gate = run.node(D.DRIFT_GATE)
  if gate is None:
    return None
  thresholds = json.loads(gate.exec_property(drift_gate.THRESHOLDS_KEY) or "{}")
  out: Dict[str, Any] = {"state": gate.state, "thresholds": thresholds,
                         "measurements": [], "note": ""}
  result = gate.output(drift_gate.RESULT_KEY)
  if result is not None:
    out["current_span"] = D.prop(result, "current_span")
    out["previous_span"] = D.prop(result, "previous_span")
    out["checked"] = bool(D.prop(result, "checked", 0))
    out["note"] = D.prop(result, "note", "") or ""
    saved = D.read_json(os.path.join(result.uri, drift_gate.RESULT_FILE_NAME)) or {}
    if saved.get("measurements"):
      out["measurements"] = saved["measurements"]
    else:
      out["measurements"] = [
          {"feature": k[len("drift_"):], "comparator": "", "distance": v.double_value,
           "threshold": thresholds.get(k[len("drift_"):])}
          for k, v in sorted(result.custom_properties.items())
          if k.startswith("drift_")]
    return out
  # The gate failed (or never finished): measure again from its inputs.
  inputs = _inputs(store, gate.execution)
  stats, schema = inputs.get("statistics"), inputs.get("schema")
  if stats is None or schema is None:
    out["note"] = "the drift gate's inputs are not recorded"
    return out
  try:
    current = split_statistics(stats, drift_gate.CURRENT_SPLIT)
    previous = split_statistics(stats, drift_gate.PREVIOUS_SPLIT)
    from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
    wrap = lambda ds: statistics_pb2.DatasetFeatureStatisticsList(datasets=[ds])
    measured, notes = drift_gate.check_drift(
        wrap(current), wrap(previous),
        drift_gate._load_schema(schema),  # pylint: disable=protected-access
        {k: v for k, v in thresholds.items() if v is not None})
    out["measurements"] = [
        {"feature": m.feature, "comparator": m.comparator,
         "distance": m.distance, "threshold": m.threshold} for m in measured]
    out["note"] = " ".join(notes)
    out["checked"] = True
  except Exception as e:  # pylint: disable=broad-except
    out["note"] = f"drift not measurable again: {type(e).__name__}: {e}"
  return out


def _inputs(store, execution) -> Dict[str, Any]:
  """{input key: first artifact} of an execution (tfx Artifact objects)."""
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  events = [e for e in store.get_events_by_execution_ids([execution.id])
            if e.type == metadata_store_pb2.Event.INPUT and e.path.steps]
  arts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  types = {t.id: t for t in store.get_artifact_types()}
  out = {}
  for e in events:
    a = arts.get(e.artifact_id)
    if a is not None and e.path.steps[0].key not in out:
      out[e.path.steps[0].key] = artifact_utils.deserialize_artifact(types[a.type_id], a)
  return out
