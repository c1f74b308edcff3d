"""Builds a real Transform output (TFT Beam) on planted synthetic data.

Trainer and evaluator tests need what the Transform component hands them:
a transform graph directory and transformed, GZIP-compressed tf.Examples per
split. This runs the project's preprocessing_fn on tests/synthetic_data's
planted data with transform/offline.py, without the pipeline.
"""
from __future__ import annotations

import os
import zlib
from typing import Dict, Optional

from common import features as F
from tests import synthetic_data
from transform import offline

RAW_SPEC = offline.raw_feature_spec()  # every feature of the contract
TEST_CONFIG = {"num_timestamp_buckets": 20, "min_user_count": 3,
               "min_movie_count": 2, "min_word_count": 2,
               "min_zip_prefix_count": 1}


def build(tmp_dir: str, num_users: int = 60, num_movies: int = 120,
          ratings_per_user: int = 25, seed: int = 0,
          config: Optional[dict] = None) -> Dict[str, object]:
  """Writes raw and transformed examples and a transform graph to tmp_dir.

  Returns paths (tft_dir, train/eval file patterns for transformed and raw
  examples, catalogue pattern), the raw rows and the planted structure.
  """
  data = synthetic_data.make_ratings(num_users, num_movies, ratings_per_user, seed)
  rows = synthetic_data.raw_rows(data)
  split = {"train": [], "eval": []}
  for r in rows["ratings"]:
    h = zlib.crc32(f"{r[F.USER_ID]}|{r[F.MOVIE_ID]}".encode()) % 100
    split["eval" if h < 20 else "train"].append(r)
  cfg = dict(TEST_CONFIG, **(config or {}))
  out = {"rows": split, "catalogue_rows": rows["catalogue"], "planted": data}
  out.update(offline.transform_splits(split, tmp_dir, cfg))
  offline.write_records(os.path.join(tmp_dir, "catalogue", "Split-catalogue", "data.gz"),
                        [F.serialize_example(r) for r in rows["catalogue"]])
  out["catalogue_pattern"] = os.path.join(tmp_dir, "catalogue", "Split-catalogue", "*")
  return out
