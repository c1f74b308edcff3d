"""Ranking branch: Trainer → Evaluator (TFMA) → Pusher.

The stock TFX Evaluator (its blessing tagged as ranking's, see
components/blessing_stage.py) runs TFMA on the raw eval split through the
model's serving signature (pipeline/ranking_eval.py): RMSE/MAE sliced by user
features, an absolute RMSE bound and a change threshold against the latest
blessed *ranking* model (resolver filtered by producer), which is also the
Trainer's `base_model` (warm start, trainer_modules/warm_start.py). The
Pusher only pushes a blessed model.
"""
from __future__ import annotations

from typing import Any, Dict, List

from tfx.components import Trainer

from components.blessing_stage import RankingEvaluator
from components.resolvers import latest_blessed_model_resolver
from pipeline import configs
from pipeline import pushing
from pipeline import ranking_eval

TRAINER_ID = "RankingTrainer"
EVALUATOR_ID = "RankingEvaluator"
PUSHER_ID = "RankingPusher"
RESOLVER_ID = "LatestBlessedRankingModel"


def create(example_gen, transform, schema_gen, serving_dir: str,
           custom_config: Dict[str, Any], present_features=None) -> List[Any]:
  del schema_gen
  # Resolved before this run's trainer: the model blessed in an earlier run.
  baseline = latest_blessed_model_resolver(RESOLVER_ID, TRAINER_ID, EVALUATOR_ID)
  trainer = Trainer(
      run_fn=configs.RANKING_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      base_model=baseline.outputs["model"],
      custom_config=custom_config).with_id(TRAINER_ID)
  evaluator = RankingEvaluator(
      examples=example_gen.outputs["examples"],
      example_splits=["eval"],
      model=trainer.outputs["model"],
      baseline_model=baseline.outputs["model"],
      eval_config=ranking_eval.ranking_eval_config(
          rmse_upper_bound=configs.RANKING_RMSE_UPPER_BOUND,
          max_rmse_increase=configs.RANKING_MAX_RMSE_INCREASE,
          present_features=present_features)).with_id(EVALUATOR_ID)
  pusher = pushing.blessed_model_pusher(trainer, evaluator, serving_dir, PUSHER_ID)
  return [baseline, trainer, evaluator, pusher]
