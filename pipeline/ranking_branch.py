"""Ranking branch: Trainer → Evaluator (TFMA) → TwoStageEvaluator → ServingPusher.

The TwoStageEvaluator (components/two_stage_evaluator) blesses the ranking
model and the Pusher follows it: it scores, per eval user, the top-k that
`recommend` returns from this run's retrieval and ranking models against the
retrieval model's own top-k (and most-popular, EASE), and requires the
two-stage nDCG@k to win by configs.RANKING_NDCG_MARGIN, the RMSE to beat the
user+item bias baseline on the same split and TFMA's blessing to hold. So
the branch needs the retrieval branch's Trainer (create_pipeline refuses
ranking without retrieval). Implicit feedback (no ratings): Trainer →
TwoStageEvaluator → Pusher, no TFMA and no rating check.

The stock TFX Evaluator (its blessing tagged "ranking_rating", see
components/blessing_stage.py) runs TFMA on the raw eval split through the
model's serving signature (pipeline/ranking_eval.py): RMSE/MAE sliced by user
features, an absolute RMSE bound and a change threshold against the ranking
model served now (the latest pushed one: a resolver over the ServingPusher's
`served_blessing`, components/serving_pusher.py), which is also the
Trainer's `base_model` (warm start, trainer_modules/warm_start.py). The
Pusher only pushes a blessed model, atomically. With tune=True a Tuner
(components/catalogue_tuner.py, trainer_modules/tuning.py) searches the
trainer's hyperparameters first and the Trainer trains with the best ones.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from tfx.components import Trainer

from components.blessing_stage import RankingEvaluator
from components.catalogue_tuner import CatalogueTuner
from components.resolvers import latest_blessed_model_resolver
from components.two_stage_evaluator import TwoStageEvaluator
from components.serving_pusher import SERVED_BLESSING_KEY, ServingPusher
from common import versions
from pipeline import configs
from pipeline import ranking_eval

TRAINER_ID = "RankingTrainer"
EVALUATOR_ID = "RankingEvaluator"
TWO_STAGE_EVALUATOR_ID = "TwoStageEvaluator"
PUSHER_ID = "RankingPusher"
RESOLVER_ID = "LatestBlessedRankingModel"
TUNER_ID = "RankingTuner"
TUNER_FN = "trainer_modules.tuning.ranking_tuner_fn"


def create(example_gen, transform, serving_dir: str,
           custom_config: Dict[str, Any], present_features=None,
           tune: bool = False, tune_trials: Optional[int] = None,
           retrieval_trainer=None, implicit: bool = False) -> List[Any]:
  if retrieval_trainer is None:
    raise ValueError("The ranking branch needs the retrieval branch's Trainer: "
                     "its blessing is the two-stage evaluation of both models")
  # Resolved before this run's trainer: the model an earlier run pushed.
  baseline = latest_blessed_model_resolver(RESOLVER_ID, TRAINER_ID, PUSHER_ID,
                                           blessing_key=SERVED_BLESSING_KEY)
  tuner = None
  if tune:  # trials are scored through serving_default on the raw examples
    tuner = CatalogueTuner(
        tuner_fn=TUNER_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        raw_examples=example_gen.outputs["examples"],
        custom_config=custom_config, max_trials=tune_trials).with_id(TUNER_ID)
  trainer = Trainer(
      run_fn=configs.RANKING_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      base_model=baseline.outputs["model"],
      hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
      custom_config=custom_config).with_id(TRAINER_ID)
  evaluator = None
  if not implicit:  # TFMA's RMSE thresholds need a rating label
    evaluator = RankingEvaluator(
        examples=example_gen.outputs["examples"],
        example_splits=["eval"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=ranking_eval.ranking_eval_config(
            rmse_upper_bound=configs.RANKING_RMSE_UPPER_BOUND,
            max_rmse_increase=configs.RANKING_MAX_RMSE_INCREASE,
            present_features=present_features)).with_id(EVALUATOR_ID)
  two_stage = TwoStageEvaluator(
      model=retrieval_trainer.outputs["model"],
      ranking_model=trainer.outputs["model"],
      examples=example_gen.outputs["examples"],
      catalogue=example_gen.outputs["catalogue"],
      rating_blessing=evaluator.outputs["blessing"] if evaluator else None,
      k=configs.TWO_STAGE_K, n_candidates=configs.TWO_STAGE_N_CANDIDATES,
      ndcg_margin=configs.RANKING_NDCG_MARGIN,
      ease_lambda=configs.TWO_STAGE_EASE_LAMBDA).with_id(TWO_STAGE_EVALUATOR_ID)
  pusher = ServingPusher(
      model=trainer.outputs["model"], model_blessing=two_stage.outputs["blessing"],
      model_dir=serving_dir, stage=versions.RANKING).with_id(PUSHER_ID)
  return ([baseline] + ([tuner] if tuner else []) + [trainer]
          + ([evaluator] if evaluator else []) + [two_stage, pusher])
