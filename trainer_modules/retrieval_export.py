"""Export of the two-tower retrieval model: one SavedModel plus serving tables.

`RetrievalExport` is the tf.Module saved to `serving_model_dir`. Every
signature takes `examples`: serialized tf.Examples with the contract's raw
feature names; parsing (model_parts.RawRequestParser) and the Transform graph
run inside the model, so serving cannot skew from training.

Signatures
* `serving_default`: query features (only `user_id` required) →
  `movie_ids` [None, K] string, `movie_titles` [None, K] string,
  `scores` [None, K] float32: top-K over the WHOLE catalogue (BruteForce).
* `query_embedding`: query features → `embedding` [None, d].
* `candidate_embedding`: movie features (`movie_id` required, `movie_title`
  and `movie_genres` optional) → `embedding` [None, d].

Known users: a request that carries only `user_id` (or leaves some user
features at their serving default) gets the user's stored transformed
features (gender, age, occupation, zip prefix as seen in training) from a
lookup table inside the model; unknown ids keep what the request gives and
the trained OOV user row.

Tables beside the model, in `<serving_model_dir>/assets.extra/` (TF Serving
keeps that folder with the model version; names in common/assets.py),
JSON / JSON-lines in UTF-8 except the seen table:
* `catalogue.jsonl`: one line per catalogue movie, in index order:
  {"movie_id", "movie_title", "movie_genres": [int], "embedding": [float]}
  (the candidate embedding, as `candidate_embedding` computes it).
* `seen_users.npy`, `seen_offsets.npy`, `seen_movies.npy`: each training
  user's rated movies as catalogue positions, memory-mappable (the layout is
  common/assets.py's SeenTable).
* `user_features.jsonl`: one line per training user: {"user_id",
  "transformed": {T_* name: value}, "raw": {raw name: value}} with the
  transformed user features the lookup table holds and the raw values that
  can be recovered from them (vocabulary features, gender).
* `popularity.json`: {"movie_ids": [...], "counts": [...]}, movies by
  training rating count, descending (ties by id).
* `manifest.json`: top_k, embedding_dim, catalogue size, file names, the
  training config.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from common import assets
from common import features as F
from trainer_modules import model_parts

ASSETS_EXTRA = assets.ASSETS_EXTRA
CATALOGUE_FILE = assets.CATALOGUE_FILE
USER_FEATURES_FILE = assets.USER_FEATURES_FILE
POPULARITY_FILE = assets.POPULARITY_FILE
MANIFEST_FILE = assets.MANIFEST_FILE

QUERY_RAW_FEATURES = F.QUERY_FEATURES
# What a known user's request may leave out (model_parts.UserDefaults).
USER_FILL_SOURCES = model_parts.USER_FILL_SOURCES
# Vocabulary of the vocabulary-indexed user features (to decode raw values).
USER_FEATURE_VOCABS = {
    F.T_USER_AGE_BUCKET: F.VOCAB_AGE_BUCKET,
    F.T_USER_OCCUPATION: F.VOCAB_OCCUPATION,
    F.T_USER_ZIP_PREFIX: F.VOCAB_ZIP_PREFIX,
}


class RetrievalExport(tf.Module):
  """The exported retrieval model (see the module docstring)."""

  def __init__(self, tft_output: tft.TFTransformOutput, query_model,
               candidate_model, user_table: Mapping[str, np.ndarray],
               top_k: int = 100):
    super().__init__()
    # Known users' stored transformed features (side features and time
    # context), keyed by raw user_id, filled in where a request leaves them out.
    self.user_defaults = model_parts.UserDefaults(user_table)
    self.query_parser = model_parts.RawRequestParser(
        tft_output, QUERY_RAW_FEATURES, required=[F.USER_ID],
        user_defaults=self.user_defaults)
    self.candidate_parser = model_parts.RawRequestParser(
        tft_output, F.CATALOGUE_FEATURES, required=[F.MOVIE_ID])
    self.query_model = query_model
    self.candidate_model = candidate_model
    self.top_k = int(top_k)
    self.catalogue_ids = None
    self.catalogue_titles = None
    self.index = None

  # -- feature paths ---------------------------------------------------------
  def _query_features(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self.query_parser(examples)

  def _candidate_features(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self.candidate_parser(examples)

  def query_vectors(self, examples: tf.Tensor) -> tf.Tensor:
    return self.query_model(self._query_features(examples))

  def candidate_vectors(self, examples: tf.Tensor) -> tf.Tensor:
    return self.candidate_model(self._candidate_features(examples))

  # -- index -----------------------------------------------------------------
  def build_index(self, movie_ids: Sequence[bytes], titles: Sequence[bytes],
                  embeddings: np.ndarray) -> None:
    """BruteForce top-K over the whole catalogue, called once so it traces."""
    k = min(self.top_k, len(movie_ids))
    self.catalogue_ids = tf.Variable(tf.constant(list(movie_ids), tf.string),
                                     trainable=False, name="catalogue_ids")
    self.catalogue_titles = tf.Variable(tf.constant(list(titles), tf.string),
                                        trainable=False, name="catalogue_titles")
    self.index = tfrs.layers.factorized_top_k.BruteForce(k=k)
    self.index.index(tf.constant(embeddings, tf.float32),
                     identifiers=tf.range(len(movie_ids), dtype=tf.int32))
    # recommenders#640: the layer must have been called before saving.
    self.index(tf.zeros([1, embeddings.shape[1]], tf.float32))

  # -- signatures ------------------------------------------------------------
  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
               autograph=False)
  def serve_top_k(self, examples):
    scores, rows = self.index(self.query_vectors(examples))
    return {"movie_ids": tf.gather(self.catalogue_ids, rows),
            "movie_titles": tf.gather(self.catalogue_titles, rows),
            "scores": tf.cast(scores, tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
               autograph=False)
  def serve_query_embedding(self, examples):
    return {F.EMBEDDING_OUTPUT: self.query_vectors(examples)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
               autograph=False)
  def serve_candidate_embedding(self, examples):
    return {F.EMBEDDING_OUTPUT: self.candidate_vectors(examples)}

  def signatures(self):
    return {"serving_default": self.serve_top_k.get_concrete_function(),
            F.RETRIEVAL_QUERY_SIGNATURE:
                self.serve_query_embedding.get_concrete_function(),
            F.RETRIEVAL_CANDIDATE_SIGNATURE:
                self.serve_candidate_embedding.get_concrete_function()}


def embed_catalogue(export: RetrievalExport, serialized: Sequence[bytes],
                    batch_size: int = 2048) -> np.ndarray:
  """Candidate embeddings of raw catalogue examples (the serving path)."""
  parts = []
  for i in range(0, len(serialized), batch_size):
    batch = tf.constant(list(serialized[i:i + batch_size]), tf.string)
    parts.append(export.serve_candidate_embedding(batch)[F.EMBEDDING_OUTPUT].numpy())
  return np.concatenate(parts, axis=0).astype(np.float32)


def _decode_vocab(tft_output: tft.TFTransformOutput, vocab: str) -> Optional[List[str]]:
  try:
    values = tft_output.vocabulary_by_name(vocab)
  except (ValueError, KeyError, tf.errors.NotFoundError):
    return None
  return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
          for v in values]


def _text(b) -> str:
  return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def write_assets(serving_model_dir: str, tft_output: tft.TFTransformOutput,
                 catalogue: Mapping[str, object], embeddings: np.ndarray,
                 stats: Mapping[str, object], manifest: Mapping[str, object]) -> str:
  """Writes the serving tables to `<serving_model_dir>/assets.extra/`."""
  out_dir = os.path.join(serving_model_dir, ASSETS_EXTRA)
  tf.io.gfile.makedirs(out_dir)

  with tf.io.gfile.GFile(os.path.join(out_dir, CATALOGUE_FILE), "w") as f:
    for mid, title, genres, emb in zip(catalogue["movie_ids"],
                                       catalogue["movie_titles"],
                                       catalogue["movie_genres"], embeddings):
      f.write(json.dumps({"movie_id": _text(mid), "movie_title": _text(title),
                          "movie_genres": [int(g) for g in genres],
                          "embedding": [round(float(x), 6) for x in emb]}) + "\n")

  # Seen movies: retrieval.SeenPairs → the memory-mappable SeenTable.
  stats["seen"].to_table(catalogue["movie_ids"]).write(out_dir, tf.io.gfile.GFile)

  table = stats["user_table"]
  vocabs = {name: _decode_vocab(tft_output, v)
            for name, v in USER_FEATURE_VOCABS.items() if name in table}
  with tf.io.gfile.GFile(os.path.join(out_dir, USER_FEATURES_FILE), "w") as f:
    for i, user in enumerate(table[F.USER_ID]):
      transformed, raw = {}, {}
      for name in USER_FILL_SOURCES:
        if name not in table:
          continue
        value = table[name][i].item()
        transformed[name] = value
        if name == F.T_USER_GENDER and value in (0, 1):
          raw[F.USER_GENDER] = value
        elif vocabs.get(name) is not None and 0 <= value < len(vocabs[name]):
          raw_name = {F.T_USER_AGE_BUCKET: F.BUCKETIZED_USER_AGE,
                      F.T_USER_OCCUPATION: F.USER_OCCUPATION_TEXT,
                      F.T_USER_ZIP_PREFIX: "user_zip_prefix"}[name]
          raw[raw_name] = vocabs[name][value]
      f.write(json.dumps({"user_id": _text(user), "transformed": transformed,
                          "raw": raw}) + "\n")

  with tf.io.gfile.GFile(os.path.join(out_dir, POPULARITY_FILE), "w") as f:
    json.dump({"movie_ids": [_text(m) for m in stats["popularity_ids"]],
               "counts": [int(c) for c in stats["popularity_counts"]]}, f)

  manifest = dict(manifest)
  manifest.update({"files": {"catalogue": CATALOGUE_FILE,
                             "seen": list(assets.SEEN_FILES),
                             "user_features": USER_FEATURES_FILE,
                             "popularity": POPULARITY_FILE},
                   "catalogue_size": len(catalogue["movie_ids"]),
                   "num_users": len(table[F.USER_ID])})
  with tf.io.gfile.GFile(os.path.join(out_dir, MANIFEST_FILE), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  return out_dir
