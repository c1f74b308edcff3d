"""create_pipeline(): the whole two-stage recommender as one TFX pipeline.

Data flows top to bottom, one component per step:

  MovieLensExampleGen ─ examples (train/eval) + catalogue (every movie)
  StatisticsGen → schema (curated ImportSchemaGen, or SchemaGen for own data)
  ExampleValidator → ValidationGate  (anomalies stop the run here)
  [spans only] drift_examples (newest span, previous span)
    → DriftStatisticsGen → DriftGate  (drift beyond thresholds stops it here)
  Transform                          (vocabularies, buckets: transform/)
  ├─ retrieval: Trainer (two-tower) → RetrievalEvaluator → ServingPusher
  └─ ranking:   Trainer (rating)    → Evaluator (TFMA)   → TwoStageEvaluator → ServingPusher
                 (TwoStageEvaluator: the top-k `recommend` returns from both
                 models vs retrieval-only; it blesses the ranking model)
  (tune=True: a Tuner before each Trainer, its best hyperparameters → Trainer)
  BatchRecommender (after both Pushers): top-k of every user, Parquet

With span inputs (data "/data/ml/span-{SPAN}", or {SPAN} in a data config's
interactions path) the ingestion reads the spans the range config selects
(default: the newest) and also writes the newest and the previous span
side by side; the DriftGate runs after the ValidationGate (so invalid data
is reported as such, not as drift) and Transform waits for both gates.

Each evaluator compares against (and each Trainer warm-starts from) the
model *its own stage serves*: resolvers over the ServingPushers' served
blessings (components/serving_pusher.py), so a model blessed but never
pushed is never a baseline. Each Pusher only pushes a blessed model, whole
or not at all. No ML code lives here: only wiring; what runners do around a
run (progress, locks, schedule, retention, rollback, reports) is in
runners/.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

from tfx.components import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components import SchemaGen
from tfx.components import StatisticsGen
from tfx.components import Transform
from tfx.orchestration import pipeline as tfx_pipeline

from common import versions
from components.ingestion import MovieLensExampleGen
from components.ingestion import custom_source
from components.ingestion import detect_source_family
from components.drift_gate import DriftGate
from components.batch_recommender import BatchRecommender
from components.validation_gate import ValidationGate
from pipeline import configs
from pipeline import schemas
from trainer_modules import configs as trainer_configs


IMPLICIT_NOTE = ("The data is implicit feedback (data config: implicit: true): "
                 "no rating to predict, so the ranking model is trained on "
                 "engagement alone and blessed by the two-stage top-k only "
                 "(no TFMA RMSE evaluation, no rating check).")


def is_implicit(data_config: str) -> bool:
  """Whether a user's data config declares implicit feedback (no ratings)."""
  return bool(data_config) and bool(
      custom_source.load_config(data_config).get("implicit", False))


DRIFT_STATISTICS_GEN_ID = "DriftStatisticsGen"


def batch_recommender(components, serving_dir: str, k: int) -> BatchRecommender:
  """A BatchRecommender after the branches' Pushers (found by their ids)."""
  from pipeline import ranking_branch, retrieval_branch  # pylint: disable=g-import-not-at-top
  by_id = {c.id: c for c in components}
  ranking = {}
  if ranking_branch.PUSHER_ID in by_id:
    ranking = dict(
        ranking_model=by_id[ranking_branch.TRAINER_ID].outputs["model"],
        ranking_pushed_model=by_id[ranking_branch.PUSHER_ID].outputs["pushed_model"])
  return BatchRecommender(
      retrieval_model=by_id[retrieval_branch.TRAINER_ID].outputs["model"],
      retrieval_pushed_model=by_id[retrieval_branch.PUSHER_ID].outputs["pushed_model"],
      serving_dir=serving_dir, k=k, **ranking)


