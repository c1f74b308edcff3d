"""DriftGate: stops a pipeline run when a new span drifted from the one before.

Schema validation (ValidationGate) catches impossible values; it cannot see
that a new delivery of *valid* data looks unlike the last one (ratings turned
upside down by a client bug, a bot flooding the log with new users). Training
on that would push a model fitted to broken data, so the ingestion writes the
newest span (split ``current``) and the span before it (``previous``), a
StatisticsGen computes their statistics, and this gate compares them with
TFDV's drift comparators:

* string (and categorical) features: L-infinity distance of the value
  frequencies (the largest change of one value's share);
* numeric features: approximate Jensen-Shannon divergence of the
  histograms.

The comparator follows what the statistics hold for a feature; the threshold
per feature comes from pipeline/configs.py DRIFT_THRESHOLDS (or the pipeline's
drift_thresholds argument). TFDV does the measuring:
`tfdv.validate_statistics(current, schema_with_comparators,
previous_statistics=previous)`; the gate fails its execution with a
DataDriftError naming each feature, its distance and threshold, so nothing
downstream (Transform, trainers, pushers) runs. Schema anomalies TFDV also
reports are ValidationGate's business and are ignored here.

Without a ``previous`` split (the first span) there is nothing to compare:
the gate passes and says so. On success it publishes a DataDriftResult
artifact (passed=1, the spans compared, each feature's distance). Wire it as

    drift_stats = StatisticsGen(examples=gen.outputs["drift_examples"])
    gate = DriftGate(statistics=drift_stats.outputs["statistics"],
                     schema=schema_gen.outputs["schema"], thresholds={...})
    transform.add_upstream_node(gate)

Unlike ValidationGate, a class component, not a TFX function component: its
thresholds are a {feature: number} mapping, which the local orchestrator
hands a function component as a dict but the KubeflowV2 entrypoint as JSON
text, and a bad threshold should fail when the pipeline is built, not when
the run reaches the gate. An explicit JSON parameter checked in __init__
gives both.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import io_utils
from tfx.utils import json_utils

from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

STATISTICS_KEY = "statistics"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
RESULT_KEY = "result"
THRESHOLDS_KEY = "thresholds"
CURRENT_SPLIT_KEY = "current_split"
PREVIOUS_SPLIT_KEY = "previous_split"

CURRENT_SPLIT = "current"
PREVIOUS_SPLIT = "previous"
RESULT_FILE_NAME = "drift_result.json"
L_INFINITY = "L-infinity"
JENSEN_SHANNON = "Jensen-Shannon"

_FAILED_HEADER = ("Data drift: the newest span differs too much from the "
                  "previous one; Transform and training will not run.")


@dataclasses.dataclass
class Measurement:
  """One feature's distance between the current and the previous span."""
  feature: str
  comparator: str  # L_INFINITY or JENSEN_SHANNON
  distance: float
  threshold: float

  @property
  def drifted(self) -> bool:
    return self.distance > self.threshold

  def describe(self) -> str:
    return (f"feature '{self.feature}': {self.comparator} distance "
            f"{self.distance:.4f} > threshold {self.threshold:g}")


class DataDriftError(RuntimeError):
  """Drift above a threshold; `drifted` holds the offending measurements."""

  def __init__(self, drifted: List[Measurement], spans: str = ""):
    self.drifted = drifted
    lines = [_FAILED_HEADER + (f" ({spans})" if spans else "")]
    lines += [f"  {m.describe()}" for m in drifted]
    lines.append("  If the change is expected, raise the threshold of these "
                 "features (pipeline drift_thresholds / configs."
                 "DRIFT_THRESHOLDS).")
    super().__init__("\n".join(lines))


class DataDriftResult(Artifact):
  """The gate's verdict: passed (1), the spans compared and the distances."""
  # KFP v2 needs custom artifact types as "<module>.<Name>" schema titles,
  # and TFX's Kubeflow entrypoint imports the class by that title
  # (components/__init__.py resolves it).
  TYPE_NAME = "components.DataDriftResult"
  # Custom properties only: KFP v2 accepts no declared properties on custom
  # artifact types.
  PROPERTIES = {}


class DriftGateSpec(ComponentSpec):
  PARAMETERS = {
      # JSON object {feature: threshold}.
      THRESHOLDS_KEY: ExecutionParameter(type=str),
      CURRENT_SPLIT_KEY: ExecutionParameter(type=str, optional=True),
      PREVIOUS_SPLIT_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
      SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
      # Optional: the drift examples, for their current_span/previous_span
      # (StatisticsGen passes on only `span`), named in messages.
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples,
                                     optional=True),
  }
  OUTPUTS = {
      RESULT_KEY: ChannelParameter(type=DataDriftResult),
  }


