"""Hyperparameter search for both trainers: TFX Tuner `tuner_fn`s (KerasTuner).

Why a black-box tuner around run_fn instead of a KerasTuner HyperModel: the
objective that matters is the one each stage is blessed on, measured on the
EXPORTED model (its serving signatures, raw tf.Examples in), not a Keras
training metric. So each trial

1. copies the Tuner's fn_args with custom_config updated by the trial's
   values (no base model: trials never warm-start) and with per-trial output
   dirs under fn_args.working_dir (trials/<id>/serving_model, model_run),
2. calls the stage's own run_fn (trainer_modules.retrieval / .ranking), so
   a trial trains exactly what the Trainer would train,
3. scores the export on the eval split and deletes it:
   * retrieval: hit@100 excluding training-seen movies over the whole
     catalogue, with the RetrievalEvaluator's own functions
     (components/retrieval_evaluator), i.e. the blessing metric;
   * ranking: ranking_objective() (one function, to maximise).

The search spaces below are keyed by config keys;
custom_config["tuner_search_space"] replaces single entries ({key:
[choices]}, {key: {"min", "max", "sampling", "step"}}, {key: fixed value},
{key: null} to drop it). A key that is not a hyperparameter of the trainer
(trainer_modules/configs.py), or a choice or bound that is no valid value of
it, is a ConfigError before any trial runs (it used to be skipped with a
warning: a misspelt key then searched nothing). Trials: custom_config
["tuner_max_trials"] (default DEFAULT_MAX_TRIALS, sized for 2 cores: each
trial is one full training of the stage), oracle custom_config
["tuner_oracle"]: "bayesian" (default; random for the first half of the
trials) or "random". KerasTuner's state lives under
fn_args.working_dir/keras_tuner.

The Tuner component (components/catalogue_tuner.py) writes the best trial's
HyperParameters config; the Trainer given `hyperparameters=` passes it as
fn_args.hyperparameters, and both trainers apply it over their
custom_config (configs.trainer_config: custom_config < tuned values).
"""
from __future__ import annotations

import copy
import gc
import importlib
import json
import logging
import math
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import common  # noqa: F401  pylint: disable=unused-import
import keras_tuner
import numpy as np
import tensorflow as tf
import tf_keras as keras
from tfx.components.tuner.component import TunerFnResult

from common import catalogue as catalogue_lib
from common import features as F
from components import catalogue_trainer
from components import catalogue_tuner
from components.retrieval_evaluator import executor as retrieval_eval
from components.retrieval_evaluator import metrics as M
from trainer_modules import configs

DEFAULT_MAX_TRIALS = 8
MAX_TRIALS_KEY = catalogue_tuner.MAX_TRIALS_KEY
SEARCH_SPACE_KEY = "tuner_search_space"
ORACLE_KEY = "tuner_oracle"
TUNER_KEY_PREFIX = "tuner_"  # custom_config keys for the Tuner, not run_fn

DEFAULT_ORACLE = "bayesian"
# configs kind → the trainer module whose run_fn the trials call.
TRAINER_MODULES = {"retrieval": "trainer_modules.retrieval",
                   "ranking": "trainer_modules.ranking"}

# Search spaces: {config key: [choices] | {"min", "max", "sampling", "step"}}.
RETRIEVAL_SEARCH_SPACE: Dict[str, Any] = {
    "embedding_dim": [32, 64, 128],
    "learning_rate": {"min": 1e-3, "max": 3e-2, "sampling": "log"},
    "epochs": {"min": 3, "max": 10},
    "temperature": [0.1, 0.2, 0.3, 0.5],
}
RANKING_SEARCH_SPACE: Dict[str, Any] = {
    "embedding_dim": [16, 32, 64],
    "l2": {"min": 3e-3, "max": 1e-1, "sampling": "log"},
    "learning_rate": {"min": 3e-4, "max": 1e-2, "sampling": "log"},
    "epochs": {"min": 3, "max": 12},
    "dropout": [0.0, 0.1, 0.2, 0.3],
}

RETRIEVAL_K = retrieval_eval.DEFAULTS[retrieval_eval.BLESSING_K_KEY]
RETRIEVAL_OBJECTIVE = f"hit@{RETRIEVAL_K}_excl_seen"
RANKING_OBJECTIVE = "negative_rmse"  # the name of ranking_objective()'s value


# ---------------------------------------------------------------------------
# Search space.

def _add(hps: keras_tuner.HyperParameters, name: str, spec: Any) -> None:
  if isinstance(spec, (list, tuple)):
    hps.Choice(name, list(spec))
  elif isinstance(spec, Mapping):
    lo, hi = spec["min"], spec["max"]
    sampling = spec.get("sampling", "linear")
    is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
    if is_int:
      hps.Int(name, lo, hi, step=spec.get("step", 1), sampling=sampling)
    else:
      hps.Float(name, float(lo), float(hi), step=spec.get("step"),
                sampling=sampling)
  else:
    hps.Fixed(name, spec)


