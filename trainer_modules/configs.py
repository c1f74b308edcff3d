"""The Transform and trainer configs: typed, strict, checked before anything runs.

Each stage reads a `custom_config` dict (Transform's preprocessing_fn, the
retrieval and ranking run_fns, their Tuners). A misspelt key
(`{"embeding_dim": 8}`) used to be ignored and a negative epoch count only
failed deep inside training. Here each config is a pydantic model that
forbids unknown keys and bounds every number, so a bad config stops with one
line naming the config, the key and what was expected, before a component
runs (the runners parse their flags with `parse_json`, the pipeline
validates what it hands to the components) and again inside the component
(Kubeflow compiles a config it never ran).

This module imports no TensorFlow (pydantic only), so the runners and the
pipeline can call it in a few milliseconds.

    validate("retrieval", {"embedding_dim": 32})   # the whole config, defaults filled
    parse_json("ranking", '{"epochs": 3}')        # {"epochs": 3}, checked

The defaults below were chosen by experiment; the comments say where.
"""
from __future__ import annotations

import difflib
import json
import logging
from typing import (Annotated, Any, Dict, Iterable, List, Literal, Mapping,
                    Optional, Type)

import pydantic
from pydantic import Field

KINDS = ("transform", "retrieval", "ranking")

# Constrained values shared by the models.
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(gt=0)]          # learning rates, temperatures
NonNegative = Annotated[float, Field(ge=0)]   # L2 weights, task weights
Fraction = Annotated[float, Field(ge=0, le=1)]
Dropout = Annotated[float, Field(ge=0, lt=1)]
Layers = Annotated[List[Positive], Field(min_length=1)]
# Choices. trainer_modules/optimizers.py and strategy.py (TensorFlow) hold
# the same tuples; tests/test_configs.py checks they agree.
Optimizer = Literal["adam", "adagrad", "sgd"]
EmbeddingOptimizer = Literal["auto", "adagrad", "same"]
Strategy = Literal["auto", "one_device", "mirrored", "multi_worker_mirrored"]
Negatives = Literal["auto", "full", "in_batch"]
# Values given in any case (the optimizers and strategies always were).
_CASE_FREE = ("optimizer", "embedding_optimizer", "distribution_strategy",
              "tuner_oracle")


class ConfigError(ValueError):
  """A config with an unknown key or a bad value; the message says which."""


class _Strict(pydantic.BaseModel):
  """Unknown keys are errors, values are not converted ("5" is no int)."""
  model_config = pydantic.ConfigDict(extra="forbid", strict=True,
                                     validate_default=True)

  @pydantic.model_validator(mode="before")
  @classmethod
  def _plain_values(cls, data: Any) -> Any:
    """numpy scalars (KerasTuner's values) and tuples as plain Python."""
    if isinstance(data, Mapping):
      data = {k: _plain(v) for k, v in data.items()}
      for key in _CASE_FREE:
        if isinstance(data.get(key), str):
          data[key] = data[key].strip().lower()
    return data