def _features(stats: statistics_pb2.DatasetFeatureStatisticsList
              ) -> Dict[str, statistics_pb2.FeatureNameStatistics]:
  """Top-level features of the (single) dataset of a statistics list."""
  if not stats.datasets:
    return {}
  out = {}
  for feature in stats.datasets[0].features:
    name = feature.path.step[0] if feature.path.step else feature.name
    out[name] = feature
  return out


def drift_schema(schema: schema_pb2.Schema,
                 current: statistics_pb2.DatasetFeatureStatisticsList,
                 previous: statistics_pb2.DatasetFeatureStatisticsList,
                 thresholds: Mapping[str, float]
                 ) -> Tuple[schema_pb2.Schema, Dict[str, str], List[str]]:
  """A copy of `schema` with a drift comparator on each thresholded feature.

  Returns (schema, {feature: comparator name}, notes on skipped features).
  String statistics get L-infinity, numeric ones Jensen-Shannon: TFDV's
  L-infinity needs value frequencies, which only string (or categorical)
  statistics carry.
  """
  copy = schema_pb2.Schema()
  copy.CopyFrom(schema)
  by_name = {f.name: f for f in copy.feature}
  cur, prev = _features(current), _features(previous)
  comparators, notes = {}, []
  for name, threshold in sorted(thresholds.items()):
    if threshold is None:
      continue
    if name not in by_name:
      notes.append(f"'{name}' is not in the schema: not checked")
      continue
    if name not in cur or name not in prev:
      where = "current" if name not in cur else "previous"
      notes.append(f"'{name}' has no statistics in the {where} span: not "
                   f"checked")
      continue
    feature = by_name[name]
    feature.ClearField("drift_comparator")
    if cur[name].HasField("string_stats"):
      feature.drift_comparator.infinity_norm.threshold = float(threshold)
      comparators[name] = L_INFINITY
    else:
      feature.drift_comparator.jensen_shannon_divergence.threshold = float(
          threshold)
      comparators[name] = JENSEN_SHANNON
  return copy, comparators, notes


def check_drift(current: statistics_pb2.DatasetFeatureStatisticsList,
                previous: statistics_pb2.DatasetFeatureStatisticsList,
                schema: schema_pb2.Schema, thresholds: Mapping[str, float]
                ) -> Tuple[List[Measurement], List[str]]:
  """TFDV's drift measurements of every thresholded feature, and notes."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  compared, comparators, notes = drift_schema(schema, current, previous,
                                              thresholds)
  if not comparators:
    return [], notes
  anomalies = tfdv.validate_statistics(current, compared,
                                       previous_statistics=previous)
  measured = {}
  for info in anomalies.drift_skew_info:
    name = info.path.step[0] if info.path.step else ""
    for m in info.drift_measurements:
      measured[name] = max(measured.get(name, 0.0), m.value)
  out = []
  for name, comparator in sorted(comparators.items()):
    if name not in measured:
      notes.append(f"'{name}': TFDV measured no {comparator} distance")
      continue
    out.append(Measurement(name, comparator, float(measured[name]),
                           float(thresholds[name])))
  return out, notes


def _load_statistics(artifact: types.Artifact, split: str):
  from tfx.components.statistics_gen import stats_artifact_utils  # pylint: disable=g-import-not-at-top
  return stats_artifact_utils.load_statistics(artifact, split).proto()


def _load_schema(artifact: types.Artifact) -> schema_pb2.Schema:
  path = io_utils.get_only_uri_in_dir(artifact.uri)
  return io_utils.SchemaReader().read(path)


class Executor(base_executor.BaseExecutor):
  """Fails with DataDriftError when a feature drifted beyond its threshold."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    stats = artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
    schema = _load_schema(artifact_utils.get_single_instance(
        input_dict[SCHEMA_KEY]))
    thresholds = json_utils.loads(exec_properties.get(THRESHOLDS_KEY) or "{}")
    if not isinstance(thresholds, dict):
      raise ValueError(f"{THRESHOLDS_KEY} must be a JSON object "
                       f"{{feature: threshold}}, got {thresholds!r}")
    current_split = exec_properties.get(CURRENT_SPLIT_KEY) or CURRENT_SPLIT
    previous_split = exec_properties.get(PREVIOUS_SPLIT_KEY) or PREVIOUS_SPLIT
    splits = artifact_utils.decode_split_names(stats.split_names)
    result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
    source = (input_dict[EXAMPLES_KEY][0] if input_dict.get(EXAMPLES_KEY)
              else stats)  # where the span numbers are read
    spans = _span_text(source)

    if current_split not in splits:
      raise ValueError(
          f"The statistics ({stats.uri}) have no split {current_split!r} "
          f"(splits: {', '.join(splits) or 'none'}); feed the drift_examples "
          f"of a span-reading MovieLensExampleGen to its StatisticsGen")
    if previous_split not in splits:
      note = (f"No previous span to compare with ({spans or 'first span'}): "
              f"drift not checked.")
      logging.info("DriftGate: %s", note)
      self._publish(result, stats, source, [], [note], checked=False)
      return

    measurements, notes = check_drift(
        _load_statistics(stats, current_split),
        _load_statistics(stats, previous_split), schema, thresholds)
    for note in notes:
      logging.warning("DriftGate: %s", note)
    for m in measurements:
      logging.info("DriftGate: %s %s distance %.4f (threshold %g)%s",
                   m.feature, m.comparator, m.distance, m.threshold,
                   " DRIFT" if m.drifted else "")
    drifted = [m for m in measurements if m.drifted]
    if drifted:
      error = DataDriftError(drifted, spans)
      logging.error("%s", error)
      raise error
    self._publish(result, stats, source, measurements, notes, checked=True)
    logging.info("DriftGate: passed (%s, %d features compared)", spans,
                 len(measurements))

  def _publish(self, result: types.Artifact, stats: types.Artifact,
               source: types.Artifact, measurements: List[Measurement],
               notes: List[str], checked: bool) -> None:
    result.set_int_custom_property("passed", 1)
    result.set_int_custom_property("checked", int(checked))
    for key in ("span", "current_span", "previous_span"):
      value = _int_property(source, key)
      if value is not None:
        result.set_int_custom_property(key, value)
    for m in measurements:
      result.set_float_custom_property(f"drift_{m.feature}", m.distance)
    if notes:
      result.set_string_custom_property("note", " ".join(notes))
    io_utils.write_string_file(
        os.path.join(result.uri, RESULT_FILE_NAME),
        json.dumps({"passed": True, "checked": checked,
                    "statistics_uri": stats.uri, "notes": notes,
                    "measurements": [dataclasses.asdict(m)
                                     for m in measurements]},
                   indent=2, sort_keys=True))


