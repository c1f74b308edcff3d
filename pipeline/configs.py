"""Pipeline settings: names, defaults and the knobs a user is expected to turn.

As in TFX's templates (tfx/experimental/templates/taxi/pipeline/configs.py),
constants live here and runners pass overrides into create_pipeline().
"""
import os
import shlex
from typing import List

# Kubeflow (KFP v2) accepts only [a-z0-9-] in pipeline names.
PIPELINE_NAME = "movielens-two-stage"

# Where data comes from (local_runner --data). TFDS needs internet; a
# GroupLens folder or zip works offline.
DEFAULT_DATA = "tfds:movielens/100k-ratings"
DEFAULT_SPLIT = "random"
EVAL_FRACTION = 0.2
# Fraction of unparsable input rows tolerated (skipped and counted); 0 = stop.
MAX_BAD_ROW_FRACTION = 0.0

DEFAULT_OUTPUT_DIR = "tfx_output"


def output_paths(output_dir: str) -> dict:
  """The layout of a run's output directory (see README)."""
  output_dir = os.path.abspath(output_dir)
  return {
      "output_dir": output_dir,
      "pipeline_root": os.path.join(output_dir, "tfx"),
      "metadata_path": os.path.join(output_dir, "metadata.db"),
      "log_dir": os.path.join(output_dir, "logs"),
      "serving_dir": os.path.join(output_dir, "serving"),
  }


# Beam: the DirectRunner in one process (in_memory). Measured on 2 cores at
# 1M synthetic ml-25m-format ratings (benchmarks/scale.py), wall / CPU s:
#   in_memory                       StatisticsGen 19 / 18, Transform 55 / 54,
#                                   RankingEvaluator (TFMA) 42 / 44
#   multi_processing, 2 workers     StatisticsGen 24 / 39, Transform 50 / 84,
#                                   RankingEvaluator 58 / 60
#   multi_threading, 2 workers      StatisticsGen 22, Transform 64
# A second worker process costs more in moving elements between processes
# than it gains (the CPU time nearly doubles); these components stay linear
# in the data (~20, ~55 and ~40 s per million ratings) on one core, and on a
# cluster runner (--beam-args, README "Scaling out") they spread over its
# workers. Override with local_runner --beam-args.
def merged_beam_args(extra: str) -> List[str]:
  """BEAM_PIPELINE_ARGS with the user's flags (one shell-quoted string) added,
  a user flag replacing the same-named default."""
  user = shlex.split(extra or "")
  user_keys = {a.split("=", 1)[0] for a in user}
  return [a for a in BEAM_PIPELINE_ARGS
          if a.split("=", 1)[0] not in user_keys] + user


BEAM_PIPELINE_ARGS = [
    "--runner=DirectRunner",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
]

# Transform (trainer_modules/configs.py TransformConfig: keys, types, bounds).
TRANSFORM_CONFIG = {
    "num_timestamp_buckets": 1000,
    "min_user_count": 5,
    "min_movie_count": 2,
    "min_word_count": 2,
    "min_zip_prefix_count": 2,
}
# Transform's own pre/post statistics are skipped: StatisticsGen already
# covers the raw data and they cost a sizeable part of Transform's time.
TRANSFORM_DISABLE_STATISTICS = True

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "trainer_modules.retrieval.run_fn"
RANKING_RUN_FN = "trainer_modules.ranking.run_fn"

# Trainer hyperparameters: a key not set here takes the trainer module's
# default (chosen by experiment, see benchmarks/). Runner flags override
# single keys.
# warm_start: each trainer starts from the latest blessed model of its stage
# (trainer_modules/warm_start.py); distribution_strategy: auto | one_device |
# mirrored | multi_worker_mirrored (trainer_modules/strategy.py).
RETRIEVAL_CONFIG = {"warm_start": True, "distribution_strategy": "auto"}
RANKING_CONFIG = {"warm_start": True, "distribution_strategy": "auto"}

# Retrieval blessing: hit@100 (excluding seen movies) must beat the
# most-popular baseline by this margin, and not fall below the last blessed
# retrieval model by more than the tolerance.
RETRIEVAL_MARGIN_OVER_POPULARITY = 0.02
RETRIEVAL_BASELINE_TOLERANCE = 0.01

# Ranking blessing (TFMA): absolute RMSE bound and allowed increase over the
# last blessed ranking model.
RANKING_RMSE_UPPER_BOUND = 1.0
RANKING_MAX_RMSE_INCREASE = 0.01

# Ranking blessing (TwoStageEvaluator, what the RankingPusher follows): the
# two-stage top-k that `recommend` returns (retrieve TWO_STAGE_N_CANDIDATES
# unseen movies, rank them, keep k) must beat the retrieval model's own top-k
# nDCG@k by this margin; the ranking model's RMSE must beat the user+item
# bias baseline on the same split (explicit ratings), and TFMA's RMSE
# blessing above must hold. EASE (λ below) is a reference row, not a gate.
RANKING_NDCG_MARGIN = 0.005
TWO_STAGE_K = 10
TWO_STAGE_N_CANDIDATES = 100
TWO_STAGE_EASE_LAMBDA = 500.0

# Drift gate (components/drift_gate.py), for span inputs (data with {SPAN}):
# the newest span is compared with the one before it, and the run stops when
# a feature's distance exceeds its threshold. The comparator follows the
# feature's statistics: L-infinity (largest change of one value's share) for
# strings, Jensen-Shannon divergence for numbers. Measured on real MovieLens
# 100K cut into 4 and 8 consecutive time spans, natural drift peaked at:
# user_rating 0.004, movie_id 0.007, user_id 0.06, raw_user_age 0.07,
# user_occupation_text 0.12; the thresholds leave room above that. timestamp
# is not checked: consecutive spans cover disjoint times by construction, so
# its divergence is always ~1. Pipeline argument drift_thresholds overrides
# single features (None switches one off).
DRIFT_THRESHOLDS = {
    "user_rating": 0.05,
    "movie_id": 0.05,
    "movie_genres": 0.1,
    "user_id": 0.15,
    "raw_user_age": 0.2,
    "user_occupation_text": 0.25,
}
