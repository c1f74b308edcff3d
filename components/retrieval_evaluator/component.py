"""RetrievalEvaluator: a TFX component (own spec + executor, MLMD lineage).

    evaluator = RetrievalEvaluator(
        model=retrieval_trainer.outputs["model"],
        examples=example_gen.outputs["examples"],          # raw, splits train/eval
        catalogue=catalogue_gen.outputs["examples"],       # split "catalogue"
        baseline_model=resolver.outputs["model"])          # optional
    pusher = Pusher(model=..., model_blessing=evaluator.outputs["blessing"], ...)

Outputs: `evaluation` (ModelEvaluation; <uri>/metrics.json and summary.txt)
and `blessing` (ModelBlessing, stock-Evaluator compatible).
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.retrieval_evaluator import executor as ex


class RetrievalEvaluatorSpec(ComponentSpec):
  """Inputs, outputs and parameters of RetrievalEvaluator."""
  PARAMETERS = {
      ex.MARGIN_KEY: ExecutionParameter(type=float),
      ex.TOLERANCE_KEY: ExecutionParameter(type=float),
      ex.KS_KEY: ExecutionParameter(type=str),  # JSON list of ints
      ex.BLESSING_K_KEY: ExecutionParameter(type=int),
      ex.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
      ex.TRAIN_SPLIT_KEY: ExecutionParameter(type=str),
      ex.CATALOGUE_SPLIT_KEY: ExecutionParameter(type=str),
      ex.BATCH_SIZE_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      ex.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      ex.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      ex.CATALOGUE_KEY: ChannelParameter(type=standard_artifacts.Examples),
      ex.BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model,
                                              optional=True),
  }
  OUTPUTS = {
      ex.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
      ex.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class RetrievalEvaluator(base_component.BaseComponent):
  """Full-catalogue retrieval metrics vs popularity (and a baseline model).

  Blessed when hit@`blessing_k` excluding training-seen movies is at least
  popularity's + `margin_over_popularity` and, if a baseline model is given,
  at least the baseline model's − `baseline_tolerance`.
  """
  SPEC_CLASS = RetrievalEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ex.Executor)  # a Beam executor: see executor.py

  def __init__(self,
               model: types.BaseChannel,
               examples: types.BaseChannel,
               catalogue: types.BaseChannel,
               baseline_model: Optional[types.BaseChannel] = None,
               margin_over_popularity: float = 0.02,
               baseline_tolerance: float = 0.01,
               ks: Sequence[int] = (10, 50, 100),
               blessing_k: int = 100,
               eval_split: str = "eval",
               train_split: str = "train",
               catalogue_split: str = "catalogue",
               batch_size: int = 512):
    spec = RetrievalEvaluatorSpec(
        model=model, examples=examples, catalogue=catalogue,
        baseline_model=baseline_model,
        margin_over_popularity=float(margin_over_popularity),
        baseline_tolerance=float(baseline_tolerance),
        ks=json.dumps(sorted(set(int(k) for k in ks))),
        blessing_k=int(blessing_k),
        eval_split=eval_split, train_split=train_split,
        catalogue_split=catalogue_split, batch_size=int(batch_size),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
