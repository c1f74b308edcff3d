"""Warm start: a new model starts from the last blessed model of its kind.

The pipeline gives each Trainer `base_model=` the latest blessed model of
its own stage (fn_args.base_model: that model's serving dir,
`<model artifact uri>/Format-Serving`, or None on the first run). A SavedModel
alone cannot be warm-started from once the data changed: its embedding rows
are indexed by the vocabularies of *its* Transform run, and a new run's
vocabularies gain, lose and reorder ids. So at the end of training every
run_fn also writes its warm-start state BESIDE the export (not inside it,
so the Pusher never ships it):

    <model artifact uri>/Format-Serving/   the SavedModel (pushed)
    <model artifact uri>/warm_start/
        manifest.json       model kind, weight paths, shapes, vocabulary features
        weights.npz         every trainable weight, keyed by its object path
        vocabularies/<name> the Transform vocabulary files the rows were indexed with

Weights are keyed by their path in the model's attribute graph (e.g.
`query_model/_self_tracked_trackables/0/_embeddings/user_id_idx/embeddings`),
not by variable names, which carry Keras' per-process layer counters
(`ranking_model_1/...`).

Restoring (`restore`, before training continues):
* vocabularies identical and shapes equal: every weight is restored;
* an embedding (or bias) table indexed by a changed vocabulary: the rows of
  tokens present in both vocabularies are carried over by token, the OOV
  rows positionally, and new tokens keep their fresh initialisation;
* any other weight is copied when its shape is unchanged, else it stays fresh
  (e.g. after a change of `embedding_dim`).
Optimizer state and non-trainable statistics (the ranking model's
global mean of the new training data) are not carried over. Missing or
unreadable state (e.g. a base model pushed before warm start existed, or of
another model kind) is logged and training starts from scratch. What
happened is logged and written to `<model_run_dir>/warm_start.json`.

custom_config["warm_start"] (default True) switches it off.
"""
from __future__ import annotations

import io
import json
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from common import features as F

CONFIG_KEY = "warm_start"
STATE_DIR = "warm_start"
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.npz"
VOCAB_DIR = "vocabularies"
REPORT_FILE = "warm_start.json"
FORMAT = 1

# Transformed feature → the Transform vocabulary its indices point into.
VOCABULARIES = {
    F.T_USER_ID: F.VOCAB_USER_ID,
    F.T_MOVIE_ID: F.VOCAB_MOVIE_ID,
    F.T_MOVIE_TITLE_WORDS: F.VOCAB_TITLE_WORDS,
    F.T_MOVIE_GENRES: F.VOCAB_GENRES,
    F.T_USER_AGE_BUCKET: F.VOCAB_AGE_BUCKET,
    F.T_USER_OCCUPATION: F.VOCAB_OCCUPATION,
    F.T_USER_ZIP_PREFIX: F.VOCAB_ZIP_PREFIX,
}

# (embedding layer, transformed feature indexing its rows) pairs.
RowFeatures = Sequence[Tuple[Any, str]]


class WarmStartError(Exception):
  """The base model's warm-start state is missing, unreadable or unusable."""


def state_dir(serving_model_dir: str) -> str:
  """`<model artifact uri>/warm_start` for `<model artifact uri>/Format-Serving`."""
  return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), STATE_DIR)


def weight_paths(model: tf.Module) -> Dict[str, tf.Variable]:
  """Stable key (attribute path) → trainable variable of a built model.

  A variable is reachable through several attributes (Keras tracks layers
  in lists and dicts of its own); the key is the path through the fewest
  of Keras' anonymous `_self_tracked_trackables` lists, then the shortest,
  then the first alphabetically: deterministic for the same model code and
  config, whatever the process built before.
  """
  trainable = {v.ref() for v in model.trainable_variables}
  best: Dict[Any, Tuple[Tuple[int, int, str], str]] = {}
  for path, var in model._flatten(  # pylint: disable=protected-access
      predicate=lambda x: isinstance(x, tf.Variable), with_path=True):
    parts = [str(p) for p in path]
    if var.ref() not in trainable or any(
        p in ("_trainable_weights", "_non_trainable_weights") for p in parts):
      continue
    key = "/".join(parts)
    rank = (parts.count("_self_tracked_trackables"), len(parts), key)
    if var.ref() not in best or rank < best[var.ref()][0]:
      best[var.ref()] = (rank, key)
  return {key: ref.deref() for ref, (_, key) in best.items()}


def _row_features_by_path(paths: Mapping[str, tf.Variable],
                          row_features: RowFeatures) -> Dict[str, str]:
  by_ref = {layer.embeddings.ref(): feature for layer, feature in row_features
            if feature in VOCABULARIES}
  return {path: by_ref[v.ref()] for path, v in paths.items() if v.ref() in by_ref}


