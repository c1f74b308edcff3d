"""Real ml-100k → contract rows → a Transform output, for benchmarks.

A small stand-in reader: it parses the GroupLens folder with TFDS's own
parser (`tensorflow_datasets.structured.movielens_parsing`) and maps it to
the feature contract (genre names → features.GENRE_ID, occupation labels →
features.OCCUPATION_LABEL_ID, gender bool → int). The ingestion component
(components/ingestion) is the production reader and will replace this one.

`prepare` splits the ratings 80/20 by a stable hash of (user_id, movie_id),
runs the project's preprocessing_fn with TFT Beam on the training split (the
same way tests/tft_fixture.py does) and writes raw and transformed examples
in TFX's Split-<name> layout. The result is cached in the work directory.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import common  # noqa: F401  pylint: disable=unused-import
from common import features as F

EVAL_FRACTION = 0.2


def read_ml100k(path: str) -> List[Dict[str, object]]:
  """Contract rows (one per rating) of a GroupLens ml-100k folder or zip.

  Read with the pipeline's own ingestion readers, so the benchmark sees
  exactly the features MovieLensExampleGen writes.
  """
  from components.ingestion import open_source  # pylint: disable=g-import-not-at-top
  return list(open_source(path).ratings())


def is_eval(user_id: str, movie_id: str, eval_fraction: float = EVAL_FRACTION) -> bool:
  """The pipeline's random split (ingestion's stable hash of the pair)."""
  from components.ingestion import ingest  # pylint: disable=g-import-not-at-top
  return ingest.is_eval_random(user_id, movie_id, eval_fraction)


def split_rows(rows, eval_fraction: float = EVAL_FRACTION):
  out = {"train": [], "eval": []}
  for r in rows:
    out["eval" if is_eval(r[F.USER_ID], r[F.MOVIE_ID], eval_fraction) else "train"].append(r)
  return out


def prepare(data_dir: str, work_dir: str, config: Optional[dict] = None,
            eval_fraction: float = EVAL_FRACTION) -> Dict[str, object]:
  """Writes (or reuses) raw + transformed splits and the transform graph.

  Returns tft_dir, {train,eval}_pattern (transformed), raw_{train,eval}_pattern
  and the rows of each split.
  """
  rows = split_rows(read_ml100k(data_dir), eval_fraction)
  out = {"tft_dir": os.path.join(work_dir, "transform_graph"), "rows": rows}
  for name in rows:
    out[f"{name}_pattern"] = os.path.join(work_dir, "transformed", f"Split-{name}", "*")
    out[f"raw_{name}_pattern"] = os.path.join(work_dir, "raw", f"Split-{name}", "*")
  stamp = os.path.join(work_dir, "DONE.json")
  key = {"data_dir": os.path.abspath(data_dir), "config": config or {},
         "eval_fraction": eval_fraction,
         "sizes": {k: len(v) for k, v in rows.items()}}
  if os.path.exists(stamp):
    with open(stamp) as f:
      if json.load(f) == key:
        return out
  _transform(rows, work_dir, config or {})
  with open(stamp, "w") as f:
    json.dump(key, f)
  return out


def _transform(split: Dict[str, list], work_dir: str, config: dict) -> None:
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils  # pylint: disable=g-import-not-at-top
  from tests import tft_fixture  # pylint: disable=g-import-not-at-top
  from transform import preprocessing  # pylint: disable=g-import-not-at-top

  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(tft_fixture.RAW_SPEC))
  tft_dir = os.path.join(work_dir, "transform_graph")
  if os.path.exists(tft_dir):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(tft_dir)
  with tft_beam.Context(temp_dir=os.path.join(work_dir, "tft_tmp"),
                        force_tf_compat_v1=False):
    encoded = {k: [tft_fixture._encode(r) for r in v] for k, v in split.items()}  # pylint: disable=protected-access
    transform_fn = (encoded["train"], metadata) | tft_beam.AnalyzeDataset(
        lambda inputs: preprocessing.preprocessing_fn(inputs, config))
    _ = transform_fn | tft_beam.WriteTransformFn(tft_dir)
    metadata_io.write_metadata(
        metadata, os.path.join(tft_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    for name, part in encoded.items():
      transformed, t_meta = ((part, metadata), transform_fn) | (
          f"T{name}" >> tft_beam.TransformDataset(output_record_batches=False))
      coder = tft.coders.ExampleProtoCoder(t_meta.schema)
      tft_fixture._write(  # pylint: disable=protected-access
          os.path.join(work_dir, "transformed", f"Split-{name}", "data.gz"),
          [coder.encode(x) for x in transformed])
      tft_fixture._write(  # pylint: disable=protected-access
          os.path.join(work_dir, "raw", f"Split-{name}", "data.gz"),
          [F.to_tf_example(r).SerializeToString() for r in split[name]])
