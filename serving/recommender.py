"""Two-stage recommendations from the pushed models: retrieve → filter → rank.

`Recommender(serving_dir)` serves the newest usable pushed versions of
`<serving_dir>/retrieval/<version>` and `<serving_dir>/ranking/<version>`
(integer folders, TF Serving layout; common/versions.py says which are
complete). A version that is incomplete or does not load is skipped with a
warning naming it and why, for the next older one (serving/version_picker.py);
`health()` reports it. An output directory of local_runner (holding
`serving/`) is accepted too.

recommend(user_id, k, n_candidates, features):
1. retrieval: the `query_embedding` signature embeds one tf.Example (user_id
   and the given user features; known users get their stored features inside
   the model, unknown ones its OOV row); the embedding is scored against the
   exported candidate matrix (assets.extra/catalogue.jsonl, one numpy matmul),
   movies the user rated in training (the memory-mapped seen table,
   common/assets.py) are masked, the best N unseen movies are kept;
2. ranking: the ranking model's `serving_default` scores the N (one batched
   call; user features + each candidate's id/title/genres): `scores` is the
   ranking model's order (its engagement score, trainer_modules/ranking.py),
   `predictions` the predicted rating shown with each item;
   A ranking model of a catalogue up to ~10k movies also returns
   `item_item_scores`, EASE's item-item score of the user's history;
3. the final order fuses the retrieval order, the ranking order, the
   item-item order and the predicted-rating order (weighted reciprocal rank
   fusion, `fuse_ranks`) and the k
   best are returned (a ranking model exporting only `predictions` orders by
   the rating alone). Without a ranking model the retrieval order is used
   (result says so).

Time: a request may give `timestamp` (seconds) as the context both models
were trained with; without it each model uses the user's own last training
time (stored inside the models: see model_parts.UserDefaults), and "now" for
an unknown user, which the Transform clips to the end of the training range.

New versions are picked up without restart: at most every `check_interval`
seconds a request (or `poll()`, e.g. /healthz) looks at the folders; a newer
version is loaded in a background thread (or synchronously with `refresh()`)
and swapped in with one reference assignment, so every request sees one
consistent set of models. A newer version that is damaged leaves the loaded
models serving; it is tried again only once its files change.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Union

import common  # noqa: F401  pylint: disable=unused-import  (TF_USE_LEGACY_KERAS)

import numpy as np
import tensorflow as tf

from common import assets
from common import features as F
from common import versions
from serving import errors
from serving import limits
from serving import version_picker

# Names other modules reach through this one (components/batch_recommender,
# benchmarks/retrieval_ann.py, the evaluators): each is defined elsewhere once.
RETRIEVAL, RANKING = versions.RETRIEVAL, versions.RANKING
complete_versions = versions.complete_versions
resolve_serving_dir = version_picker.resolve_serving_dir
ASSETS_EXTRA, CATALOGUE_FILE = assets.ASSETS_EXTRA, assets.CATALOGUE_FILE
RecommenderError = errors.RecommenderError
MAX_K = limits.MAX_K
# Outputs of the ranking model's serving_default: the order, the rating and
# (when the model has it) the EASE item-item score of the user's history.
RANK_SCORE, RATING, ITEM_ITEM = "scores", "predictions", "item_item_scores"
RRF_K = 60  # reciprocal rank fusion constant (see fuse_ranks)
ITEM_ITEM_WEIGHT = 4.0  # weight of the item-item rank in the fusion
RATING_WEIGHT = 0.5  # weight of the predicted-rating rank in the fusion

# Friendly names accepted in `features` besides the contract's raw names.
FEATURE_ALIASES = {
    "age": F.RAW_USER_AGE, "gender": F.USER_GENDER,
    "occupation": F.USER_OCCUPATION_TEXT, "zip": F.USER_ZIP_CODE,
    "zip_code": F.USER_ZIP_CODE, "time": F.TIMESTAMP,
}
# Request features besides the user's own: the time context.
CONTEXT_FEATURES = (F.TIMESTAMP,)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Request features.

def _number(key: str, value: Any, kind: str) -> float:
  """value as a float for validation (ValueError naming `key` otherwise)."""
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    raise ValueError(f"{key} must be {kind}, got {type(value).__name__}")
  try:
    return float(value)
  except OverflowError:  # an int beyond any float
    raise ValueError(f"{key} must be a finite number, got an integer of "
                     f"{value.bit_length()} bits") from None


def normalize_features(features: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """Request user features → raw contract features (ValueError if invalid).

  Accepts the contract's user feature names and the aliases age, gender
  ("M"/"F"/1/0), occupation, zip / zip_code. `age` also fills
  bucketized_user_age. Strings hold at most limits.MAX_STRING_CHARS
  characters, numbers must be finite and in limits.NUMBER_RANGES (age
  0..120), at most limits.MAX_FEATURES entries (see serving/limits.py).
  """
  if features is None:
    return {}
  if not isinstance(features, Mapping):
    raise ValueError("features must be an object of user features")
  limits.check_features_count(features)
  out: Dict[str, Any] = {}
  for key, value in features.items():
    name = FEATURE_ALIASES.get(key, key)
    spec = F.FEATURES.get(name)
    if spec is None or name == F.USER_ID or (
        spec.kind != F.USER and name not in CONTEXT_FEATURES):
      allowed = sorted((set(FEATURE_ALIASES) | set(F.USER_FEATURES)
                        | set(CONTEXT_FEATURES)) - {F.USER_ID})
      shown = key if len(str(key)) <= 40 else f"{str(key)[:40]}..."
      raise ValueError(f"unknown feature {shown!r} (allowed: {', '.join(allowed)})")
    if value is None:
      continue
    if name == F.USER_GENDER and isinstance(value, str):
      if value.lower() not in F.GENDER_CODES:
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise ValueError(f"gender must be M/F (or 1/0), got {shown!r}")
      value = F.GENDER_CODES[value.lower()]
    if spec.dtype == F.BYTES:
      if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
      value = str(value)
      limits.check_string(key, value)
    elif spec.dtype == F.FLOAT:
      value = _number(key, value, "a number")
      limits.check_number(name, value, shown=key)
    else:
      number = _number(key, value, "an integer")
      if math.isfinite(number) and number == int(number):
        limits.check_number(name, value if isinstance(value, int) else number,
                            shown=key)
      else:
        raise ValueError(f"{key} must be an integer, got {value!r}")
      value = int(value)
    out[name] = value
  if F.RAW_USER_AGE in out and F.BUCKETIZED_USER_AGE not in out:
    out[F.BUCKETIZED_USER_AGE] = float(F.bucketize_age(out[F.RAW_USER_AGE]))
  return out


def _ranks(score: np.ndarray) -> np.ndarray:
  """1-based rank of each entry by descending score, ties by position."""
  rank = np.empty(len(score), np.float64)
  rank[np.argsort(-np.asarray(score), kind="stable")] = np.arange(1, len(score) + 1)
  return rank


def fuse_ranks(rank_score: np.ndarray, item_item_score: Optional[np.ndarray] = None,
               rating: Optional[np.ndarray] = None, k: int = RRF_K,
               item_item_weight: float = ITEM_ITEM_WEIGHT,
               rating_weight: float = RATING_WEIGHT) -> np.ndarray:
  """The final order of candidates given in retrieval order: weighted
  reciprocal rank fusion of the retrieval rank, the ranking model's rank and,
  when given, the rank by the ranking model's item-item (EASE) score and the
  rank by its predicted rating:
  1/(k + retrieval_rank) + 1/(k + ranking_rank) + w/(k + item_item_rank)
  + v/(k + rating_rank), ties to retrieval order.

  Rank fusion (Cormack et al., SIGIR 2009; k = 60 is their constant) needs
  no calibration between scores of models trained on different tasks. Why
  these signals and w = 4, measured on ml-100k (random 80/20 split, per-user
  nDCG@10 of the top-10 of 100 retrieved candidates, two model seeds): the
  retrieval order 0.357, retrieval + ranking fused 0.394; EASE's order of
  the same candidates 0.442 (EASE on the whole catalogue 0.442) and the
  three fused with w = 2 / 4 / 6 / 8: 0.444 / 0.448 / 0.448 / 0.447 (w = 4
  with either model dropped: 0.446). With the stronger retrieval defaults
  (retrieval alone 0.426) the three fused score 0.449 ± 0.001 (3 seeds), and
  weights 0.5-3 / 0-1.5 / 1-6 for the three ranks all land within 0.001 of
  that, so w = 4 stays; k = 10-40 also within 0.001.
  The predicted rating alone orders the candidates badly (0.204: it promotes
  rarely seen, highly rated movies), but as a fourth, weak rank it adds what
  the other three lack, how much the user will like a movie rather than how
  likely they are to watch it: v = 0.25 / 0.5 / 0.7 / 1 gave 0.4515 / 0.4537
  / 0.4531 / 0.4503 against 0.4483 without it (seed 0); with v = 0.5 the
  3-seed benchmark scores 0.454 ± 0.001 (benchmarks/results/
  two_stage_quality.json). Fusing z-scored scores instead of ranks scored
  0.452-0.454, no better, and needs the scores' scales to stay comparable
  across retrainings.
  The towers and the ranker err differently from the item-item model, so
  each adds to it.
  """
  fused = 1.0 / (k + np.arange(1, len(rank_score) + 1, dtype=np.float64))
  fused += 1.0 / (k + _ranks(rank_score))
  if item_item_score is not None:
    fused += float(item_item_weight) / (k + _ranks(item_item_score))
  if rating is not None and rating_weight:
    fused += float(rating_weight) / (k + _ranks(rating))
  return np.argsort(-fused, kind="stable")


# ---------------------------------------------------------------------------
# Loaded models: each part loads (and is checked) on its own, so a damaged
# ranking version does not cost the good retrieval one, and the part that
# did not change is reused by a reload.

def _manifest_catalogue_size(assets_dir: str) -> Optional[int]:
  try:
    with open(os.path.join(assets_dir, assets.MANIFEST_FILE), encoding="utf-8") as f:
      size = json.load(f).get("catalogue_size")
  except (OSError, ValueError, AttributeError):
    return None
  return size if isinstance(size, int) else None


class _Retrieval:
  """The retrieval SavedModel and its serving tables (assets.extra/).

  strict (pushed versions): a catalogue that is not a finite matrix of the
  manifest's size does not load, so serving skips the version. The
  evaluators' from_model_dirs loads leniently, as before.
  """

  def __init__(self, rdir: str, strict: bool = True):
    self.model = tf.saved_model.load(rdir)
    self.query_fn = self.model.signatures[F.RETRIEVAL_QUERY_SIGNATURE]
    assets_dir = os.path.join(rdir, assets.ASSETS_EXTRA)
    ids, titles, genres, candidates = assets.read_catalogue_table(assets_dir, strict)
    expected = _manifest_catalogue_size(assets_dir) if strict else None
    if expected is not None and expected != len(ids):
      raise ValueError(f"{assets.ASSETS_EXTRA}/{assets.CATALOGUE_FILE} has "
                       f"{len(ids)} movies, {assets.MANIFEST_FILE} says {expected}")
    self.movie_ids, self.titles, self.genres = ids, titles, genres
    self.candidates = candidates
    # Memory-mapped: nothing is read until a request needs a user's row.
    self.seen = assets.SeenTable.load(assets_dir, catalogue_ids=ids)
    self.user_raw: Dict[str, Dict[str, Any]] = {}
    path = os.path.join(assets_dir, assets.USER_FEATURES_FILE)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        for line in f:
          row = json.loads(line)
          raw = dict(row.get("raw", {}))
          if "user_zip_prefix" in raw:  # the transform reads the 3-digit prefix
            raw[F.USER_ZIP_CODE] = raw.pop("user_zip_prefix")
          self.user_raw[row["user_id"]] = {
              k: v for k, v in raw.items() if k in F.FEATURES}
    # Movie half of every ranking request, serialized once per version.
    self.movie_bytes = [
        F.features_bytes({F.MOVIE_ID: m, F.MOVIE_TITLE: t, F.MOVIE_GENRES: g})
        for m, t, g in zip(ids, titles, genres)]
    # Traces the signature once so the first request is fast.
    q = F.example_from_features(F.features_bytes({F.USER_ID: "__warmup__"}))
    self.query_fn(examples=tf.constant([q]))


class _Ranking:
  """The ranking SavedModel's serving_default, traced on one example."""

  def __init__(self, kdir: str, sample_movie: bytes):
    self.model = tf.saved_model.load(kdir)
    self.rank_fn = self.model.signatures["serving_default"]
    user = F.features_bytes({F.USER_ID: "__warmup__"})
    self.rank_fn(examples=tf.constant(
        [F.example_from_features(user + sample_movie)] * 2))


