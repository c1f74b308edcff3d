"""TFMA evaluation config of the ranking model (for the stock TFX Evaluator).

The Evaluator feeds the *raw* eval examples (ingestion's Split-eval) to the
exported `serving_default` signature of trainer_modules/ranking.py (input:
serialized tf.Examples, output: `predictions`), reads the label
`user_rating` and the slice features from the same raw examples, and blesses
the model when

* its overall RMSE is below `rmse_upper_bound` (absolute threshold), and
* its RMSE is at most `max_rmse_increase` above the baseline model's (the
  latest blessed model, given to the Evaluator as `baseline_model` by a
  Resolver with LatestBlessedModelStrategy).

On the first run there is no baseline: the TFX Evaluator then removes the
baseline model spec and every change threshold (it always "rubber stamps",
see tfx/components/evaluator/executor.py and
tfma.utils.update_eval_config_with_defaults), so only the absolute threshold
decides. No preprocessing function is needed: slices use raw features, which
TFMA reads from the raw examples (the model also exports a
`transform_features` signature, for slicing on transformed features via
`preprocessing_function_names` if ever wanted).
"""
from __future__ import annotations

import json
from typing import Iterable, Optional, Sequence

import common  # noqa: F401  pylint: disable=unused-import

import tensorflow_model_analysis as tfma
import tf_keras

from common import features as F

class BatchedMeanAbsoluteError(tf_keras.metrics.MeanAbsoluteError):
  """tf_keras's MAE (compiled, a batch at a time) under a class name TFMA has
  not registered. TFMA looks a MetricConfig's class_name up among its own
  metrics before it reads `module` (tfma.metrics.specs_from_metrics /
  metric_instance), so "MeanAbsoluteError" with module tf_keras.metrics was
  still TFMA's combiner, which updates example by example in Python (12 %
  of an evaluation of 200k rows)."""


CANDIDATE = "candidate"
BASELINE = "baseline"
RMSE_METRIC = "root_mean_squared_error"   # tf_keras RootMeanSquaredError's name
MAE_METRIC = "mean_absolute_error"
DEFAULT_SLICES = (F.USER_GENDER, F.BUCKETIZED_USER_AGE, F.USER_OCCUPATION_TEXT)


def _model_spec(name: str, is_baseline: bool) -> tfma.ModelSpec:
  return tfma.ModelSpec(
      name=name,
      signature_name="serving_default",
      label_key=F.USER_RATING,
      prediction_key="predictions",
      # A plain SavedModel with signatures (tf.saved_model.save of a tf.Module):
      # saying so spares TFMA a failing attempt to load it as a Keras model.
      model_type=tfma.TF_GENERIC,
      is_baseline=is_baseline)


def ranking_eval_config(rmse_upper_bound: float = 1.0,
                        max_rmse_increase: float = 0.01,
                        slices: Sequence[str] = DEFAULT_SLICES,
                        present_features: Optional[Iterable[str]] = None
                        ) -> tfma.EvalConfig:
  """EvalConfig: RMSE/MAE/count, overall and per slice, RMSE thresholds.

  Args:
    rmse_upper_bound: a model whose overall RMSE is not below this is not
      blessed.
    max_rmse_increase: a model whose RMSE exceeds the baseline's by more than
      this (absolute) is not blessed. Ignored when there is no baseline.
    slices: raw features to slice by (one slicing spec each).
    present_features: the raw features the data has (e.g. from the schema);
      slices on other features are left out. None keeps every slice.
  """
  slice_features = list(slices)
  if present_features is not None:
    present = set(present_features)
    slice_features = [s for s in slice_features if s in present]
  slicing_specs = [tfma.SlicingSpec()] + [
      tfma.SlicingSpec(feature_keys=[name]) for name in slice_features]

  rmse = tfma.MetricConfig(
      class_name="RootMeanSquaredError",  # tf_keras.metrics (TFMA has no RMSE)
      config=json.dumps({"name": RMSE_METRIC}),
      # The gate applies to the overall slice only: a MetricConfig.threshold
      # would apply to every slice, and small slices (a few dozen ratings of
      # one occupation) are noisy enough to veto any model. Slice metrics are
      # still computed and reported.
      per_slice_thresholds=[tfma.PerSliceMetricThreshold(
          slicing_specs=[tfma.SlicingSpec()],
          threshold=tfma.MetricThreshold(
              value_threshold=tfma.GenericValueThreshold(
                  upper_bound={"value": float(rmse_upper_bound)}),
              change_threshold=tfma.GenericChangeThreshold(
                  direction=tfma.MetricDirection.LOWER_IS_BETTER,
                  absolute={"value": float(max_rmse_increase)})))])
  # Why tf_keras's metrics and no MSE: TFMA's own MeanAbsoluteError and
  # MeanSquaredError combine example by example in Python, per slice; on
  # ml-100k's 20k eval rows they cost 8 s and 6 s of a 38 s evaluation, the
  # Keras metrics (compiled, batched) 3 s; MSE is RMSE squared.
  metrics = [
      tfma.MetricConfig(class_name="ExampleCount"),
      rmse,
      tfma.MetricConfig(class_name=BatchedMeanAbsoluteError.__name__,
                        module=__name__, config=json.dumps({"name": MAE_METRIC})),
  ]
  return tfma.EvalConfig(
      model_specs=[_model_spec(CANDIDATE, False), _model_spec(BASELINE, True)],
      slicing_specs=slicing_specs,
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
      options=tfma.Options(include_default_metrics={"value": False}))
