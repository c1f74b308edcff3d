"""BatchRecommender: nightly two-stage top-k for every user, inside the pipeline.

    batch = BatchRecommender(
        retrieval_model=retrieval_trainer.outputs["model"],
        retrieval_pushed_model=retrieval_pusher.outputs["pushed_model"],
        ranking_model=ranking_trainer.outputs["model"],              # optional
        ranking_pushed_model=ranking_pusher.outputs["pushed_model"],  # optional
        serving_dir=SERVING_DIR, k=50)

Placed after both Pushers. It recommends only when at least one model was
pushed in this run, with the models `recommend` serves right after the run,
through serving's own Recommender (executor.py), so batch and online
answers are the same. Lineage: the output is an execution output of these
input models and pushes in ML Metadata.

Output `recommendations` (Examples, payload FORMAT_PARQUET, file_format
"parquet", split "recommendations"):
`<uri>/Split-recommendations/recommendations.parquet`, one row per
(user, rank), row groups of `chunk_users` users:

  user_id           string   the user (known to the retrieval model, or from users_file)
  rank              int32    1 = best, in serving's order (recommend's items)
  movie_id          string
  title             string
  genres            list<string>  genre names
  score             double   retrieval score (query · candidate embedding)
  rank_score        double   ranking model's score (its order); null without one
  predicted_rating  double   ranking model's rating; null without a ranking model
  retrieval_rank    int32    1-based position among the retrieved candidates
  ranking_rank      int32    1-based position by rank_score; null without one
  known_user        bool     False: cold-start answer (id unknown to the model)

A user with fewer than k unseen movies has fewer rows. Custom properties:
`generated` (1, or 0 with `skip_reason` when nothing was pushed in this run:
then the file has zero rows), `num_users`, `num_rows`, `num_known_users`,
`num_file_users`, `num_cold_start_users`, `num_partial_users`,
`users_per_second`, `k`, `n_candidates`, and per model `<stage>_model_dir`
and `<stage>_source` ("pushed in this run" / "served (pushed earlier)" /
"none").
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.batch_recommender import executor as ex


class BatchRecommenderSpec(ComponentSpec):
  """Inputs, outputs and parameters of BatchRecommender."""
  PARAMETERS = {
      ex.K_KEY: ExecutionParameter(type=int),
      ex.N_CANDIDATES_KEY: ExecutionParameter(type=int),
      ex.USERS_FILE_KEY: ExecutionParameter(type=str, optional=True),
      ex.SERVING_DIR_KEY: ExecutionParameter(type=str, optional=True),
      ex.CHUNK_USERS_KEY: ExecutionParameter(type=int),
      ex.LOG_EVERY_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      ex.RETRIEVAL_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      ex.RETRIEVAL_PUSHED_MODEL_KEY: ChannelParameter(
          type=standard_artifacts.PushedModel),
      ex.RANKING_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model,
                                             optional=True),
      ex.RANKING_PUSHED_MODEL_KEY: ChannelParameter(
          type=standard_artifacts.PushedModel, optional=True),
  }
  OUTPUTS = {
      ex.RECOMMENDATIONS_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }


class BatchRecommender(base_component.BaseComponent):
  """Top-k recommendations of every known user (+ users_file) as Parquet.

  Args:
    serving_dir: the Pushers' base folder (with retrieval/ and ranking/):
      where the model not pushed in this run is still served from.
    users_file: optional text file of extra user ids, one per line (unknown
      ones get cold-start recommendations).
    k / n_candidates: as `recommend`'s (top k of n_candidates retrieved).
    chunk_users: users per Parquet row group (bounds memory).
    log_every: a progress log line every this many users.
  """
  SPEC_CLASS = BatchRecommenderSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ex.Executor)

  def __init__(self,
               retrieval_model: types.BaseChannel,
               retrieval_pushed_model: types.BaseChannel,
               ranking_model: Optional[types.BaseChannel] = None,
               ranking_pushed_model: Optional[types.BaseChannel] = None,
               serving_dir: str = "",
               users_file: str = "",
               k: int = ex.DEFAULT_K,
               n_candidates: int = ex.DEFAULTS[ex.N_CANDIDATES_KEY],
               chunk_users: int = ex.DEFAULTS[ex.CHUNK_USERS_KEY],
               log_every: int = ex.DEFAULTS[ex.LOG_EVERY_KEY]):
    if (ranking_model is None) != (ranking_pushed_model is None):
      raise ValueError("Give both ranking_model and ranking_pushed_model, or neither")
    spec = BatchRecommenderSpec(
        retrieval_model=retrieval_model,
        retrieval_pushed_model=retrieval_pushed_model,
        ranking_model=ranking_model, ranking_pushed_model=ranking_pushed_model,
        k=int(k), n_candidates=int(n_candidates), users_file=users_file,
        serving_dir=serving_dir, chunk_users=int(chunk_users),
        log_every=int(log_every),
        recommendations=types.Channel(type=standard_artifacts.Examples))
    super().__init__(spec=spec)
