"""Builds a real Transform output (TFT Beam) on planted synthetic data.

Trainer and evaluator tests need what the Transform component hands them:
a transform graph directory and transformed, GZIP-compressed tf.Examples per
split. This runs the project's preprocessing_fn with TFT's Beam
implementation on tests/synthetic_data's planted data, without the pipeline.
"""
from __future__ import annotations

import os
import zlib
from typing import Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils

from common import features as F
from tests import synthetic_data
from transform import preprocessing

RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    F.MOVIE_ID: tf.io.FixedLenFeature([1], tf.string),
    F.MOVIE_TITLE: tf.io.FixedLenFeature([1], tf.string),
    F.MOVIE_GENRES: tf.io.VarLenFeature(tf.int64),
    F.USER_RATING: tf.io.FixedLenFeature([1], tf.float32),
    F.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64),
    F.USER_GENDER: tf.io.FixedLenFeature([1], tf.int64),
    F.BUCKETIZED_USER_AGE: tf.io.FixedLenFeature([1], tf.float32),
    F.RAW_USER_AGE: tf.io.FixedLenFeature([1], tf.float32),
    F.USER_OCCUPATION_LABEL: tf.io.FixedLenFeature([1], tf.int64),
    F.USER_OCCUPATION_TEXT: tf.io.FixedLenFeature([1], tf.string),
    F.USER_ZIP_CODE: tf.io.FixedLenFeature([1], tf.string),
}
TEST_CONFIG = {"num_timestamp_buckets": 20, "min_user_count": 3,
               "min_movie_count": 2, "min_word_count": 2,
               "min_zip_prefix_count": 1}


def _write(path: str, examples) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path, options="GZIP") as w:
    for ex in examples:
      w.write(ex)


def _encode(row: Dict[str, object]) -> Dict[str, list]:
  out = {}
  for k, v in row.items():
    if F.FEATURES[k].varlen:
      out[k] = list(v)
    elif F.FEATURES[k].dtype == F.BYTES:
      out[k] = [v.encode("utf-8") if isinstance(v, str) else v]
    else:
      out[k] = [v]
  return out


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
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(RAW_SPEC))
  tft_dir = os.path.join(tmp_dir, "transform_graph")
  out = {"tft_dir": tft_dir, "rows": split, "catalogue_rows": rows["catalogue"],
         "planted": data}
  with tft_beam.Context(temp_dir=os.path.join(tmp_dir, "tft_tmp"),
                        force_tf_compat_v1=False,
                        use_deep_copy_optimization=True):  # as TFX sets it
    transform_fn = ([_encode(r) for r in split["train"]], metadata) | tft_beam.AnalyzeDataset(
        lambda inputs: preprocessing.preprocessing_fn(inputs, cfg))
    _ = transform_fn | tft_beam.WriteTransformFn(tft_dir)
    # TFX's Transform also stores the raw schema beside the graph.
    metadata_io.write_metadata(
        metadata, os.path.join(tft_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    for name, part in split.items():
      transformed, t_meta = (([_encode(r) for r in part], metadata), transform_fn) | (
          f"T{name}" >> tft_beam.TransformDataset(output_record_batches=False))
      coder = tft.coders.ExampleProtoCoder(t_meta.schema)
      _write(os.path.join(tmp_dir, "transformed", f"Split-{name}", "data.gz"),
             [coder.encode(x) for x in transformed])
      _write(os.path.join(tmp_dir, "raw", f"Split-{name}", "data.gz"),
             [F.to_tf_example(r).SerializeToString() for r in part])
      out[f"{name}_pattern"] = os.path.join(tmp_dir, "transformed", f"Split-{name}", "*")
      out[f"raw_{name}_pattern"] = os.path.join(tmp_dir, "raw", f"Split-{name}", "*")
  _write(os.path.join(tmp_dir, "catalogue", "Split-catalogue", "data.gz"),
         [F.to_tf_example(r).SerializeToString() for r in rows["catalogue"]])
  out["catalogue_pattern"] = os.path.join(tmp_dir, "catalogue", "Split-catalogue", "*")
  return out