def span_range_config(range_config=None, rolling_spans: Optional[int] = None):
  """The span window: a RangeConfig (proto, dict or JSON), or the last N.

  rolling_spans=N is short for {"rolling_range": {"num_spans": N}}.
  """
  if rolling_spans is not None:
    if range_config:
      raise ValueError("Give range_config or rolling_spans, not both")
    if int(rolling_spans) < 1:
      raise ValueError(f"rolling_spans must be >= 1, got {rolling_spans}")
    return {"rolling_range": {"num_spans": int(rolling_spans)}}
  return range_config or None


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data: str,
    serving_dir: str,
    data_config: str = "",
    split: str = configs.DEFAULT_SPLIT,
    eval_fraction: float = configs.EVAL_FRACTION,
    max_bad_row_fraction: float = configs.MAX_BAD_ROW_FRACTION,
    transform_config: Optional[Dict[str, Any]] = None,
    retrieval_config: Optional[Dict[str, Any]] = None,
    ranking_config: Optional[Dict[str, Any]] = None,
    enable_retrieval: bool = True,
    enable_ranking: bool = True,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    enable_cache: bool = True,
    range_config=None,
    rolling_spans: Optional[int] = None,
    drift_thresholds: Optional[Dict[str, Optional[float]]] = None,
    tune: bool = False,
    tune_trials: Optional[int] = None,
    batch_recommendations: bool = True,
    batch_recommendations_k: int = 50,
) -> tfx_pipeline.Pipeline:
  """Wires ingestion → validation → Transform → two trainer branches.

  Args:
    data: a source for MovieLensExampleGen: "tfds:movielens/100k-ratings",
      a GroupLens folder or zip, or "" with data_config.
    serving_dir: pushed models go to <serving_dir>/retrieval/<version> and
      <serving_dir>/ranking/<version>.
    data_config: path of a data config file for a user's own interactions.
    enable_retrieval / enable_ranking: build each branch (ranking needs
      retrieval: its blessing is the two-stage evaluation of both models;
      for implicit-feedback data it has no TFMA evaluator).
    range_config: for span data ({SPAN} in data or in the data config's
      interactions path), which spans to read: a TFX RangeConfig, its dict
      or JSON; None: the newest span.
    rolling_spans: short for a rolling range of the last N spans.
    drift_thresholds: per-feature overrides of configs.DRIFT_THRESHOLDS
      (None removes a feature from the drift check); span data only.
    tune: a Tuner per stage (KerasTuner, trainer_modules/tuning.py) before
      its Trainer, which trains with the best hyperparameters found; off by
      default. tune_trials: trials per Tuner (None: tuning.DEFAULT_MAX_TRIALS).
    batch_recommendations: after both Pushers, a BatchRecommender writes
      the top batch_recommendations_k of every known user with the served
      models, when a model was pushed in this run (needs retrieval).
  """
  # Every config is checked before anything is built (a misspelt key or a
  # bad value is a one-line ConfigError naming it, trainer_modules/configs.py);
  # the components get the merged dicts, so exec properties and the cache
  # stay as they were.
  transform_config = dict(configs.TRANSFORM_CONFIG, **(transform_config or {}))
  retrieval_config = dict(configs.RETRIEVAL_CONFIG, **(retrieval_config or {}))
  ranking_config = dict(configs.RANKING_CONFIG, **(ranking_config or {}))
  for kind, config in (("transform", transform_config),
                       ("retrieval", retrieval_config), ("ranking", ranking_config)):
    trainer_configs.validate(kind, config)
  components = []

  # 1. Ingest: ratings as tf.Examples (train/eval) and the movie catalogue.
  example_gen = MovieLensExampleGen(
      source=data, data_config=data_config, split=split,
      eval_fraction=eval_fraction, max_bad_row_fraction=max_bad_row_fraction,
      range_config=span_range_config(range_config, rolling_spans))
  components.append(example_gen)

  # 2. Validate: statistics, the schema (curated per source family) and a
  #    gate that stops the run on anomalies.
  statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"])
  components.append(statistics_gen)
  family = detect_source_family(data, data_config)
  schema_file = schemas.schema_path(family)
  if schema_file:
    schema_gen = ImportSchemaGen(schema_file=schema_file)
  else:
    schema_gen = SchemaGen(statistics=statistics_gen.outputs["statistics"],
                           infer_feature_shape=True)
  components.append(schema_gen)
  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs["statistics"],
      schema=schema_gen.outputs["schema"])
  components.append(example_validator)
  gate = ValidationGate(anomalies=example_validator.outputs["anomalies"])
  components.append(gate)

  # 2b. Spans: the newest span against the one before it.
  drift_gate = None
  if example_gen.uses_spans:
    drift_statistics_gen = StatisticsGen(
        examples=example_gen.outputs["drift_examples"]).with_id(
            DRIFT_STATISTICS_GEN_ID)
    drift_gate = DriftGate(
        statistics=drift_statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        examples=example_gen.outputs["drift_examples"],
        thresholds=dict(configs.DRIFT_THRESHOLDS, **(drift_thresholds or {})))
    drift_gate.add_upstream_node(gate)  # invalid data is not reported as drift
    components += [drift_statistics_gen, drift_gate]
  elif drift_thresholds:
    logging.warning("drift_thresholds ignored: %s has no {SPAN} pattern, so "
                    "there is no previous span to compare with",
                    data or data_config)

  # 3. Transform: vocabularies and features for both trainers, computed once.
  transform = Transform(
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      preprocessing_fn=configs.PREPROCESSING_FN,
      custom_config=transform_config,
      disable_statistics=configs.TRANSFORM_DISABLE_STATISTICS)
  transform.add_upstream_node(gate)  # nothing trains on data that failed validation
  if drift_gate is not None:
    transform.add_upstream_node(drift_gate)  # ... nor on drifted data
  components.append(transform)

  if enable_retrieval:
    from pipeline import retrieval_branch  # pylint: disable=g-import-not-at-top
    components += retrieval_branch.create(
        example_gen=example_gen, transform=transform,
        serving_dir=os.path.join(serving_dir, versions.RETRIEVAL),
        custom_config=retrieval_config,
        tune=tune, tune_trials=tune_trials)
  implicit = enable_ranking and is_implicit(data_config)
  if implicit:
    logging.warning(IMPLICIT_NOTE)
  if enable_ranking and not enable_retrieval:
    raise ValueError("enable_ranking needs enable_retrieval: the ranking model "
                     "is blessed by the two-stage evaluation (TwoStageEvaluator) "
                     "of this run's retrieval and ranking models")
  if enable_ranking:
    from pipeline import ranking_branch  # pylint: disable=g-import-not-at-top
    components += ranking_branch.create(
        example_gen=example_gen, transform=transform,
        serving_dir=os.path.join(serving_dir, versions.RANKING),
        custom_config=ranking_config,
        present_features=([f.name for f in schemas.load_schema(family).feature]
                          if schema_file else None),
        tune=tune, tune_trials=tune_trials,
        retrieval_trainer=next(c for c in components
                               if c.id == retrieval_branch.TRAINER_ID),
        implicit=implicit)

  if batch_recommendations and enable_retrieval:
    components.append(batch_recommender(components, serving_dir,
                                        batch_recommendations_k))

  return tfx_pipeline.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or list(configs.BEAM_PIPELINE_ARGS),
  )
