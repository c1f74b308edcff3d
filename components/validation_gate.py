"""ValidationGate: stops a pipeline run when ExampleValidator found anomalies.

ExampleValidator only records anomalies (ExampleAnomalies artifact, one
`<uri>/Split-<split>/SchemaDiff.pb` per split, plus a `blessed` custom property
{split: 0/1}); the run goes on regardless. This component reads that artifact
and fails its execution with a DataValidationError naming every split, feature
and anomaly, so nothing downstream of it runs. On success it publishes a small
DataValidationResult artifact (passed=1, the splits checked) that gives MLMD
the lineage "these examples were validated"; make Transform wait for it with

    gate = ValidationGate(anomalies=example_validator.outputs["anomalies"])
    transform.add_upstream_node(gate)
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.example_validator import executor as example_validator_executor
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import io_utils
from tfx.utils import json_utils

from tensorflow_metadata.proto.v0 import anomalies_pb2

ANOMALIES_KEY = "anomalies"
RESULT_KEY = "result"
SPLITS_TO_CHECK_KEY = "splits_to_check"

# What ExampleValidator writes (its executor's names, imported).
ANOMALIES_FILE_NAME = example_validator_executor.DEFAULT_FILE_NAME
BLESSED_PROPERTY = example_validator_executor.ARTIFACT_PROPERTY_BLESSED_KEY
NOT_BLESSED_VALUE = example_validator_executor.NOT_BLESSED_VALUE
# What the gate writes into its result artifact.
RESULT_FILE_NAME = "validation_result.json"

_FAILED_HEADER = "Data validation failed; Transform and training will not run."


class DataValidationError(RuntimeError):
  """Anomalies were found; `failures` maps each failing split to its lines."""

  def __init__(self, failures: Dict[str, List[str]]):
    self.failures = failures
    lines = [_FAILED_HEADER]
    for split, problems in failures.items():
      lines += [f"  split {split}: {p}" for p in problems]
    super().__init__("\n".join(lines))


class DataValidationResult(Artifact):
  """The gate's verdict: `passed` (1) and `split_names` (the splits checked)."""
  # KFP v2 needs custom artifact types as "<module>.<Name>" schema titles,
  # and TFX's Kubeflow entrypoint imports the class by that title
  # (components/__init__.py resolves it).
  TYPE_NAME = "components.DataValidationResult"
  # Custom properties only (passed, split_names, span): KFP v2 accepts no
  # declared properties on custom artifact types.
  PROPERTIES = {}


class ValidationGateSpec(ComponentSpec):
  PARAMETERS = {
      # JSON list of split names; absent or null: every split of `anomalies`.
      SPLITS_TO_CHECK_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
  }
  OUTPUTS = {
      RESULT_KEY: ChannelParameter(type=DataValidationResult),
  }


def _read_anomalies(split_uri: str) -> anomalies_pb2.Anomalies:
  """The Anomalies proto ExampleValidator wrote for one split."""
  path = os.path.join(split_uri, ANOMALIES_FILE_NAME)
  if not fileio.exists(path):
    path = io_utils.get_only_uri_in_dir(split_uri)  # raises if none or many
  anomalies = anomalies_pb2.Anomalies()
  if path.endswith(".pbtxt"):
    io_utils.parse_pbtxt_file(path, anomalies)
  else:
    anomalies.ParseFromString(io_utils.read_bytes_file(path))
  return anomalies


def describe_anomalies(anomalies: anomalies_pb2.Anomalies) -> List[str]:
  """One line per anomaly: "feature 'x': <short> (<description>)"."""
  lines = []
  if anomalies.data_missing:
    lines.append("no data (the split has no examples)")
  if anomalies.HasField("dataset_anomaly_info"):
    info = anomalies.dataset_anomaly_info
    lines.append(f"dataset: {info.short_description} ({info.description})")
  for name in sorted(anomalies.anomaly_info):
    info = anomalies.anomaly_info[name]
    lines.append(f"feature '{name}': {info.short_description} "
                 f"({info.description})")
  return lines


class Executor(base_executor.BaseExecutor):
  """Fails with DataValidationError when any checked split has anomalies."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    anomalies_artifact = artifact_utils.get_single_instance(
        input_dict[ANOMALIES_KEY])
    available = artifact_utils.decode_split_names(
        anomalies_artifact.split_names)
    requested = json_utils.loads(
        exec_properties.get(SPLITS_TO_CHECK_KEY) or "null")
    if requested is None:
      splits = list(available)
    elif isinstance(requested, list):
      splits = list(requested)
    else:
      raise ValueError(f"{SPLITS_TO_CHECK_KEY} must be a JSON list of split "
                       f"names, got {requested!r}")
    if not splits:
      raise DataValidationError(
          {"(none)": ["the anomalies artifact has no splits to check"]})

    blessed = {}
    if anomalies_artifact.has_custom_property(BLESSED_PROPERTY):
      blessed = anomalies_artifact.get_json_value_custom_property(
          BLESSED_PROPERTY) or {}
      if isinstance(blessed, str):  # older writers stored a JSON string
        blessed = json.loads(blessed)

    failures: Dict[str, List[str]] = {}
    counts: Dict[str, int] = {}
    for split in splits:
      if split not in available:
        failures[split] = [f"not validated (ExampleValidator checked only "
                           f"{', '.join(available) or 'no split'})"]
        continue
      split_uri = artifact_utils.get_split_uri([anomalies_artifact], split)
      try:
        anomalies = _read_anomalies(split_uri)
      except Exception as e:  # pylint: disable=broad-except
        failures[split] = [f"no readable anomalies file in {split_uri} ({e})"]
        continue
      problems = describe_anomalies(anomalies)
      if not problems and blessed.get(split) == NOT_BLESSED_VALUE:
        problems = ["ExampleValidator marked the split not blessed"]
      counts[split] = len(problems)
      if problems:
        failures[split] = problems
      logging.info("ValidationGate: split %s: %d anomalies", split,
                   len(problems))

    if failures:
      error = DataValidationError(failures)
      logging.error("%s", error)
      raise error

    result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
    result.set_int_custom_property("passed", 1)
    result.set_string_custom_property(
        "split_names", artifact_utils.encode_split_names(splits))
    if anomalies_artifact.has_property("span"):
      result.set_int_custom_property("span", anomalies_artifact.span)
    io_utils.write_string_file(
        os.path.join(result.uri, RESULT_FILE_NAME),
        json.dumps({"passed": True, "splits_checked": splits,
                    "anomalies_uri": anomalies_artifact.uri,
                    "anomaly_counts": counts}, indent=2, sort_keys=True))
    logging.info("ValidationGate: passed (splits %s)", ", ".join(splits))


class ValidationGate(base_component.BaseComponent):
  """Stops the run unless ExampleValidator found no anomalies.

  Args:
    anomalies: ExampleAnomalies channel (ExampleValidator.outputs["anomalies"]).
    splits_to_check: split names to require clean; default every split the
      anomalies artifact has.

  Output `result`: DataValidationResult with passed=1 and split_names. Make
  downstream components wait for it with `transform.add_upstream_node(gate)`.
  """
  SPEC_CLASS = ValidationGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, anomalies: types.BaseChannel,
               splits_to_check: Optional[List[str]] = None):
    spec = ValidationGateSpec(
        anomalies=anomalies,
        splits_to_check=(json_utils.dumps(list(splits_to_check))
                         if splits_to_check is not None else None),
        result=types.Channel(type=DataValidationResult))
    super().__init__(spec=spec)