def search_space(kind: str, space: Mapping[str, Any],
                 overrides: Optional[Mapping[str, Any]] = None
                 ) -> keras_tuner.HyperParameters:
  """HyperParameters of `space` updated by overrides (None drops a key).

  Raises:
    configs.ConfigError: a key that is not a hyperparameter of `kind`'s
      trainer, or a choice / bound that is not a valid value of it.
  """
  merged = dict(space)
  for key, spec in (overrides or {}).items():
    if spec is None:
      merged.pop(key, None)
    else:
      merged[key] = spec
  configs.check_search_space(configs.MODELS[kind], merged, kind)
  hps = keras_tuner.HyperParameters()
  for key, spec in merged.items():
    _add(hps, key, spec)
  if not hps.space:
    raise configs.ConfigError(f"{kind} config: empty search space: every key of "
                              f"{sorted(space)} was dropped by {SEARCH_SPACE_KEY}")
  return hps


# ---------------------------------------------------------------------------
# Trials.

def trial_fn_args(fn_args, values: Mapping[str, Any], trial_dir: str):
  """A copy of the Tuner's fn_args for one training of the stage's run_fn."""
  args = copy.copy(fn_args)  # keeps catalogue_uri / raw_*_files attributes
  config = {k: v for k, v in (fn_args.custom_config or {}).items()
            if not k.startswith(TUNER_KEY_PREFIX)}
  config.update(values)
  args.custom_config = config
  args.hyperparameters = None
  args.base_model = None  # trials compare configurations, not warm starts
  args.serving_model_dir = os.path.join(trial_dir, "serving_model")
  args.model_run_dir = os.path.join(trial_dir, "model_run")
  return args


class StageTuner(keras_tuner.Tuner):
  """Each trial: run_fn with the trial's values, then score(exported dir)."""

  def __init__(self, stage: str, run_fn: Callable[[Any], None],
               score: Callable[[str], float], **kwargs):
    super().__init__(**kwargs)
    self.stage = stage
    self.run_fn = run_fn
    self.score = score

  def run_trial(self, trial, fn_args):  # pylint: disable=arguments-differ
    values = dict(trial.hyperparameters.values)
    trial_dir = os.path.join(fn_args.working_dir, "trials", trial.trial_id)
    args = trial_fn_args(fn_args, values, trial_dir)
    name = self.oracle.objective.name
    logging.info("%s trial %s: %s", self.stage, trial.trial_id,
                 json.dumps(values, sort_keys=True))
    t0 = time.time()
    try:
      self.run_fn(args)
      value = float(self.score(args.serving_model_dir))
    except Exception:  # logged here: KerasTuner only keeps the traceback
      logging.exception("%s trial %s failed", self.stage, trial.trial_id)
      raise
    finally:
      keras.backend.clear_session()
      gc.collect()
      shutil.rmtree(trial_dir, ignore_errors=True)
    logging.info("%s trial %s: %s %.4f (%.0f s)", self.stage, trial.trial_id,
                 name, value, time.time() - t0)
    return {name: value}