def _read_tokens(path: str) -> List[bytes]:
  with tf.io.gfile.GFile(path, "rb") as f:
    tokens = f.read().split(b"\n")
  if tokens and tokens[-1] == b"":
    tokens.pop()
  return tokens


def _current_tokens(tft_output: tft.TFTransformOutput, feature: str) -> List[bytes]:
  return _read_tokens(tft_output.vocabulary_file_by_name(VOCABULARIES[feature]))


# ---------------------------------------------------------------------------
# Saving.

def save(serving_model_dir: str, model: tf.Module,
         tft_output: tft.TFTransformOutput, row_features: RowFeatures,
         kind: str) -> str:
  """Writes the warm-start state of a trained model beside its export."""
  out = state_dir(serving_model_dir)
  tf.io.gfile.makedirs(os.path.join(out, VOCAB_DIR))
  paths = weight_paths(model)
  features = _row_features_by_path(paths, row_features)
  buf = io.BytesIO()
  np.savez(buf, **{p: v.numpy() for p, v in paths.items()})
  with tf.io.gfile.GFile(os.path.join(out, WEIGHTS_FILE), "wb") as f:
    f.write(buf.getvalue())
  vocabularies = {}
  for feature in sorted(set(features.values())):
    name = VOCABULARIES[feature]
    target = os.path.join(VOCAB_DIR, name)
    tf.io.gfile.copy(tft_output.vocabulary_file_by_name(name),
                     os.path.join(out, target), overwrite=True)
    vocabularies[feature] = target
  manifest = {
      "format": FORMAT, "model": kind, "vocabularies": vocabularies,
      "weights": {p: {"shape": list(v.shape), "feature": features.get(p)}
                  for p, v in sorted(paths.items())},
  }
  with tf.io.gfile.GFile(os.path.join(out, MANIFEST_FILE), "w") as f:
    json.dump(manifest, f, indent=1)
  logging.info("Warm-start state (%d weights, %d vocabularies) written to %s",
               len(paths), len(vocabularies), out)
  return out


# ---------------------------------------------------------------------------
# Restoring.

def _load_state(base_model: str, kind: str):
  """(manifest, weights, old vocabularies) of the base model, or WarmStartError."""
  directory = state_dir(base_model)
  manifest_path = os.path.join(directory, MANIFEST_FILE)
  if not tf.io.gfile.exists(manifest_path):
    raise WarmStartError(f"no warm-start state in {directory} (model exported "
                         "before warm start existed?)")
  try:
    with tf.io.gfile.GFile(manifest_path) as f:
      manifest = json.load(f)
    if manifest.get("format") != FORMAT:
      raise WarmStartError(f"unknown warm-start format {manifest.get('format')!r}")
    if manifest.get("model") != kind:
      raise WarmStartError(f"the base model is a {manifest.get('model')!r} "
                           f"model, not {kind!r}")
    with tf.io.gfile.GFile(os.path.join(directory, WEIGHTS_FILE), "rb") as f:
      with np.load(io.BytesIO(f.read()), allow_pickle=False) as npz:
        weights = {k: npz[k] for k in npz.files}
    vocabularies = {feature: _read_tokens(os.path.join(directory, rel))
                    for feature, rel in manifest.get("vocabularies", {}).items()}
  except WarmStartError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any corruption)
    raise WarmStartError(f"unreadable warm-start state in {directory}: "
                         f"{type(e).__name__}: {e}") from e
  return manifest, weights, vocabularies


def _remap_rows(old: np.ndarray, fresh: np.ndarray, old_tokens: List[bytes],
                new_tokens: List[bytes]) -> Tuple[np.ndarray, Dict[str, int]]:
  """`fresh` with the rows of shared tokens (and the OOV rows) taken from `old`."""
  value = np.array(fresh, copy=True)
  old_index = {t: i for i, t in enumerate(old_tokens)}
  pairs = [(j, old_index[t]) for j, t in enumerate(new_tokens) if t in old_index]
  if pairs:
    new_rows, old_rows = map(np.array, zip(*pairs))
    value[new_rows] = old[old_rows]
  # OOV buckets follow the vocabulary: carried over position by position.
  n_oov = min(old.shape[0] - len(old_tokens), fresh.shape[0] - len(new_tokens))
  for k in range(max(0, n_oov)):
    value[len(new_tokens) + k] = old[len(old_tokens) + k]
  counts = {"vocabulary_size": len(new_tokens),
            "base_vocabulary_size": len(old_tokens),
            "carried_over": len(pairs), "new": len(new_tokens) - len(pairs),
            "dropped": len(old_tokens) - len(pairs)}
  return value, counts


