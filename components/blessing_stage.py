"""Marks each ModelBlessing with the stage (retrieval / ranking) that made it.

Both stages bless models with the same artifact type, ModelBlessing. Locally
the blessed-model resolvers tell them apart by producer (channels filtered by
producer component id). TFX 1.16's KubeflowV2 compiler, however, turns
LatestBlessedModelStrategy into a fixed artifact query
(`schema_title="tfx.ModelBlessing" AND metadata.blessed.number_value=1`)
that ignores the producer, so on Kubeflow a ranking evaluator could be
handed the latest blessed *retrieval* model as its baseline.

The fix has two halves: every evaluator writes a `blessing_stage` custom
property on its blessing (this module: `RankingEvaluator` for the stock
TFMA Evaluator; RetrievalEvaluator does the same in its executor), and
kubeflow_runner.py adds `metadata.blessing_stage.string_value="<stage>"` to
each stage's compiled blessing query (`add_stage_filters`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

from tfx import types
from tfx.components import Evaluator
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils

STAGE_PROPERTY = "blessing_stage"
RETRIEVAL = "retrieval"
RANKING = "ranking"


def tag(blessing: types.Artifact, stage: str) -> None:
  blessing.set_string_custom_property(STAGE_PROPERTY, stage)


class RankingEvaluatorExecutor(evaluator_executor.Executor):
  """The stock TFMA Evaluator executor, tagging its blessing as ranking's."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    if output_dict.get("blessing"):
      tag(artifact_utils.get_single_instance(output_dict["blessing"]), RANKING)


class RankingEvaluator(Evaluator):
  """tfx.components.Evaluator whose blessing carries blessing_stage=ranking."""
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
