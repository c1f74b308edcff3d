"""A LatestBlessedModelStrategy resolver restricted to one producer pair.

A two-stage pipeline has two trainers producing Model artifacts, and
evaluators and ServingPushers producing ModelBlessing artifacts (the
ServingPusher's `served_blessing` says blessed only for a model it pushed:
the baseline of each stage is the model served, components/serving_pusher.py). The plain resolver from the
TFX templates (`Channel(type=Model)`, `Channel(type=ModelBlessing)`) would
pick the latest blessed model of *either* stage. Here both channels carry
`producer_component_id` and `output_key`, which the TFX IR compiler (local /
Beam / Airflow / KFP v1 runners) turns into a node-context query
(`<pipeline>.<node_id>`) plus an output-key filter on the resolver's inputs.

    baseline = latest_blessed_model_resolver(
        "LatestBlessedRetrievalModel", trainer_id="RetrievalTrainer",
        blessing_producer_id="RetrievalPusher", blessing_key="served_blessing")
    RetrievalEvaluator(..., baseline_model=baseline.outputs["model"])

The channels do not create DAG edges: the resolver runs before the current
run's trainer and returns the latest model blessed (here: pushed) in an
*earlier* run (or nothing on the first run).

Caveat (KubeflowV2DagRunner / Vertex): its step builder translates
LatestBlessedModelStrategy into fixed MLMD queries
(`schema_title="tfx.ModelBlessing" AND metadata.blessed=1`, then the Model
named by `current_model_id`) and ignores producer ids. kubeflow_runner.py
therefore adds each stage's `blessing_stage` to the compiled blessing query
(components/blessing_stage.py): "retrieval_served" / "ranking_served" (the
ServingPushers' served blessings, what the resolvers read); the evaluators'
own blessings carry "retrieval", "ranking" (TwoStageEvaluator, whose
blessing the RankingPusher follows) and "ranking_rating" (TFMA), never a
resolver's source.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.types import standard_artifacts

MODEL_OUTPUT = "model"
BLESSING_OUTPUT = "model_blessing"


def latest_blessed_model_resolver(name: str, trainer_id: str,
                                  blessing_producer_id: str,
                                  model_key: str = "model",
                                  blessing_key: str = "blessing"
                                  ) -> resolver.Resolver:
  """Resolver node `name` returning the latest blessed model of one stage.

  Args:
    name: node id of the resolver.
    trainer_id: id of the component producing the Model (output `model_key`).
    blessing_producer_id: id of the component producing the ModelBlessing
      (output `blessing_key`: "served_blessing" of a ServingPusher,
      "blessing" of an evaluator).

  The node's outputs are `model` and `model_blessing`.
  """
  return resolver.Resolver(
      strategy_class=latest_blessed_model_strategy.LatestBlessedModelStrategy,
      **{
          MODEL_OUTPUT: types.Channel(
              type=standard_artifacts.Model,
              producer_component_id=trainer_id, output_key=model_key),
          BLESSING_OUTPUT: types.Channel(
              type=standard_artifacts.ModelBlessing,
              producer_component_id=blessing_producer_id, output_key=blessing_key),
      }).with_id(name)
