"""Executor of BatchRecommender: two-stage top-k for every user, streamed.

What it computes is exactly what `recommend` serves: it builds
`serving.recommender.Recommender.from_model_dirs(retrieval_dir, ranking_dir)`
and calls its `recommend(user_id, k=..., n_candidates=...)` once per user;
no retrieval or ranking code lives here.

Which model folders (what `recommend --output-dir` serves right after this
run):
* a model pushed in this run (its PushedModel has `pushed` == 1): the
  Pusher's `pushed_destination` (`<serving>/<model>/<version>`);
* a model not pushed in this run: the newest complete version already
  served from `<serving_dir>/<model>` (the exec property), if any; without
  a ranking model the retrieval order is used, as serving does.
Remote folders (gs://, s3://) are copied to a local temporary folder first
(serving reads its tables with plain file I/O).

When neither model was pushed in this run nothing is recommended: the
output holds a zero-row file with the schema and the artifact records
`generated` = 0 and `skip_reason` (as the stock Pusher runs and records
`pushed` = 0 when there is nothing to push).

Users, in this order, each once: the users known to the retrieval model
(the seen table of `assets.extra/`, then any others of
`user_features.jsonl`, see common/assets.py), then the ids of `users_file`
(one per line; blank lines and known users skipped; an unknown id gets the
cold-start answer). Memory is bounded in the number of users: rows are
buffered for `chunk_users` users and written as one Parquet row group, and
only the known ids (which the loaded model holds anyway) are remembered, so
an id repeated in `users_file` is written once per occurrence.
"""
from __future__ import annotations

import itertools
import json
import os
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from absl import logging
import pyarrow as pa
import pyarrow.parquet as pq
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from common import assets
from serving import recommender as rec_lib

# Keys (inputs, outputs, parameters).
RETRIEVAL_MODEL_KEY = "retrieval_model"
RETRIEVAL_PUSHED_MODEL_KEY = "retrieval_pushed_model"
RANKING_MODEL_KEY = "ranking_model"
RANKING_PUSHED_MODEL_KEY = "ranking_pushed_model"
RECOMMENDATIONS_KEY = "recommendations"
K_KEY = "k"
N_CANDIDATES_KEY = "n_candidates"
USERS_FILE_KEY = "users_file"
SERVING_DIR_KEY = "serving_dir"
CHUNK_USERS_KEY = "chunk_users"
LOG_EVERY_KEY = "log_every"

DEFAULT_K = 50
DEFAULTS = {K_KEY: DEFAULT_K, N_CANDIDATES_KEY: 100, USERS_FILE_KEY: "",
            SERVING_DIR_KEY: "", CHUNK_USERS_KEY: 1000, LOG_EVERY_KEY: 1000}

# Mirrors tfx/components/pusher/executor.py (TFX 1.16).
PUSHED_PROPERTY = "pushed"
PUSHED_DESTINATION_PROPERTY = "pushed_destination"

SPLIT = "recommendations"
FILE_NAME = "recommendations.parquet"
FILE_FORMAT = "parquet"  # what tfx_utils' TFXIO factory reads (with FORMAT_PARQUET)

# One row per (user, rank). The item columns are recommend()'s item keys (a
# key an older serving/ does not return is null).
ITEM_COLUMNS = ("movie_id", "title", "genres", "score", "rank_score",
                "predicted_rating", "retrieval_rank", "ranking_rank")
SCHEMA = pa.schema([
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),        # 1 = best
    pa.field("movie_id", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("genres", pa.list_(pa.string())),
    pa.field("score", pa.float64()),                     # retrieval dot product
    pa.field("rank_score", pa.float64()),                # ranking model's score
    pa.field("predicted_rating", pa.float64()),          # null: no ranking model
    pa.field("retrieval_rank", pa.int32()),              # 1-based among candidates
    pa.field("ranking_rank", pa.int32()),                # 1-based by rank_score
    pa.field("known_user", pa.bool_()),                  # False: cold start
])

PUSHED_IN_RUN, SERVED, NONE = "pushed in this run", "served (pushed earlier)", "none"


def _single(artifacts: Optional[List[types.Artifact]], key: str
            ) -> Optional[types.Artifact]:
  if not artifacts:
    return None
  if len(artifacts) > 1:
    raise ValueError(f"{key}: expected one artifact, got {len(artifacts)}")
  return artifacts[0]


