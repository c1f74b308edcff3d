"""Real ml-100k → contract rows → a Transform output, for benchmarks.

A small stand-in reader: it parses the GroupLens folder with TFDS's own
parser (`tensorflow_datasets.structured.movielens_parsing`) and maps it to
the feature contract (genre names → features.GENRE_ID, occupation labels →
features.OCCUPATION_LABEL_ID, gender bool → int). The ingestion component
(components/ingestion) is the production reader and will replace this one.

`prepare` splits the ratings 80/20 by a stable hash of (user_id, movie_id),
runs the project's preprocessing_fn with TFT Beam on the training split (transform/offline.py) and writes raw and transformed examples
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
  import shutil  # pylint: disable=g-import-not-at-top
  from transform import offline  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(work_dir, "transform_graph"), ignore_errors=True)
  offline.transform_splits(split, work_dir, config)