def _oracle(kind: str, objective: keras_tuner.Objective, max_trials: int,
            hps: keras_tuner.HyperParameters, seed: int):
  """"bayesian" or "random" (configs checks the name)."""
  common_args = dict(objective=objective, max_trials=max_trials,
                     hyperparameters=hps, tune_new_entries=False,
                     allow_new_entries=False, seed=seed)
  if kind == "random":
    return keras_tuner.oracles.RandomSearchOracle(**common_args)
  return keras_tuner.oracles.BayesianOptimizationOracle(
      num_initial_points=max(2, max_trials // 2), **common_args)


def build_tuner(stage: str, kind: str, fn_args, space: Mapping[str, Any],
                objective: keras_tuner.Objective,
                score: Callable[[str], float]) -> TunerFnResult:
  """The TunerFnResult of one stage (its run_fn, search space and scorer)."""
  if not fn_args.working_dir:
    raise ValueError("The Tuner needs fn_args.working_dir (trial outputs and "
                     "KerasTuner state go there).")
  cfg = configs.validate(kind, fn_args.custom_config)  # before any trial
  trainer = importlib.import_module(TRAINER_MODULES[kind])
  hps = search_space(kind, space, cfg[SEARCH_SPACE_KEY])
  max_trials = cfg[MAX_TRIALS_KEY] or DEFAULT_MAX_TRIALS
  tuner = StageTuner(
      stage=stage, run_fn=trainer.run_fn, score=score,
      oracle=_oracle(cfg[ORACLE_KEY] or DEFAULT_ORACLE, objective, max_trials,
                     hps, cfg["seed"]),
      directory=os.path.join(fn_args.working_dir, "keras_tuner"),
      project_name=stage, overwrite=True)
  logging.info("%s: %d trials over %s, objective %s (%s)", stage, max_trials,
               [h.name for h in hps.space], objective.name, objective.direction)
  return TunerFnResult(tuner=tuner, fit_kwargs={"fn_args": fn_args})


# ---------------------------------------------------------------------------
# Objectives.

def _glob(patterns: Sequence[str]) -> List[str]:
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
  if not files:
    raise FileNotFoundError(f"No examples match {list(patterns)}")
  return files


def raw_files(fn_args, split: str) -> List[str]:
  """Raw (ingested) example files of `split` ("train" or "eval")."""
  patterns = getattr(fn_args, f"raw_{split}_files", None)
  uri = (fn_args.custom_config or {}).get(catalogue_tuner.RAW_EXAMPLES_URI)
  if not patterns and uri:
    patterns = [os.path.join(uri, f"Split-{split}", "*")]
  if not patterns:
    raise ValueError(
        "The Tuner scores exported models on the raw examples: use "
        "components.catalogue_tuner.CatalogueTuner(raw_examples=...) or set "
        f"custom_config[{catalogue_tuner.RAW_EXAMPLES_URI!r}].")
  return _glob(patterns)


def retrieval_eval_data(raw_train_files: Sequence[str],
                        raw_eval_files: Sequence[str],
                        catalogue_uri: str) -> Dict[str, Any]:
  """What retrieval_objective needs, built once for all trials (as the
  RetrievalEvaluator builds it: one query per eval user, whole catalogue)."""
  tr_u, tr_m, _ = retrieval_eval.read_ids(raw_train_files)
  ev_u, ev_m, first_rows = retrieval_eval.read_ids(raw_eval_files, keep_first=True)
  queries = retrieval_eval.query_examples_of(first_rows)
  cat = catalogue_lib.read_catalogue(catalogue_uri)
  cat_ids, cat_examples = cat["movie_ids"], cat["serialized"]
  data, users = M.build_eval_data_arrays(ev_u, ev_m, tr_u, tr_m, cat_ids,
                                         sorted(queries))
  return {"data": data, "queries": [queries[u] for u in users],
          "catalogue": cat_examples}


def retrieval_objective(model_dir: str, eval_data: Mapping[str, Any],
                        k: int = RETRIEVAL_K, batch_size: int = 512) -> float:
  """hit@k excluding training-seen movies over the whole catalogue."""
  result = retrieval_eval.evaluate_saved_model(
      model_dir, eval_data["queries"], eval_data["catalogue"], eval_data["data"],
      [k], batch_size)
  return float(result["all"][f"hit@{k}_excl_seen"] or 0.0)


def ranking_objective(model_dir: str, raw_eval_files: Sequence[str],
                      batch_size: int = 4096) -> float:
  """Negative RMSE of `serving_default` on the raw eval examples (maximise).

  raw_eval_files: files or glob patterns of serialized raw tf.Examples.

  The one place that defines what a ranking trial is scored on (its name is
  RANKING_OBJECTIVE).
  """
  serve = tf.saved_model.load(model_dir).signatures["serving_default"]
  spec = {F.LABEL_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=math.nan)}
  sq, n = 0.0, 0
  for batch in catalogue_lib.record_dataset(_glob(raw_eval_files)).batch(batch_size):
    y = tf.io.parse_example(batch, spec)[F.LABEL_KEY].numpy()
    pred = np.reshape(serve(examples=batch)["predictions"].numpy(), [-1])
    ok = ~np.isnan(y)
    sq += float(np.sum((pred[ok] - y[ok]) ** 2))
    n += int(ok.sum())
  if n == 0:
    raise ValueError(f"No rated eval examples in {list(raw_eval_files)}")
  return -math.sqrt(sq / n)


# ---------------------------------------------------------------------------
# TFX entry points (Tuner(tuner_fn="trainer_modules.tuning.<stage>_tuner_fn")).

def retrieval_tuner_fn(fn_args) -> TunerFnResult:
  """Tunes trainer_modules.retrieval on hit@100 (excl. seen), whole catalogue."""
  catalogue_uri = (getattr(fn_args, "catalogue_uri", None)
                   or (fn_args.custom_config or {}).get(catalogue_trainer.CATALOGUE_URI))
  if not catalogue_uri:
    raise ValueError("The retrieval Tuner needs the movie catalogue: use "
                     "components.catalogue_tuner.CatalogueTuner(catalogue=...).")
  eval_data = retrieval_eval_data(raw_files(fn_args, "train"),
                                  raw_files(fn_args, "eval"), catalogue_uri)
  logging.info("Retrieval tuning data: %s", M.counts(eval_data["data"]))
  return build_tuner(
      "RetrievalTuner", "retrieval", fn_args, RETRIEVAL_SEARCH_SPACE,
      keras_tuner.Objective(RETRIEVAL_OBJECTIVE, direction="max"),
      lambda model_dir: retrieval_objective(model_dir, eval_data))


def ranking_tuner_fn(fn_args) -> TunerFnResult:
  """Tunes trainer_modules.ranking on ranking_objective (raw eval examples)."""
  eval_files = raw_files(fn_args, "eval")
  return build_tuner(
      "RankingTuner", "ranking", fn_args, RANKING_SEARCH_SPACE,
      keras_tuner.Objective(RANKING_OBJECTIVE, direction="max"),
      lambda model_dir: ranking_objective(model_dir, eval_files))