def was_pushed(pushed_model: Optional[types.Artifact]) -> bool:
  return (pushed_model is not None
          and pushed_model.has_custom_property(PUSHED_PROPERTY)
          and pushed_model.get_int_custom_property(PUSHED_PROPERTY) == 1)


def model_dir(stage: str, pushed_model: Optional[types.Artifact],
              serving_dir: str) -> Tuple[Optional[str], str]:
  """(folder, where it comes from) of the `stage` model serving uses now."""
  if was_pushed(pushed_model):
    dest = pushed_model.get_string_custom_property(PUSHED_DESTINATION_PROPERTY)
    if not dest:
      raise ValueError(f"The {stage} PushedModel {pushed_model.uri} is marked "
                       f"pushed but has no {PUSHED_DESTINATION_PROPERTY!r}")
    return dest, PUSHED_IN_RUN
  if serving_dir:
    if "://" in serving_dir:
      logging.warning("serving_dir %s is remote: the %s model served before "
                      "this run is not looked up", serving_dir, stage)
    else:
      versions = rec_lib.complete_versions(serving_dir, stage)
      if versions:
        return os.path.join(serving_dir, stage, str(versions[-1])), SERVED
  return None, NONE


def _local(path: Optional[str], local: str) -> Optional[str]:
  """`path`, or its copy in `local` when it is a remote folder."""
  if path is None or "://" not in path:
    return path
  logging.info("Copying %s to %s", path, local)
  io_utils.copy_dir(path, local)
  return local


def _jsonl_user_ids(path: str) -> Iterator[str]:
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        yield str(json.loads(line)["user_id"])


def iter_users(retrieval_dir: str, users_file: str = ""
               ) -> Iterator[Tuple[str, bool]]:
  """(user_id, from users_file) for every user to recommend for (see above)."""
  known = set()
  assets_dir = os.path.join(retrieval_dir, assets.ASSETS_EXTRA)
  # Only the ids are needed: no catalogue to map a legacy table's movies.
  seen = assets.SeenTable.load(assets_dir, catalogue_ids=[])
  for user in itertools.chain(
      seen.user_ids(),
      _jsonl_user_ids(os.path.join(assets_dir, assets.USER_FEATURES_FILE))):
    if user not in known:
      known.add(user)
      yield user, False
  if users_file:
    with fileio.open(users_file, "r") as f:
      for line in f:
        user = line.strip()
        if user and user not in known:
          yield user, True


class _ChunkedParquet:
  """Rows buffered per column, written as one row group per flush()."""

  def __init__(self, path: str):
    self.writer = pq.ParquetWriter(path, SCHEMA)
    self.rows = 0
    self._reset()

  def _reset(self):
    self.columns: Dict[str, list] = {name: [] for name in SCHEMA.names}

  def add(self, result: Dict[str, Any]) -> None:
    c = self.columns
    for rank, item in enumerate(result["items"], 1):
      c["user_id"].append(result["user_id"])
      c["rank"].append(rank)
      c["known_user"].append(bool(result["known_user"]))
      for name in ITEM_COLUMNS:
        c[name].append(item.get(name))

  def flush(self) -> None:
    n = len(self.columns["user_id"])
    if n:
      self.writer.write_table(pa.Table.from_pydict(self.columns, schema=SCHEMA))
      self.rows += n
    self._reset()

  def close(self) -> None:
    self.flush()
    self.writer.close()


def write_recommendations(recommender, users: Iterator[Tuple[str, bool]],
                          path: str, k: int, n_candidates: int,
                          chunk_users: int = 1000, log_every: int = 1000
                          ) -> Dict[str, Any]:
  """recommender.recommend() for every user, streamed into a Parquet file."""
  if chunk_users < 1 or log_every < 1:
    raise ValueError("chunk_users and log_every must be >= 1")
  out = _ChunkedParquet(path)
  counts = {"num_users": 0, "num_known_users": 0, "num_file_users": 0,
            "num_cold_start_users": 0, "num_partial_users": 0}
  t0 = time.time()
  try:
    for user, from_file in users:
      try:
        result = recommender.recommend(user, k=k, n_candidates=n_candidates)
      except ValueError as e:
        raise ValueError(f"Cannot recommend for user {user!r}: {e}") from e
      out.add(result)
      counts["num_users"] += 1
      counts["num_file_users" if from_file else "num_known_users"] += 1
      counts["num_cold_start_users"] += not result["known_user"]
      counts["num_partial_users"] += bool(result["partial"])
      n = counts["num_users"]
      if n % chunk_users == 0:
        out.flush()
      if n % log_every == 0:
        logging.info("BatchRecommender: %d users (%.0f users/s)", n,
                     n / max(time.time() - t0, 1e-9))
  finally:
    out.close()
  seconds = time.time() - t0
  counts.update(num_rows=out.rows, seconds=round(seconds, 3),
                users_per_second=round(counts["num_users"] / max(seconds, 1e-9), 1))
  return counts