def _int_property(artifact: types.Artifact, key: str) -> Optional[int]:
  if key == "span":
    return artifact.span if artifact.has_property("span") else None
  if artifact.has_custom_property(key):
    return artifact.get_int_custom_property(key)
  return None


def _span_text(artifact: types.Artifact) -> str:
  current = _int_property(artifact, "current_span")
  if current is None:
    current = _int_property(artifact, "span")
  previous = _int_property(artifact, "previous_span")
  if current is None:
    return ""
  if previous is None:
    return f"span {current}"
  return f"span {current} vs span {previous}"


class DriftGate(base_component.BaseComponent):
  """Stops the run when the newest span drifted from the previous one.

  Args:
    statistics: ExampleStatistics with splits "current" and (optionally)
      "previous": a StatisticsGen on MovieLensExampleGen's drift_examples.
    schema: the pipeline's schema (comparators are added to a copy).
    examples: optional, the drift_examples themselves: their span numbers
      name the compared spans in messages and in the result.
    thresholds: {feature: threshold}; the comparator (L-infinity or
      Jensen-Shannon) follows the feature's statistics. Features missing
      from the schema or the statistics are skipped with a note.

  Output `result`: DataDriftResult with passed=1, checked (0 without a
  previous span) and drift_<feature> distances. Make downstream components
  wait for it with `transform.add_upstream_node(gate)`.
  """
  SPEC_CLASS = DriftGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, statistics: types.BaseChannel, schema: types.BaseChannel,
               thresholds: Mapping[str, float],
               examples: Optional[types.BaseChannel] = None,
               current_split: str = CURRENT_SPLIT,
               previous_split: str = PREVIOUS_SPLIT):
    bad = {k: v for k, v in thresholds.items()
           if v is not None and not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
      raise ValueError(f"drift thresholds must be numbers >= 0 (or None to "
                       f"skip a feature), got {bad}")
    spec = DriftGateSpec(
        statistics=statistics, schema=schema, examples=examples,
        thresholds=json_utils.dumps(
            {k: float(v) for k, v in sorted(thresholds.items())
             if v is not None}),
        current_split=current_split, previous_split=previous_split,
        result=types.Channel(type=DataDriftResult))
    super().__init__(spec=spec)
