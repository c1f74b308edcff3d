"""MovieLensExampleGen: a custom TFX component ingesting rating data.

Outputs two Examples artifacts (GZIP TFRecords of tf.Example in TFX's
``Split-<name>/`` layout):

* ``examples``: splits ``train`` and ``eval``, one example per rating with the
  raw features of `common.features`; custom properties num_examples_train,
  num_examples_eval, num_bad_rows, num_duplicates_dropped (int: older
  ratings of a (user, movie) pair left out, duplicates.py), source,
  source_family, split (str), implicit (int 0/1: 1 when the data has no
  user_rating);
* ``catalogue``: split ``catalogue``, one example per movie of the source
  (movie_id, movie_title, movie_genres), rated or not; custom properties
  num_movies (int), source, source_family (str);
* ``drift_examples`` (only for a ``{SPAN}`` pattern): split ``current``
  (every rating of the newest span) and, when an earlier span exists,
  ``previous`` (the span before it): the input of the drift check
  (components/drift_gate.py); custom properties current_span,
  previous_span, num_examples_current, num_examples_previous.

Every split is written in several shards (``data_tfrecord-SSSSS-of-NNNNN.gz``;
`num_shards`, default: by the number of rows, see ingest.py); ``examples``
records them as num_shards_train and num_shards_eval.

With spans (components/ingestion/spans.py) every artifact's ``span`` is the
newest span read and ``examples`` has the custom property ``spans`` (the
span numbers of the union, e.g. "3,4,5").
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.ingestion import executor
from components.ingestion import ingest
from components.ingestion import sources
from components.ingestion import spans


class MovieLensExampleGenSpec(types.ComponentSpec):
  """Parameters and outputs of MovieLensExampleGen."""

  PARAMETERS = {
      executor.SOURCE_KEY: ExecutionParameter(type=str, optional=True),
      executor.DATA_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
      executor.SPLIT_KEY: ExecutionParameter(type=str, optional=True),
      executor.EVAL_FRACTION_KEY: ExecutionParameter(type=float, optional=True),
      executor.MAX_BAD_ROW_FRACTION_KEY: ExecutionParameter(type=float,
                                                            optional=True),
      # RangeConfig as JSON (as stock ExampleGen's range_config), "" = none.
      executor.RANGE_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
      # Files per split; absent or 0: by the number of rows (ingest.py).
      executor.NUM_SHARDS_KEY: ExecutionParameter(type=int, optional=True),
      # Not read by the executor: it is part of the cache key, so new data
      # under the same path is ingested again instead of served from cache.
      "source_fingerprint": ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      executor.CATALOGUE_KEY: ChannelParameter(
          type=standard_artifacts.Examples),
      # Present only when the source is a {SPAN} pattern.
      executor.DRIFT_EXAMPLES_KEY: ChannelParameter(
          type=standard_artifacts.Examples, optional=True),
  }


def source_fingerprint(source: str, data_config: str = "") -> str:
  """Sizes and modification times of the local files behind a source.

  TFX caches a component by its parameters and inputs. A GroupLens folder
  or a data config path stays the same when its files are replaced, so the
  fingerprint of those files goes into the parameters. With a ``{SPAN}``
  pattern it covers every matching span (their numbers and paths, and the
  files of local ones), so a new span is ingested instead of served from
  the cache, whatever the span window. TFDS names and remote URIs are
  versioned by their own names and return "".
  """
  paths = [p for p in (source, data_config) if p and os.path.exists(p)]
  if data_config and os.path.isfile(data_config):
    paths.append(os.path.dirname(os.path.abspath(data_config)))
  entries = []
  pattern = sources.source_pattern(source, data_config)
  if pattern:
    for span, path in sorted(spans.find_spans(pattern).items()):
      entries.append(f"span {span}: {path}")
      if os.path.exists(path):
        paths.append(path)
  for path in paths:
    if os.path.isfile(path):
      files = [path]
    else:
      files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for f in sorted(files):
      st = os.stat(f)
      entries.append(f"{os.path.abspath(f)}:{st.st_size}:{st.st_mtime_ns}")
  if not entries:
    return ""
  return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


class MovieLensExampleGen(base_component.BaseComponent):
  """Ingests MovieLens (TFDS or GroupLens files) or a user's own log.

  Args:
    source: "tfds:movielens/<config>" (100k-ratings, 1m-ratings, 20m-ratings,
      25m-ratings, latest-small-ratings), or a path to a GroupLens folder or
      .zip (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-latest[-small]), or ""
      when data_config is given.
    data_config: path to a YAML/JSON description of the user's own
      interaction log (see components/ingestion/custom_source.py and
      examples/data_config.example.yaml); "" for source.
    split: "random" (stable hash of user and movie), "time" (global cut at the
      1 - eval_fraction quantile of timestamps) or, for ml-100k folders and
      zips, one of "u1".."u5", "ua", "ub" (train = .base, eval = .test).
    eval_fraction: share of eval ratings for "random" and "time".
    max_bad_row_fraction: rows that cannot be parsed fail the run at the first
      one when 0; otherwise up to this fraction of them is skipped.
    range_config: for a ``{SPAN}`` pattern (``/data/ml/span-{SPAN}``, or in
      the data config's interactions.path), the spans to read: a TFX
      RangeConfig proto, its dict or JSON (``{"rolling_range": {"num_spans":
      3}}``); None reads the newest span. See spans.py.
    num_shards: files per split; 0 (default) grows them with the rows (at
      least 2, about one per million rows), see ingest.py.
  """

  SPEC_CLASS = MovieLensExampleGenSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, source: str = "", data_config: str = "",
               split: str = "random", eval_fraction: float = 0.2,
               max_bad_row_fraction: float = 0.0,
               range_config=None,
               num_shards: int = 0,
               examples: Optional[types.Channel] = None,
               catalogue: Optional[types.Channel] = None):
    uses_spans = bool(sources.source_pattern(source, data_config))
    range_json = spans.range_config_json(range_config)
    if range_json and not uses_spans:
      raise ValueError(
          f"range_config {range_json} needs a {{SPAN}} pattern, but "
          f"{source or data_config!r} has none (e.g. /data/ml/span-{{SPAN}})")
    ingest.check_num_shards(num_shards)
    optional = {}
    if range_json:  # absent otherwise: the cache key of span-less runs stays
      optional[executor.RANGE_CONFIG_KEY] = range_json
    if num_shards:  # absent when 0, as range_config
      optional[executor.NUM_SHARDS_KEY] = num_shards
    if uses_spans:
      optional[executor.DRIFT_EXAMPLES_KEY] = types.Channel(
          type=standard_artifacts.Examples)
    spec = MovieLensExampleGenSpec(
        source=source or "",
        data_config=data_config or "",
        split=split or "random",
        eval_fraction=float(eval_fraction),
        max_bad_row_fraction=float(max_bad_row_fraction),
        source_fingerprint=source_fingerprint(source, data_config),
        examples=examples or types.Channel(type=standard_artifacts.Examples),
        catalogue=catalogue or types.Channel(type=standard_artifacts.Examples),
        **optional)
    super().__init__(spec=spec)

  @property
  def uses_spans(self) -> bool:
    """Whether the source is a {SPAN} pattern (and drift_examples exists)."""
    return executor.DRIFT_EXAMPLES_KEY in self.outputs
