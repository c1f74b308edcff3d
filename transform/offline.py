"""preprocessing_fn run with TFT's Beam implementation, outside a pipeline.

Tests and benchmarks need what the Transform component hands the trainers
(a transform graph directory, transformed and raw GZIP tf.Examples per split
in TFX's `Split-<name>` layout) for a few thousand rows, without running the
pipeline. `transform_splits` builds it from contract rows the way TFX's
Transform does: analyze on the train split, transform every split, keep the
raw schema beside the graph.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils

from common import features as F
from transform import preprocessing

_TF_DTYPES = {F.BYTES: tf.string, F.FLOAT: tf.float32, F.INT64: tf.int64}


def raw_feature_spec(names: Optional[Iterable[str]] = None) -> Dict[str, object]:
  """The raw contract's feature spec as the curated schemas give it to
  Transform: single values FixedLenFeature([1]), lists VarLenFeature."""
  out = {}
  for name in names or F.FEATURES:
    spec = F.FEATURES[name]
    dtype = _TF_DTYPES[spec.dtype]
    out[name] = (tf.io.VarLenFeature(dtype) if spec.varlen
                 else tf.io.FixedLenFeature([1], dtype))
  return out


def encode_row(row: Mapping[str, object]) -> Dict[str, list]:
  """A contract row as TFT's instance-dict input (lists, bytes)."""
  out = {}
  for k, v in row.items():
    if F.FEATURES[k].varlen:
      out[k] = list(v)
    elif F.FEATURES[k].dtype == F.BYTES:
      out[k] = [v.encode("utf-8") if isinstance(v, str) else v]
    else:
      out[k] = [v]
  return out


def write_records(path: str, records: Iterable[bytes]) -> None:
  """GZIP TFRecords, as TFX writes examples."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path, options="GZIP") as w:
    for r in records:
      w.write(r)


def transform_splits(splits: Mapping[str, List[Mapping[str, object]]], work_dir: str,
                     config: Mapping[str, object],
                     feature_names: Optional[Iterable[str]] = None) -> Dict[str, str]:
  """Analyzes splits["train"], transforms every split; writes
  `<work_dir>/transform_graph`, `<work_dir>/transformed/Split-<name>/data.gz`
  and `<work_dir>/raw/Split-<name>/data.gz`. Returns tft_dir and the
  `<name>_pattern` / `raw_<name>_pattern` file patterns."""
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(raw_feature_spec(feature_names)))
  tft_dir = os.path.join(work_dir, "transform_graph")
  out = {"tft_dir": tft_dir}
  with tft_beam.Context(temp_dir=os.path.join(work_dir, "tft_tmp"),
                        force_tf_compat_v1=False,
                        use_deep_copy_optimization=True):  # as TFX sets it
    transform_fn = ([encode_row(r) for r in splits["train"]], metadata) | (
        tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing.preprocessing_fn(inputs, dict(config))))
    _ = transform_fn | tft_beam.WriteTransformFn(tft_dir)
    metadata_io.write_metadata(  # TFX's Transform keeps the raw schema too
        metadata, os.path.join(tft_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    for name, part in splits.items():
      transformed, t_meta = (([encode_row(r) for r in part], metadata), transform_fn) | (
          f"T{name}" >> tft_beam.TransformDataset(output_record_batches=False))
      coder = tft.coders.ExampleProtoCoder(t_meta.schema)
      for kind, records in (
          ("transformed", [coder.encode(x) for x in transformed]),
          ("raw", [F.serialize_example(r) for r in part])):
        write_records(os.path.join(work_dir, kind, f"Split-{name}", "data.gz"), records)
      out[f"{name}_pattern"] = os.path.join(work_dir, "transformed", f"Split-{name}", "*")
      out[f"raw_{name}_pattern"] = os.path.join(work_dir, "raw", f"Split-{name}", "*")
  return out