class _Models:
  """Immutable bundle: retrieval model + tables, optional ranking model."""

  def __init__(self, retrieval: _Retrieval, ranking: Optional[_Ranking],
               retrieval_version: Optional[int], ranking_version: Optional[int],
               ranking_note: Optional[str] = None):
    self.versions = {RETRIEVAL: retrieval_version, RANKING: ranking_version}
    self.retrieval_part, self.ranking_part = retrieval, ranking
    self.query_fn = retrieval.query_fn
    self.movie_ids, self.titles = retrieval.movie_ids, retrieval.titles
    self.genres, self.candidates = retrieval.genres, retrieval.candidates
    self.seen, self.user_raw = retrieval.seen, retrieval.user_raw
    self.movie_bytes = retrieval.movie_bytes
    self.rank_fn = None if ranking is None else ranking.rank_fn
    # Why there is no ranking model, said with every unranked result.
    self.ranking_note = ranking_note or "no ranking model pushed"


# ---------------------------------------------------------------------------

class Recommender:
  """Two-stage recommendations from `<serving_dir>/{retrieval,ranking}`.

  version: None (newest usable, followed as new ones are pushed), an int
  (pins that version of both models; the ranking model is optional unless
  pinned and present) or {"retrieval": v, "ranking": v}. A pinned version
  that is missing or damaged is a RecommenderError.

  allow_empty: start without a usable model instead of raising (requests
  raise RecommenderError, `health()` says "unavailable") and keep looking
  every check_interval; what each `recommend serve --workers` process does.
  """

  def __init__(self, serving_dir: str,
               version: Union[None, int, Mapping[str, Optional[int]]] = None,
               check_interval: float = 2.0, background_reload: bool = True,
               allow_empty: bool = False):
    self.serving_dir = resolve_serving_dir(serving_dir)
    if isinstance(version, Mapping):
      self.pinned = {RETRIEVAL: version.get(RETRIEVAL), RANKING: version.get(RANKING)}
    elif version is not None:
      self.pinned = {RETRIEVAL: int(version), RANKING: int(version)}
    else:
      self.pinned = {RETRIEVAL: None, RANKING: None}
    self.check_interval = float(check_interval)
    self.background_reload = background_reload
    self._init_state()
    self._pickers = {m: version_picker.VersionPicker(self.serving_dir, m)
                     for m in versions.MODELS}
    try:
      self.refresh()
    except RecommenderError as e:
      if not allow_empty:
        raise
      self._last_error = self._relative(str(e))
      log.error("%s", e)

  def _relative(self, message: str) -> str:
    """message with the serving dir's absolute path cut (for clients)."""
    return message.replace(self.serving_dir + os.sep, "").replace(
        self.serving_dir, ".")

  def _init_state(self) -> None:
    self._lock = threading.Lock()
    self._loading = False
    self._reload_thread: Optional[threading.Thread] = None
    self._last_check = 0.0
    self._models: Optional[_Models] = None
    self._pickers: Dict[str, version_picker.VersionPicker] = {}
    # What the last refresh passed over (versions above the served ones).
    self._skips: Dict[str, List[version_picker.Skip]] = {m: [] for m in versions.MODELS}
    self._last_error: Optional[str] = None

  @classmethod
  def from_model_dirs(cls, retrieval_dir: str,
                      ranking_dir: Optional[str] = None) -> "Recommender":
    """A Recommender over two exported SavedModel folders (no version folders,
    no reloading): what the pipeline's evaluators and batch jobs use, so they
    compute exactly what `recommend` serves."""
    self = cls.__new__(cls)
    self.serving_dir = None
    self.pinned = {RETRIEVAL: None, RANKING: None}
    self.check_interval = float("inf")
    self.background_reload = False
    self._init_state()
    self._last_check = time.monotonic()
    t0 = time.time()
    retrieval = _Retrieval(retrieval_dir, strict=False)
    ranking = None if ranking_dir is None else _Ranking(
        ranking_dir, retrieval.movie_bytes[0])
    self._models = _Models(retrieval, ranking, None, None)
    log.info("Loaded %s and %s in %.1fs", retrieval_dir, ranking_dir,
             time.time() - t0)
    return self

  # -- versions --------------------------------------------------------------
  def _no_retrieval_message(self, skips: List[version_picker.Skip]) -> str:
    where = os.path.join(self.serving_dir, RETRIEVAL)
    if not skips:
      return (f"No complete retrieval model under {where} (integer version "
              "folders with saved_model.pb)")
    return (f"No usable retrieval model under {where}: "
            + "; ".join(str(s) for s in skips))

  def _pick_retrieval(self, current: Optional[_Models]):
    picker = self._pickers[RETRIEVAL]
    pin = self.pinned[RETRIEVAL]
    if pin is not None:
      if current is not None and current.versions[RETRIEVAL] == pin:
        return pin, current.retrieval_part, []
      return pin, picker.load_pinned(pin, _Retrieval), []
    version, part, skips = picker.pick(
        None if current is None else current.versions[RETRIEVAL], _Retrieval)
    if part is version_picker.KEEP:
      part = current.retrieval_part
    if version is None:
      if current is None:
        raise RecommenderError(self._no_retrieval_message(skips))
      # Nothing usable on disk any more: the loaded models keep serving.
      return current.versions[RETRIEVAL], current.retrieval_part, skips
    return version, part, skips

  def _pick_ranking(self, current: Optional[_Models], retrieval: _Retrieval):
    picker = self._pickers[RANKING]

    def load(kdir):
      return _Ranking(kdir, retrieval.movie_bytes[0])

    pin = self.pinned[RANKING]
    if pin is not None:
      if current is not None and current.versions[RANKING] == pin:
        return pin, current.ranking_part, []
      if not picker.on_disk():
        return None, None, []  # nothing pushed: ranking is optional
      return pin, picker.load_pinned(pin, load), []
    loaded = None if current is None else current.versions[RANKING]
    version, part, skips = picker.pick(loaded, load)
    if part is version_picker.KEEP:
      part = current.ranking_part
    if version is None and skips and loaded is not None:
      # Every ranking version on disk is bad: keep the loaded one.
      return loaded, current.ranking_part, skips
    return version, part, skips

  def refresh(self) -> bool:
    """Loads newer versions now, if any; True when the models changed.

    Damaged versions are skipped (see serving/version_picker.py); the
    RecommenderError of a pinned version that is damaged or missing, or of
    no usable retrieval version, is raised only while nothing is loaded.
    """
    self._last_check = time.monotonic()
    current = self._models
    if current is not None and all(self.pinned[m] is not None for m in versions.MODELS):
      return False  # pinned versions never change
    t0 = time.time()
    retrieval_v, retrieval, r_skips = self._pick_retrieval(current)
    ranking_v, ranking, k_skips = self._pick_ranking(current, retrieval)
    self._skips = {RETRIEVAL: r_skips, RANKING: k_skips}
    first = (r_skips + k_skips)[:1]
    self._last_error = str(first[0]) if first else None
    if current is not None and (current.versions[RETRIEVAL],
                                current.versions[RANKING]) == (retrieval_v, ranking_v):
      return False
    note = None
    if ranking is None and k_skips:
      note = "no usable ranking model (the pushed versions were skipped)"
    self._models = _Models(retrieval, ranking, retrieval_v, ranking_v, note)
    # One assignment above: requests see the old or the new models, whole.
    log.info("Serving retrieval v%s, ranking v%s (loaded in %.1fs)",
             retrieval_v, ranking_v, time.time() - t0)
    return True

  def _maybe_refresh(self) -> None:
    if time.monotonic() - self._last_check < self.check_interval:
      return
    with self._lock:
      if self._loading or time.monotonic() - self._last_check < self.check_interval:
        return
      self._last_check = time.monotonic()
      self._loading = True

    def run():
      try:
        self.refresh()
      except RecommenderError as e:
        self._last_error = self._relative(str(e))
        log.error("Model refresh failed: %s", e)
      except Exception as e:  # pylint: disable=broad-except
        self._last_error = "reload failed: " + version_picker.describe_error(
            e, self.serving_dir)
        log.exception("Model refresh failed")
      finally:
        self._loading = False

    if self.background_reload:
      self._reload_thread = threading.Thread(target=run, name="recommender-reload",
                                             daemon=True)
      self._reload_thread.start()
    else:
      run()

  def poll(self) -> None:
    """Looks for new versions if check_interval has passed (in the background
    unless background_reload is off); what /healthz calls, so a server
    without traffic, or without a usable model yet, still reloads."""
    self._maybe_refresh()

  def close(self, timeout: float = 60.0) -> None:
    """Stops reloading and waits for a reload in progress.

    TensorFlow aborts the process when the interpreter exits while a thread
    is still loading a SavedModel; a server calls this before it exits.
    """
    self.check_interval = float("inf")
    thread = self._reload_thread
    if thread is not None and thread.is_alive():
      thread.join(timeout)

  def _current(self) -> _Models:
    m = self._models
    if m is None:
      raise RecommenderError(
          "no usable model loaded yet"
          + (f" ({self._last_error})" if self._last_error else ""))
    return m

  @property
  def versions(self) -> Dict[str, Optional[int]]:
    return dict(self._current().versions)

  @property
  def catalogue_size(self) -> int:
    return len(self._current().movie_ids)

  def info(self) -> Dict[str, Any]:
    m = self._current()
    return {"serving_dir": self.serving_dir, "model_versions": dict(m.versions),
            "pinned": dict(self.pinned), "catalogue_size": len(m.movie_ids),
            "known_users": len(m.seen), "ranking_loaded": m.rank_fn is not None}

  def health(self) -> Dict[str, Any]:
    """What /healthz shows: "ok" (the newest version of each model on disk is
    served), "degraded" (a newer version was skipped, or a reload failed:
    the loaded models still serve; last_reload_error says why) or
    "unavailable" (no model loaded). No absolute paths: reasons are relative
    to the version folder."""
    m = self._models
    served = dict(m.versions) if m is not None else {RETRIEVAL: None, RANKING: None}
    models = {}
    for model in versions.MODELS:
      skips = self._skips.get(model, [])
      models[model] = {
          "version": served[model],
          "skipped": {str(s.version): s.reason for s in skips}}
    if m is None:
      status = "unavailable"
    elif self._last_error or any(models[x]["skipped"] for x in models):
      status = "degraded"
    else:
      status = "ok"
    out = {"status": status, "model_versions": served,
           "pinned": dict(self.pinned), "models": models,
           "last_reload_error": self._last_error}
    if m is not None:
      out.update(catalogue_size=len(m.movie_ids), known_users=len(m.seen),
                 ranking_loaded=m.rank_fn is not None)
    return out

  # -- recommendations -------------------------------------------------------
  def recommend(self, user_id, k: int = 10, n_candidates: int = 100,
                features: Optional[Mapping[str, Any]] = None,
                rank: bool = True) -> Dict[str, Any]:
    """Top-k unseen movies for `user_id` (see the module docstring).

    rank=False returns the retrieval order even with a ranking model (what
    the TwoStageEvaluator compares the two-stage list with, from one load).

    Raises ValueError for bad arguments (k ≤ 0, k > 1000 or > catalogue,
    unknown / ill-typed features).
    """
    self._maybe_refresh()
    m = self._current()
    if user_id is None or isinstance(user_id, (bool, float, list, dict)):
      raise ValueError("user_id must be a string (or integer)")
    user_id = str(user_id)
    if not user_id:
      raise ValueError("user_id must not be empty")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
      raise ValueError("k must be an integer")
    if k <= 0:
      raise ValueError("k must be positive")
    limit = min(MAX_K, len(m.movie_ids))
    if k > limit:
      raise ValueError(f"k must be at most {limit} (catalogue has "
                       f"{len(m.movie_ids)} movies, limit {MAX_K})")
    if isinstance(n_candidates, bool) or not isinstance(n_candidates, (int, np.integer)):
      raise ValueError("n_candidates must be an integer")
    n_candidates = max(int(n_candidates), int(k))
    given = normalize_features(features)

    # 1. Retrieval.
    query = F.example_from_features(F.features_bytes(dict(given, **{F.USER_ID: user_id})))
    q = m.query_fn(examples=tf.constant([query]))[F.EMBEDDING_OUTPUT]
    q = q.numpy()[0].astype(np.float32)
    scores = m.candidates @ q
    seen = m.seen.get(user_id)
    known = user_id in m.seen or user_id in m.user_raw
    masked = scores.copy()
    if seen is not None and len(seen):
      masked[seen] = -np.inf
    n_unseen = len(m.movie_ids) - (0 if seen is None else len(np.unique(seen)))
    n = min(n_candidates, n_unseen)
    if n <= 0:
      top = np.zeros([0], np.int64)
    elif n < len(masked):
      top = np.argpartition(-masked, n - 1)[:n]
      top = top[np.argsort(-masked[top], kind="stable")]
    else:
      top = np.argsort(-masked, kind="stable")[:n]

    # 2. Ranking.
    predicted = rank_score = ranking_rank = item_item = item_item_rank = None
    rating_rank = None
    if rank and m.rank_fn is not None and len(top):
      user_row = dict(m.user_raw.get(user_id, {}))
      user_row.update(given)
      user_row[F.USER_ID] = user_id
      user_bytes = F.features_bytes(user_row)
      batch = [F.example_from_features(user_bytes + m.movie_bytes[i]) for i in top]
      out = m.rank_fn(examples=tf.constant(batch))
      if RANK_SCORE in out:
        rank_score = out[RANK_SCORE].numpy()
      predicted = out[RATING].numpy() if RATING in out else None
      if ITEM_ITEM in out:
        item_item = out[ITEM_ITEM].numpy()
        item_item_rank = _ranks(item_item).astype(np.int64)
      if rank_score is None:  # an older ranking model: rating order
        rank_score = predicted
        order = np.argsort(-rank_score, kind="stable")
      else:
        order = fuse_ranks(rank_score, item_item, predicted)
        if predicted is not None:
          rating_rank = _ranks(predicted).astype(np.int64)
      ranking_rank = _ranks(rank_score).astype(np.int64)
    else:
      order = np.arange(len(top))
    order = order[:k]

    items = []
    for j in order:
      i = int(top[j])
      items.append({
          "movie_id": m.movie_ids[i], "title": m.titles[i],
          "genres": [F.GENRE_NAMES[g] if 0 <= g < len(F.GENRE_NAMES) else str(g)
                     for g in m.genres[i]],
          "score": float(scores[i]),
          "predicted_rating": None if predicted is None else float(predicted[j]),
          "rank_score": None if rank_score is None else float(rank_score[j]),
          "retrieval_rank": int(j) + 1,
          "ranking_rank": None if ranking_rank is None else int(ranking_rank[j]),
          "item_item_rank": None if item_item_rank is None else int(item_item_rank[j]),
          "rating_rank": None if rating_rank is None else int(rating_rank[j]),
      })
    messages = []
    if len(items) < k:
      messages.append(f"only {len(items)} unseen movies for this user "
                      f"(asked for {k})")
    if m.rank_fn is None:
      messages.append(f"{m.ranking_note}: items are in retrieval order")
    return {"user_id": user_id, "known_user": known,
            "model_versions": dict(m.versions), "items": items,
            "num_unseen": int(n_unseen), "num_candidates": int(len(top)),
            "ranked": rank_score is not None, "partial": len(items) < k,
            "message": "; ".join(messages) or None}