def _plain(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if type(value).__module__ == "numpy" and hasattr(value, "item"):
    return value.item()
  return value


# ---------------------------------------------------------------------------
# Transform (transform/preprocessing.py).

class TransformConfig(_Strict):
  """preprocessing_fn's custom_config."""
  num_timestamp_buckets: Positive = 1000
  # Minimum number of training ratings for an id to get its own row.
  min_user_count: Count = 5
  min_movie_count: Count = 2
  min_word_count: Count = 2
  min_zip_prefix_count: Count = 2


# ---------------------------------------------------------------------------
# Trainers.

class _TrainerConfig(_Strict):
  """Keys of both trainers that are not hyperparameters: the pipeline sets
  them, components add them, the Tuner reads them."""
  # Start from the last blessed model of the stage (trainer_modules/warm_start.py).
  warm_start: bool = True
  distribution_strategy: Strategy = "auto"  # see trainer_modules/strategy.py
  # Added by components.catalogue_trainer / catalogue_tuner.
  catalogue_uri: Optional[str] = None
  raw_examples_uri: Optional[str] = None
  # The Tuner's (trainer_modules/tuning.py; None: its defaults).
  tuner_max_trials: Optional[Positive] = None
  tuner_oracle: Optional[Literal["bayesian", "random"]] = None
  # {key: [choices] | {"min", "max", "sampling", "step"} | value | None}
  tuner_search_space: Optional[Dict[str, Any]] = None

  @pydantic.field_validator("tuner_search_space")
  @classmethod
  def _searchable(cls, space):
    if space:
      check_search_space(cls, space)
    return space


class RetrievalConfig(_TrainerConfig):
  """trainer_modules/retrieval.py's config (its docstring has the measurements)."""
  embedding_dim: Positive = 64      # id / bag embedding width in the encoders
  side_dim: Positive = 16           # width of side-feature embeddings
  query_layers: Layers = [128, 64]  # dense layers after the encoder; last = output
  candidate_layers: Layers = [128, 64]
  learning_rate: Rate = 0.005
  optimizer: Optimizer = "adam"
  # Embedding tables: "auto" (sparse Adagrad from optimizers.SPARSE_MIN_ROWS
  # table rows: Adam updates whole tables every step), "adagrad" or "same"
  # (the optimizer above); see trainer_modules/optimizers.py.
  embedding_optimizer: EmbeddingOptimizer = "auto"
  embedding_learning_rate: Optional[Rate] = None  # None: optimizers' default (0.5)
  epochs: Count = 8                 # at lr 0.005; 10 overfit ml-100k
  # epochs × training rows at most this (trainer_modules/budget.py; None or
  # 0: no cap): the 8 epochs above are for small data; from 1M training
  # rows fewer passes.
  max_train_examples: Optional[Count] = 8_000_000
  batch_size: Positive = 2048
  temperature: Rate = 0.2           # softmax temperature (of cosine scores)
  l2: NonNegative = 0.0             # L2 on dense kernels
  normalize: bool = True            # cosine scores (L2-normalised embeddings)
  # Sampling-bias (log-Q) correction by training movie frequency: without it
  # the in-batch softmax demotes popular movies (ml-100k hit@100 excl. seen
  # 0.31 without, 0.55 with).
  logq_correction: bool = True
  remove_accidental_hits: bool = True
  oov_rate: Fraction = 0.05         # fraction of training ids sent to the OOV row
  feature_dropout: Fraction = 0.05  # fraction of user side features set unknown
  use_timestamp: bool = False       # timestamp context in the query tower
  # The user's training history (mean embedding of the rated movies) in
  # the query tower (model_parts.UserHistory), with this dropout.
  history: bool = True
  history_dropout: Dropout = 0.2
  # In training at most ~this many of a user's movies enter the history
  # mean (model_parts.UserHistory; None: all). 500 -> 200 at 10M synthetic
  # ratings: a training step 127 -> 87 ms (100: 76 ms); quality kept at 100
  # on ml-100k (two-stage nDCG@10 0.4539 vs 0.4536, 3 seeds) and 1M
  # (hit@100 excl. seen 0.4885 vs 0.4878, RMSE 0.7857 vs 0.7844).
  history_max_len: Optional[Positive] = 200
  # Negatives: "full" scores every catalogue movie at every step (a true
  # softmax over the catalogue), "in_batch" uses the other movies of the
  # batch (with log-Q correction); "auto" picks full up to
  # full_softmax_max_movies catalogue movies.
  negatives: Negatives = "auto"
  # At 1M synthetic ratings (4.5k movies) in-batch negatives matched the
  # full softmax (hit@100 excluding seen 0.493 vs 0.488) at the same step
  # cost; the full softmax's cost per row grows with the catalogue.
  full_softmax_max_movies: Count = 5_000
  # Full softmax: the user's other training movies are not negatives.
  mask_seen: bool = True
  # A learned per-movie bias as one more embedding dimension (the query
  # gets a constant 1): score = cosine / temperature + bias.
  movie_bias: bool = True
  seed: Count = 42
  top_k: Positive = 100             # K of serving_default
  shuffle_buffer: Positive = 200_000
  # Training records kept in RAM across epochs up to this many rows
  # (~460 B each: 5M ≈ 2.3 GB); above it they are re-read every epoch.
  cache_max_rows: Count = 5_000_000
  verbose: Annotated[int, Field(ge=0, le=2)] = 0  # Keras fit verbosity

  @pydantic.model_validator(mode="after")
  def _same_output_size(self):
    if self.query_layers[-1] != self.candidate_layers[-1]:
      raise ValueError("query_layers and candidate_layers must end with the "
                       f"same output size: {self.query_layers} vs "
                       f"{self.candidate_layers}")
    return self


class RankingConfig(_TrainerConfig):
  """trainer_modules/ranking.py's config (its docstring has the measurements)."""
  architecture: Literal["dense", "dcn"] = "dcn"
  dcn_structure: Literal["stacked", "parallel"] = "stacked"  # cross → deep, or side by side
  num_cross_layers: Count = 1
  cross_projection_dim: Optional[Positive] = None  # low-rank cross layers when set
  layer_sizes: List[Positive] = [256, 64]  # hidden layers of the deep part
  embedding_dim: Positive = 32      # width of id (and bag) embeddings
  side_dim: Positive = 8            # width of side-feature embeddings
  # Timestamp features in the user vector. Off: on a random split the row's
  # own time leaks into the rating (ml-100k RMSE 0.902 with it, but 0.926
  # when served with the user's last training time, vs 0.909 without).
  include_context: bool = False
  use_bias: bool = True             # user and movie bias terms
  optimizer: Optimizer = "adam"
  # Embedding tables: as in RetrievalConfig (trainer_modules/optimizers.py).
  embedding_optimizer: EmbeddingOptimizer = "auto"
  embedding_learning_rate: Optional[Rate] = None  # None: optimizers' default (0.5)
  learning_rate: Rate = 3e-3
  epochs: Count = 5
  # epochs × training rows at most this (trainer_modules/budget.py; None or
  # 0: no cap).
  max_train_examples: Optional[Count] = 4_000_000
  batch_size: Positive = 1024
  l2: NonNegative = 0.03            # on the looked-up user/movie vectors and biases
  kernel_l2: NonNegative = 0.0      # on dense/cross kernels
  dropout: Dropout = 0.2
  oov_rate: Fraction = 0.01         # fraction of training ids sent to OOV
  # Engagement task (what orders the candidates, see ranking.py's docstring):
  # a softmax over every training movie with a user vector (user, context
  # and history) and a movie vector, weighted against the rating task.
  engagement_weight: NonNegative = 1.0
  rating_weight: NonNegative = 0.2
  engagement_layers: Layers = [64]  # dense layers on each side; last = dot size
  # Negatives of the engagement softmax: "full" (every training movie at
  # every step), "in_batch" (the batch's other movies, with log-Q
  # correction and accidental hits removed: cost per row independent of
  # the catalogue) or "auto": full up to engagement_full_max_movies.
  engagement_negatives: Negatives = "auto"
  engagement_full_max_movies: Count = 5_000
  temperature: Rate = 1.0
  history: bool = True              # the user's rated movies in the user vector
  history_dropout: Dropout = 0.2
  # In training at most ~this many of a user's movies enter the history
  # mean (model_parts.UserHistory; None: all). 500 -> 200 at 10M synthetic
  # ratings: a training step 43 -> 32 ms (100: 23 ms); quality kept at 100
  # on ml-100k (two-stage nDCG@10 0.4539 vs 0.4536, 3 seeds) and 1M
  # (hit@100 excl. seen 0.4885 vs 0.4878, RMSE 0.7857 vs 0.7844).
  history_max_len: Optional[Positive] = 200
  # A full movie × movie weight over the user's history in the engagement
  # score (model_parts.ItemItem) for movie vocabularies up to this size
  # (0: off), with this L2. Off by default: on ml-100k it moved two-stage
  # nDCG@10 from 0.406 to 0.408 (within seed noise) for twice the training time.
  item_item_max_movies: Count = 0
  item_item_l2: NonNegative = 0.0
  # EASE's closed-form item-item weights (trainer_modules/ease.py), fitted
  # on the training split's histories and exported as the third serving
  # signal `item_item_scores` (serving.recommender.fuse_ranks), for movie
  # vocabularies up to this size (None or 0: off; the export holds movies²
  # floats, 11 MB at 1,682 movies, 400 MB at 10k). Needs `history`.
  ease_max_movies: Optional[Count] = 10_000
  # ease.DEFAULT_LAMBDA (ease.py imports scipy; tests/test_configs.py checks
  # the two agree).
  ease_lambda: Rate = 500.0
  # What `scores` (the serving order) is: engagement logit
  # + rating_blend × predicted rating (0: engagement alone).
  rating_blend: NonNegative = 0.0
  seed: Count = 42
  # Keras validation on the eval split after every epoch, or (False) after
  # the last one only: on ml-100k the per-epoch passes (and tracing their
  # function) took 10 of fit()'s 52 s, and nothing reads the earlier
  # epochs' values but TensorBoard (the evaluators score the export).
  validate_each_epoch: bool = False

  @pydantic.model_validator(mode="after")
  def _has_a_task(self):
    if not (self.rating_weight > 0 or self.engagement_weight > 0):
      raise ValueError("rating_weight and engagement_weight are both 0: the "
                       "ranking model needs a task")
    return self


MODELS: Dict[str, Type[_Strict]] = {
    "transform": TransformConfig,
    "retrieval": RetrievalConfig,
    "ranking": RankingConfig,
}


# ---------------------------------------------------------------------------
# What callers use.

def _model(kind: str) -> Type[_Strict]:
  if kind not in MODELS:
    raise ConfigError(f"Unknown config kind {kind!r}: one of {', '.join(KINDS)}")
  return MODELS[kind]


def defaults(kind: str) -> Dict[str, Any]:
  """Every key of `kind`'s config with its default value."""
  return _model(kind)().model_dump()


def keys(kind: str) -> List[str]:
  """The keys `kind`'s config accepts, in definition order."""
  return list(_model(kind).model_fields)


def searchable_keys(kind: str) -> List[str]:
  """Keys a Tuner may search: a trainer's hyperparameters (not the keys the
  pipeline, the components and the Tuner itself set)."""
  return _searchable_keys(_model(kind))


def _searchable_keys(model: Type[_Strict]) -> List[str]:
  return [k for k in model.model_fields if k not in _TrainerConfig.model_fields]


def validate(kind: str, mapping: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """`kind`'s whole config: the defaults updated by `mapping`, checked.

  Raises:
    ConfigError: an unknown key, a value of the wrong type or out of range
      (one line per problem, each naming the key and what was expected).
  """
  model = _model(kind)
  if mapping is None:
    mapping = {}
  if not isinstance(mapping, Mapping):
    raise ConfigError(f"{kind} config: expected an object of keys and values, "
                      f"got {type(mapping).__name__}")
  try:
    return model.model_validate(dict(mapping)).model_dump()
  except pydantic.ValidationError as e:
    raise ConfigError(_message(kind, model, e)) from None


def parse_json(kind: str, text: str) -> Dict[str, Any]:
  """A command-line config flag: a JSON object, checked with `validate`.

  Returns the object as given (not filled with defaults), so a pipeline's
  custom_config holds only what was set.
  """
  try:
    value = json.loads(text)
  except (TypeError, ValueError) as e:
    where = (f" (line {e.lineno} column {e.colno})"
             if isinstance(e, json.JSONDecodeError) else "")
    raise ConfigError(f"{kind} config: not valid JSON{where}: {text!r}; expected "
                      "an object such as '{\"epochs\": 3}'") from None
  if not isinstance(value, dict):
    raise ConfigError(f"{kind} config: expected a JSON object such as "
                      f"'{{\"epochs\": 3}}', got {type(value).__name__} {text!r}")
  validate(kind, value)
  return value


def flag_type(kind: str):
  """parse_json as an argparse `type=`: argparse shows our message (it
  replaces a ValueError's by "invalid value")."""
  import argparse  # pylint: disable=g-import-not-at-top

  def parse(text: str) -> Dict[str, Any]:
    try:
      return parse_json(kind, text)
    except ConfigError as e:
      raise argparse.ArgumentTypeError(str(e)) from None
  parse.__name__ = f"{kind} config"
  return parse


def hyperparameter_values(fn_args) -> Dict[str, Any]:
  """The tuned values in fn_args.hyperparameters ({} when there are none).

  TFX's Trainer puts the Tuner's best_hyperparameters file there
  (trainer_modules/tuning.py): a KerasTuner HyperParameters config
  ({"space": [...], "values": {...}}); a plain {key: value} dict (or its
  JSON) is accepted too.
  """
  hp = getattr(fn_args, "hyperparameters", None)
  if not hp:
    return {}
  if isinstance(hp, str):
    hp = json.loads(hp)
  if not isinstance(hp, Mapping):
    raise ConfigError(f"fn_args.hyperparameters must be a HyperParameters "
                      f"config or a dict, got {type(hp).__name__}")
  values = hp["values"] if "values" in hp or "space" in hp else hp
  values = dict(values or {})
  if values:
    logging.info("Applying tuned hyperparameters over custom_config: %s",
                 json.dumps(values, sort_keys=True, default=str))
  return values


def trainer_config(kind: str, fn_args) -> Dict[str, Any]:
  """A trainer run's config: defaults < fn_args.custom_config < the Tuner's
  values (fn_args.hyperparameters), checked."""
  return validate(kind, {**(fn_args.custom_config or {}),
                         **hyperparameter_values(fn_args)})


def check_search_space(model: Type[_Strict], space: Mapping[str, Any],
                       kind: Optional[str] = None) -> None:
  """Every entry of a Tuner search space names a hyperparameter of `model`
  and its choices / bounds / fixed value are valid values of it.

  Raises:
    ValueError (ConfigError when `kind` is given, with it in the message).
  """
  try:
    allowed = _searchable_keys(model)
    for key, spec in space.items():
      if key not in allowed:
        raise ValueError(_unknown(key, allowed))
      if spec is None:  # drops the key from the search
        continue
      if isinstance(spec, Mapping):
        extra = sorted(set(spec) - {"min", "max", "sampling", "step"})
        if extra or not {"min", "max"} <= set(spec):
          raise ValueError(f"{key}: a range needs min and max (and optionally "
                           f"sampling, step), got {dict(spec)}")
        values = [(" min", spec["min"]), (" max", spec["max"])]
      elif isinstance(spec, (list, tuple)):
        if not spec:
          raise ValueError(f"{key}: an empty list of choices")
        values = [(" choice", v) for v in spec]
      else:
        values = [("", spec)]
      for what, value in values:
        try:
          model.model_validate({key: value})
        except pydantic.ValidationError as e:
          # "<key> should be ..." of the key's own error.
          raise ValueError(key + what + _describe(e.errors()[0], model)[len(key):]
                           ) from None
  except ValueError as e:
    if kind is None:
      raise
    raise ConfigError(f"{kind} config: tuner_search_space: {e}") from None


# ---------------------------------------------------------------------------
# Messages.

_MAX_LINES = 5


def _message(kind: str, model: Type[_Strict], error: pydantic.ValidationError) -> str:
  errors = error.errors()
  lines = [f"{kind} config: " + _describe(e, model) for e in errors[:_MAX_LINES]]
  if len(errors) > _MAX_LINES:
    lines.append(f"... and {len(errors) - _MAX_LINES} more")
  return "\n".join(lines)


def _describe(error: Mapping[str, Any], model: Type[_Strict]) -> str:
  """One pydantic error as "key should be ..., got ..."."""
  loc = error.get("loc") or ()
  key = str(loc[0]) if loc else ""
  path = key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
  if error["type"] == "extra_forbidden":
    return _unknown(key, list(model.model_fields))
  msg = str(error.get("msg", ""))
  if error["type"] == "value_error":  # from a validator above: says it all
    msg = msg.split(", ", 1)[1] if msg.startswith("Value error, ") else msg
    return f"{path}: {msg}" if path else msg
  if error["type"] == "literal_error":  # one of a few names
    return f"{path} {error.get('input')!r}: expected {error['ctx']['expected']}"
  if msg.startswith("Input should "):
    return f"{path} {msg[len('Input '):]}, got {error.get('input')!r}"
  return f"{path}: {msg}, got {error.get('input')!r}"


def _unknown(key: str, allowed: Iterable[str]) -> str:
  allowed = sorted(allowed)
  close = difflib.get_close_matches(str(key), allowed, n=1)
  hint = f"; did you mean {close[0]}?" if close else ";"
  return f"{key}: unknown key{hint} allowed: {', '.join(allowed)}"
