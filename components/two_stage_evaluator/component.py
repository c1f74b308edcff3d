"""TwoStageEvaluator: a TFX component scoring what `recommend` returns.

    evaluator = TwoStageEvaluator(
        model=retrieval_trainer.outputs["model"],          # this run's retrieval
        ranking_model=ranking_trainer.outputs["model"],    # this run's ranking
        examples=example_gen.outputs["examples"],          # raw, splits train/eval
        catalogue=example_gen.outputs["catalogue"],        # split "catalogue"
        rating_blessing=tfma_evaluator.outputs["blessing"])  # optional
    pusher = Pusher(model=ranking_trainer.outputs["model"],
                    model_blessing=evaluator.outputs["blessing"], ...)

Outputs: `evaluation` (ModelEvaluation; <uri>/metrics.json and summary.txt:
per-user P/R/nDCG/MAP@k of the two-stage top-k, the retrieval model's own
top-k, most-popular and EASE; the rating RMSE against the user+item bias
baseline) and `blessing` (ModelBlessing of the RANKING model, stock-Evaluator
compatible, blessing_stage=ranking). See executor.py for the rule.
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.two_stage_evaluator import executor as ex


class TwoStageEvaluatorSpec(ComponentSpec):
  """Inputs, outputs and parameters of TwoStageEvaluator."""
  PARAMETERS = {
      ex.K_KEY: ExecutionParameter(type=int),
      ex.N_CANDIDATES_KEY: ExecutionParameter(type=int),
      ex.NDCG_MARGIN_KEY: ExecutionParameter(type=float),
      ex.EASE_LAMBDA_KEY: ExecutionParameter(type=float),
      ex.MAX_USERS_KEY: ExecutionParameter(type=int, optional=True),
      ex.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
      ex.TRAIN_SPLIT_KEY: ExecutionParameter(type=str),
      ex.CATALOGUE_SPLIT_KEY: ExecutionParameter(type=str),
      ex.BATCH_SIZE_KEY: ExecutionParameter(type=int),
      ex.PROGRESS_EVERY_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      ex.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      ex.RANKING_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      ex.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      ex.CATALOGUE_KEY: ChannelParameter(type=standard_artifacts.Examples),
      ex.RATING_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing,
                                               optional=True),
  }
  OUTPUTS = {
      ex.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
      ex.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class TwoStageEvaluator(base_component.BaseComponent):
  """Two-stage top-k per user vs retrieval-only, most-popular and EASE.

  The ranking model is blessed when the two-stage ndcg@k is at least the
  retrieval-only ndcg@k + `ndcg_margin`, its RMSE (explicit ratings) is
  below the user+item bias baseline's on the same split, and, if given,
  `rating_blessing` (TFMA's RMSE thresholds) is blessed.
  """
  SPEC_CLASS = TwoStageEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ex.Executor)  # a Beam executor: see executor.py

  def __init__(self,
               model: types.BaseChannel,
               ranking_model: types.BaseChannel,
               examples: types.BaseChannel,
               catalogue: types.BaseChannel,
               rating_blessing: Optional[types.BaseChannel] = None,
               k: int = ex.DEFAULTS[ex.K_KEY],
               n_candidates: int = ex.DEFAULTS[ex.N_CANDIDATES_KEY],
               ndcg_margin: float = ex.DEFAULTS[ex.NDCG_MARGIN_KEY],
               ease_lambda: float = ex.DEFAULTS[ex.EASE_LAMBDA_KEY],
               max_users: Optional[int] = None,
               eval_split: str = "eval",
               train_split: str = "train",
               catalogue_split: str = "catalogue",
               batch_size: int = ex.DEFAULTS[ex.BATCH_SIZE_KEY],
               progress_every: int = ex.DEFAULTS[ex.PROGRESS_EVERY_KEY]):
    spec = TwoStageEvaluatorSpec(
        model=model, ranking_model=ranking_model, examples=examples,
        catalogue=catalogue, rating_blessing=rating_blessing,
        k=int(k), n_candidates=int(n_candidates), ndcg_margin=float(ndcg_margin),
        ease_lambda=float(ease_lambda),
        max_users=None if max_users is None else int(max_users),
        eval_split=eval_split, train_split=train_split,
        catalogue_split=catalogue_split, batch_size=int(batch_size),
        progress_every=int(progress_every),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
