"""Executor of MovieLensExampleGen: runs `ingest.ingest` into the artifacts."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components.ingestion import ingest

EXAMPLES_KEY = "examples"
CATALOGUE_KEY = "catalogue"
DRIFT_EXAMPLES_KEY = "drift_examples"
RANGE_CONFIG_KEY = "range_config"
SOURCE_KEY = "source"
DATA_CONFIG_KEY = "data_config"
SPLIT_KEY = "split"
EVAL_FRACTION_KEY = "eval_fraction"
MAX_BAD_ROW_FRACTION_KEY = "max_bad_row_fraction"
NUM_SHARDS_KEY = "num_shards"


def _mark_examples(artifact: types.Artifact, split_names: List[str]) -> None:
  artifact.split_names = artifact_utils.encode_split_names(split_names)
  examples_utils.set_payload_format(artifact,
                                    example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
  # The default of examples_utils.get_file_format (GZIP TFRecords).
  examples_utils.set_file_format(artifact, "tfrecords_gzip")


class Executor(base_executor.BaseExecutor):
  """Writes train/eval examples and the movie catalogue of one source."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    catalogue = artifact_utils.get_single_instance(output_dict[CATALOGUE_KEY])
    drift = (artifact_utils.get_single_instance(output_dict[DRIFT_EXAMPLES_KEY])
             if output_dict.get(DRIFT_EXAMPLES_KEY) else None)

    def prop(key, default):
      value = exec_properties.get(key)
      return default if value is None else value

    summary = ingest.ingest(
        source=prop(SOURCE_KEY, ""),
        data_config=prop(DATA_CONFIG_KEY, ""),
        split=prop(SPLIT_KEY, "random"),
        eval_fraction=float(prop(EVAL_FRACTION_KEY, 0.2)),
        max_bad_row_fraction=float(prop(MAX_BAD_ROW_FRACTION_KEY, 0.0)),
        examples_dir=examples.uri, catalogue_dir=catalogue.uri,
        range_config=prop(RANGE_CONFIG_KEY, "") or None,
        drift_dir=drift.uri if drift is not None else None,
        num_shards=int(prop(NUM_SHARDS_KEY, 0)))
    span = summary.span if summary.span is not None else 0

    _mark_examples(examples, [ingest.TRAIN, ingest.EVAL])
    examples.span = span
    for name, count in summary.num_examples.items():
      examples.set_int_custom_property(f"num_examples_{name}", count)
    examples.set_int_custom_property("num_bad_rows", summary.num_bad_rows)
    examples.set_int_custom_property("num_duplicates_dropped",
                                     summary.num_duplicates)
    examples.set_string_custom_property("source", summary.source)
    examples.set_string_custom_property("source_family", summary.source_family)
    examples.set_string_custom_property("split", summary.split)
    examples.set_int_custom_property("implicit", int(summary.implicit))
    for name in (ingest.TRAIN, ingest.EVAL):
      examples.set_int_custom_property(f"num_shards_{name}",
                                       summary.num_shards[name])

    if summary.spans:
      # Which spans the examples are the union of (span = the newest).
      examples.set_string_custom_property(
          "spans", ",".join(str(s) for s in summary.spans))

    _mark_examples(catalogue, [ingest.CATALOGUE])
    catalogue.span = span
    catalogue.set_int_custom_property("num_movies", summary.num_movies)
    catalogue.set_string_custom_property("source", summary.source)
    catalogue.set_string_custom_property("source_family",
                                         summary.source_family)
    logging.info("MovieLensExampleGen: %s", summary)

    if drift is not None:
      _mark_drift(drift, summary)


def _mark_drift(drift: types.Artifact, summary: ingest.IngestionSummary
                ) -> None:
  """Split names and span properties of the drift examples.

  Without spans (a plain folder given with a drift output) the artifact has
  no splits; the DriftGate then has nothing to compare and passes.
  """
  splits = list(summary.num_drift_examples)
  _mark_examples(drift, splits)
  drift.span = summary.span if summary.span is not None else 0
  if summary.span is not None:
    drift.set_int_custom_property("current_span", summary.span)
  if summary.previous_span is not None:
    drift.set_int_custom_property("previous_span", summary.previous_span)
  for name, count in summary.num_drift_examples.items():
    drift.set_int_custom_property(f"num_examples_{name}", count)