def _mark_examples(artifact: types.Artifact) -> None:
  artifact.split_names = artifact_utils.encode_split_names([SPLIT])
  examples_utils.set_payload_format(
      artifact, example_gen_pb2.PayloadFormat.FORMAT_PARQUET)
  examples_utils.set_file_format(artifact, FILE_FORMAT)


def output_file(artifact: types.Artifact) -> str:
  """The Parquet file of a recommendations artifact."""
  return os.path.join(artifact_utils.get_split_uri([artifact], SPLIT), FILE_NAME)


class Executor(base_executor.BaseExecutor):
  """Writes the two-stage top-k of every user with the served models."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    props = dict(DEFAULTS)
    props.update({k: v for k, v in exec_properties.items() if v is not None})
    k, n_candidates = int(props[K_KEY]), int(props[N_CANDIDATES_KEY])
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    serving_dir = str(props[SERVING_DIR_KEY] or "")
    pushed = {
        rec_lib.RETRIEVAL: _single(input_dict.get(RETRIEVAL_PUSHED_MODEL_KEY),
                                   RETRIEVAL_PUSHED_MODEL_KEY),
        rec_lib.RANKING: _single(input_dict.get(RANKING_PUSHED_MODEL_KEY),
                                 RANKING_PUSHED_MODEL_KEY)}
    out = artifact_utils.get_single_instance(output_dict[RECOMMENDATIONS_KEY])
    _mark_examples(out)
    out.set_int_custom_property(K_KEY, k)
    out.set_int_custom_property(N_CANDIDATES_KEY, n_candidates)
    path = output_file(out)
    fileio.makedirs(os.path.dirname(path))

    with tempfile.TemporaryDirectory(prefix="batch_recommender_") as tmp:
      local_path = path if "://" not in path else os.path.join(tmp, FILE_NAME)
      reason = ""
      if not any(was_pushed(p) for p in pushed.values()):
        reason = "no model was pushed in this run (the served recommendations stay)"
      dirs = {}
      if not reason:
        for stage, pm in pushed.items():
          dirs[stage] = model_dir(stage, pm, serving_dir)
          out.set_string_custom_property(f"{stage}_model_dir", dirs[stage][0] or "")
          out.set_string_custom_property(f"{stage}_source", dirs[stage][1])
        if dirs[rec_lib.RETRIEVAL][0] is None:
          reason = ("no retrieval model is served (none pushed in this run or "
                    f"before under {serving_dir or 'serving_dir'})")
      if reason:
        logging.info("BatchRecommender skipped: %s", reason)
        pq.write_table(SCHEMA.empty_table(), local_path)
        out.set_int_custom_property("generated", 0)
        out.set_string_custom_property("skip_reason", reason)
        for key in ("num_users", "num_rows"):
          out.set_int_custom_property(key, 0)
      else:
        rdir = _local(dirs[rec_lib.RETRIEVAL][0], os.path.join(tmp, "retrieval"))
        kdir = _local(dirs[rec_lib.RANKING][0], os.path.join(tmp, "ranking"))
        logging.info("BatchRecommender: retrieval %s (%s), ranking %s (%s)",
                     dirs[rec_lib.RETRIEVAL][0], dirs[rec_lib.RETRIEVAL][1],
                     dirs[rec_lib.RANKING][0], dirs[rec_lib.RANKING][1])
        recommender = rec_lib.Recommender.from_model_dirs(rdir, kdir)
        try:
          counts = write_recommendations(
              recommender, iter_users(rdir, str(props[USERS_FILE_KEY] or "")),
              local_path, k, n_candidates, int(props[CHUNK_USERS_KEY]),
              int(props[LOG_EVERY_KEY]))
        finally:
          recommender.close()
        logging.info("BatchRecommender wrote %s", counts)
        out.set_int_custom_property("generated", 1)
        for key, value in counts.items():
          if isinstance(value, int):
            out.set_int_custom_property(key, value)
          else:
            out.set_float_custom_property(key, value)
      if local_path != path:
        io_utils.copy_file(local_path, path, overwrite=True)