def restore(base_model: str, model: tf.Module, tft_output: tft.TFTransformOutput,
            row_features: RowFeatures, kind: str) -> Dict[str, Any]:
  """Assigns the base model's weights to the built `model`; returns the report.

  Raises:
    WarmStartError: no usable warm-start state beside `base_model`.
  """
  manifest, weights, old_vocabs = _load_state(base_model, kind)
  paths = weight_paths(model)
  features = _row_features_by_path(paths, row_features)
  new_vocabs = {f: _current_tokens(tft_output, f) for f in set(features.values())}
  identical = all(old_vocabs.get(f) == tokens for f, tokens in new_vocabs.items())
  restored, remapped, fresh = [], [], {}
  feature_counts: Dict[str, Dict[str, int]] = {}
  for path, var in sorted(paths.items()):
    old = weights.get(path)
    shape = tuple(var.shape)
    feature = features.get(path)
    if old is None:
      fresh[path] = "not in the base model"
    elif feature and old_vocabs.get(feature) is not None and (
        old_vocabs[feature] != new_vocabs[feature]):
      if old.shape[1:] != shape[1:]:
        fresh[path] = f"row width changed {old.shape[1:]} -> {shape[1:]}"
        continue
      value, counts = _remap_rows(old, var.numpy(), old_vocabs[feature],
                                  new_vocabs[feature])
      var.assign(value)
      remapped.append(path)
      feature_counts[feature] = counts
    elif tuple(old.shape) == shape:
      var.assign(old)
      restored.append(path)
    else:
      fresh[path] = f"shape changed {tuple(old.shape)} -> {shape}"
  unused = sorted(set(weights) - set(paths))
  report = {
      "base_model": base_model, "vocabularies_identical": identical,
      "restored": restored, "remapped": remapped, "fresh": fresh,
      "not_used": unused, "features": feature_counts,
  }
  report["status"] = ("restored" if not fresh and not remapped and not unused
                      else "partial")
  report["message"] = _message(report)
  return report


def _message(report: Mapping[str, Any]) -> str:
  base = f"warm start from {report['base_model']}: "
  if report["status"] == "restored":
    return base + "vocabularies identical, all weights restored"
  parts = ["vocabularies identical" if report["vocabularies_identical"]
           else "vocabularies changed"]
  for feature, c in sorted(report["features"].items()):
    parts.append(f"{feature}: {c['carried_over']} of {c['vocabulary_size']} "
                 f"rows carried over, {c['new']} new ({c['dropped']} dropped)")
  parts.append(f"{len(report['restored'])} weights restored, "
               f"{len(report['remapped'])} remapped by token")
  if report["fresh"]:
    parts.append("fresh: " + ", ".join(f"{p} ({why})"
                                       for p, why in sorted(report["fresh"].items())))
  if report["not_used"]:
    parts.append(f"{len(report['not_used'])} base weights not used")
  return base + "; ".join(parts)


# ---------------------------------------------------------------------------
# run_fn glue.

def enabled(custom_config: Optional[Mapping[str, Any]]) -> bool:
  value = (custom_config or {}).get(CONFIG_KEY, True)
  if isinstance(value, str):
    return value.strip().lower() not in ("0", "false", "no", "off", "")
  return bool(value)


def warm_start(fn_args, custom_config: Optional[Mapping[str, Any]],
               model: tf.Module, build: Callable[[], Any],
               tft_output: tft.TFTransformOutput, row_features: RowFeatures,
               kind: str) -> Dict[str, Any]:
  """Restores `model` from fn_args.base_model when asked and possible.

  `build` creates the model's variables (e.g. calls it on one batch); it
  runs only when there is something to restore. Never raises for a bad base
  model: that case is logged and training starts from scratch. Returns the
  report (also written by `write_report`).
  """
  base_model = getattr(fn_args, "base_model", None)
  report: Dict[str, Any] = {"base_model": base_model}
  if not enabled(custom_config):
    report.update(status="disabled",
                  message="warm start disabled (custom_config warm_start=false)")
  elif not base_model:
    report.update(status="no_base_model",
                  message="no base model (no blessed model yet): training from scratch")
  else:
    build()
    try:
      report = restore(base_model, model, tft_output, row_features, kind)
    except WarmStartError as e:
      report.update(status="no_state",
                    message=f"warm start from {base_model} not possible, "
                    f"training from scratch: {e}")
  logging.info("%s: %s", kind, report["message"])
  return report


def write_report(model_run_dir: Optional[str], report: Mapping[str, Any]) -> None:
  """<model_run_dir>/warm_start.json: what the run started from."""
  if not model_run_dir:
    return
  tf.io.gfile.makedirs(model_run_dir)
  with tf.io.gfile.GFile(os.path.join(model_run_dir, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
