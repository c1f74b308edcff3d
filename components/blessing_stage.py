"""Marks each ModelBlessing with the stage (retrieval / ranking) that made it.

Both stages bless models with the same artifact type, ModelBlessing. Locally
the blessed-model resolvers tell them apart by producer (channels filtered by
producer component id). TFX 1.16's KubeflowV2 compiler, however, turns
LatestBlessedModelStrategy into a fixed artifact query
(`schema_title="tfx.ModelBlessing" AND metadata.blessed.number_value=1`)
that ignores the producer, so on Kubeflow a ranking evaluator could be
handed the latest blessed *retrieval* model as its baseline.

The fix has two halves: every evaluator writes a `blessing_stage` custom
property on its blessing (`write_blessing`, used by RetrievalEvaluator →
"retrieval" and TwoStageEvaluator → "ranking"; `RankingEvaluator`, the
stock TFMA Evaluator, tags its RMSE-threshold blessing "ranking_rating",
which only feeds the TwoStageEvaluator, so a stage-filtered query for
"ranking" finds only the blessings the RankingPusher follows), and
kubeflow_runner.py adds `metadata.blessing_stage.string_value="<stage>"` to
each stage's compiled blessing query (`add_stage_filters`). The baseline
resolvers read the ServingPusher's `served_blessing` (blessed only when the
model was pushed, components/serving_pusher.py), tagged "<stage>_served"
(`served_stage`): the query each resolver compiles to.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

from absl import logging
from tfx import types
from tfx.components import Evaluator
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils

STAGE_PROPERTY = "blessing_stage"
RETRIEVAL = "retrieval"
RANKING = "ranking"
RANKING_RATING = "ranking_rating"  # TFMA's RMSE blessing, an input of TwoStageEvaluator
SERVED_SUFFIX = "_served"  # the ServingPusher's blessing: pushed, hence served


def served_stage(stage: str) -> str:
  """The tag of a stage's served blessing ("retrieval" → "retrieval_served"),
  what that stage's baseline resolver reads."""
  return stage + SERVED_SUFFIX


def tag(blessing: types.Artifact, stage: str) -> None:
  blessing.set_string_custom_property(STAGE_PROPERTY, stage)


def write_blessing(blessing: types.Artifact, model: types.Artifact, blessed: bool,
                   message: str, stage: str, baseline: Optional[types.Artifact] = None,
                   component_id: Optional[str] = None) -> None:
  """Writes a ModelBlessing as the stock Evaluator does, tagged with `stage`.

  Same custom properties (tfx.components.evaluator.constants) and marker file
  (BLESSED / NOT_BLESSED), so the stock Pusher and LatestBlessedModelStrategy
  work with the blessings of our own evaluators.
  """
  blessing.set_string_custom_property(
      constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
  if baseline is not None:
    blessing.set_string_custom_property(
        constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
    blessing.set_int_custom_property(
        constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
  if component_id:
    blessing.set_string_custom_property("component_id", component_id)
  blessing.set_string_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY, message)
  tag(blessing, stage)  # for Kubeflow's resolver
  name = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
  io_utils.write_string_file(os.path.join(blessing.uri, name), "")
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE)
  logging.info("Blessing result %s (%s) written to %s.", blessed, stage, blessing.uri)


def is_blessed(blessing: types.Artifact) -> bool:
  """Whether a ModelBlessing says blessed (property, else marker file)."""
  if constants.ARTIFACT_PROPERTY_BLESSED_KEY in blessing.mlmd_artifact.custom_properties:
    return blessing.get_int_custom_property(
        constants.ARTIFACT_PROPERTY_BLESSED_KEY) == constants.BLESSED_VALUE
  return fileio.exists(os.path.join(blessing.uri, constants.BLESSED_FILE_NAME))


class RankingEvaluatorExecutor(evaluator_executor.Executor):
  """The stock TFMA Evaluator executor, tagging its blessing ranking_rating."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    if output_dict.get("blessing"):
      tag(artifact_utils.get_single_instance(output_dict["blessing"]),
          RANKING_RATING)


class RankingEvaluator(Evaluator):
  """tfx.components.Evaluator whose blessing carries blessing_stage=ranking_rating."""
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(RankingEvaluatorExecutor)


def add_stage_filters(spec: Mapping[str, Any], stage_of_resolver: Mapping[str, str]
                      ) -> int:
  """Adds the stage to each blessed-model resolver's compiled query, in place.

  Args:
    spec: the compiled pipeline (PipelineJob or PipelineSpec dict, as
      KubeflowV2DagRunner writes it).
    stage_of_resolver: resolver node id → stage, e.g.
      {"LatestBlessedRankingModel": "ranking"}.

  Returns:
    The number of queries changed (one per resolver).
  """
  pipeline_spec = spec.get("pipelineSpec", spec)
  executors = pipeline_spec["deploymentSpec"]["executors"]
  changed = 0
  for resolver_id, stage in stage_of_resolver.items():
    label = f"{resolver_id}-model-blessing-resolver_executor"
    queries = executors[label]["resolver"]["outputArtifactQueries"]
    for query in queries.values():
      clause = f'metadata.{STAGE_PROPERTY}.string_value="{stage}"'
      if clause not in query["filter"]:
        query["filter"] += f" AND {clause}"
        changed += 1
  return changed
