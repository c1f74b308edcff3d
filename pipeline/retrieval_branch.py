"""Retrieval branch: two-tower Trainer → RetrievalEvaluator → ServingPusher.

The Trainer is the stock Trainer plus a `catalogue` input (every movie, so
the exported BruteForce index covers the whole catalogue). The retrieval
model served now (the latest pushed one: a resolver over the ServingPusher's
`served_blessing`, components/serving_pusher.py) is both the Trainer's
`base_model` (warm start, trainer_modules/warm_start.py) and the evaluator's
baseline, and the Pusher only pushes a blessed model, atomically. With tune=True a
Tuner (components/catalogue_tuner.py, trainer_modules/tuning.py) searches the
trainer's hyperparameters first and the Trainer trains with the best ones.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional


from components.catalogue_trainer import CatalogueTrainer
from components.catalogue_tuner import CatalogueTuner
from components.retrieval_evaluator import RetrievalEvaluator
from components.resolvers import latest_blessed_model_resolver
from components.serving_pusher import SERVED_BLESSING_KEY, ServingPusher
from common import versions
from pipeline import configs

TRAINER_ID = "RetrievalTrainer"
EVALUATOR_ID = "RetrievalEvaluator"
PUSHER_ID = "RetrievalPusher"
RESOLVER_ID = "LatestBlessedRetrievalModel"
TUNER_ID = "RetrievalTuner"
TUNER_FN = "trainer_modules.tuning.retrieval_tuner_fn"


def create(example_gen, transform, serving_dir: str,
           custom_config: Dict[str, Any], tune: bool = False,
           tune_trials: Optional[int] = None) -> List[Any]:
  # Resolved before this run's trainer: the model an earlier run pushed.
  baseline = latest_blessed_model_resolver(RESOLVER_ID, TRAINER_ID, PUSHER_ID,
                                           blessing_key=SERVED_BLESSING_KEY)
  tuner = None
  if tune:
    tuner = CatalogueTuner(
        tuner_fn=TUNER_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        raw_examples=example_gen.outputs["examples"],
        catalogue=example_gen.outputs["catalogue"],
        custom_config=custom_config, max_trials=tune_trials).with_id(TUNER_ID)
  trainer = CatalogueTrainer(
      run_fn=configs.RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      catalogue=example_gen.outputs["catalogue"],
      base_model=baseline.outputs["model"],
      hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
      custom_config=custom_config).with_id(TRAINER_ID)
  evaluator = RetrievalEvaluator(
      model=trainer.outputs["model"],
      examples=example_gen.outputs["examples"],
      catalogue=example_gen.outputs["catalogue"],
      baseline_model=baseline.outputs["model"],
      margin_over_popularity=configs.RETRIEVAL_MARGIN_OVER_POPULARITY,
      baseline_tolerance=configs.RETRIEVAL_BASELINE_TOLERANCE).with_id(EVALUATOR_ID)
  pusher = ServingPusher(
      model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
      model_dir=serving_dir, stage=versions.RETRIEVAL).with_id(PUSHER_ID)
  return [baseline] + ([tuner] if tuner else []) + [trainer, evaluator, pusher]
