"""ValidationGate: stops a pipeline run when ExampleValidator found anomalies.

A TFX function component (`@component`): the gate is one function of its
artifacts, so TFX derives the spec, executor and component from the
signature.

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
import json
import os
from typing import Dict, List

from absl import logging
from tfx.components.example_validator import executor as example_validator_executor
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.utils import io_utils

from tensorflow_metadata.proto.v0 import anomalies_pb2

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


@component
def ValidationGate(  # pylint: disable=invalid-name (a component class)
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    result: OutputArtifact[DataValidationResult],
    splits_to_check: Parameter[List[str]] = None,
) -> None:
  """Stops the run unless ExampleValidator found no anomalies.

  Args:
    anomalies: ExampleAnomalies (ExampleValidator.outputs["anomalies"]).
    result: DataValidationResult with passed=1 and split_names; make
      downstream components wait for the gate with
      `transform.add_upstream_node(gate)`.
    splits_to_check: split names that must be clean; default every split
      the anomalies artifact has.

  Raises:
    DataValidationError: naming every failing split and its anomalies.
  """
  available = artifact_utils.decode_split_names(anomalies.split_names)
  if isinstance(splits_to_check, str):  # KubeflowV2 passes lists as JSON
    splits_to_check = json.loads(splits_to_check)
  splits = list(available if splits_to_check is None else splits_to_check)
  if not splits:
    raise DataValidationError(
        {"(none)": ["the anomalies artifact has no splits to check"]})

  blessed = {}
  if anomalies.has_custom_property(BLESSED_PROPERTY):
    blessed = anomalies.get_json_value_custom_property(BLESSED_PROPERTY) or {}
    if isinstance(blessed, str):  # older writers stored a JSON string
      blessed = json.loads(blessed)

  failures: Dict[str, List[str]] = {}
  counts: Dict[str, int] = {}
  for split in splits:
    if split not in available:
      failures[split] = [f"not validated (ExampleValidator checked only "
                         f"{', '.join(available) or 'no split'})"]
      continue
    split_uri = artifact_utils.get_split_uri([anomalies], split)
    try:
      found = _read_anomalies(split_uri)
    except Exception as e:  # pylint: disable=broad-except
      failures[split] = [f"no readable anomalies file in {split_uri} ({e})"]
      continue
    problems = describe_anomalies(found)
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

  result.set_int_custom_property("passed", 1)
  result.set_string_custom_property(
      "split_names", artifact_utils.encode_split_names(splits))
  if anomalies.has_property("span"):
    result.set_int_custom_property("span", anomalies.span)
  io_utils.write_string_file(
      os.path.join(result.uri, RESULT_FILE_NAME),
      json.dumps({"passed": True, "splits_checked": splits,
                  "anomalies_uri": anomalies.uri,
                  "anomaly_counts": counts}, indent=2, sort_keys=True))
  logging.info("ValidationGate: passed (splits %s)", ", ".join(splits))
