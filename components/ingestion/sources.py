"""Which reader reads a source, and opening it: the top of the readers.

The `source` string of `open_source`:

* ``tfds:movielens/<config>``: the TFDS MovieLens builders
  (tfds_source.py);
* a GroupLens folder or ``.zip`` (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m,
  ml-latest[-small]), its format detected from the files present
  (grouplens.py);
* a user's own interaction log described by a YAML/JSON ``data_config``
  (custom_source.py; its keys are checked by custom_config.py);
* span-numbered deliveries of either: a ``{SPAN}`` pattern such as
  ``/data/ml/span-{SPAN}`` (each match a complete GroupLens folder or zip)
  or ``{SPAN}`` in a data config's interactions path. `open_source` reads
  the spans a RangeConfig selects (spans.py) as one `MultiSpanSource`
  (multi_span.py).

Every reader yields dicts keyed by the raw feature names of
`common.features` (TFDS `movielens/*-ratings` names and encodings), one per
rating, and a catalogue of dicts with movie_id, movie_title and
movie_genres, one per movie of the source whether rated or not.

Layout of components/ingestion, each module importing only modules listed
before it:

* base.py: errors, rows, `Source`, `BadRowTracker`, field parsers;
* files.py: files on any filesystem (tfx fileio), GroupLens folders and
  zips, CSV rows, encoding detection;
* grouplens.py, tfds_source.py, custom_config.py + custom_source.py,
  multi_span.py: one reader family each;
* spans.py: ``{SPAN}`` patterns and range configs, no readers;
* sources.py (this module): the dispatcher;
* duplicates.py: duplicate (user, movie) ratings, found with numpy;
* ingest.py: splits and writes the examples; executor.py, component.py:
  the TFX component.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from components.ingestion import custom_source
from components.ingestion import grouplens
from components.ingestion import spans
from components.ingestion import tfds_source
from components.ingestion.base import BadRowTracker, IngestionError, Source
# Re-exported for a caller of sources.MovieLensCurrent
# (tests/test_synthetic_ml25m.py).
from components.ingestion.grouplens import MovieLensCurrent  # noqa: F401
from components.ingestion.multi_span import MultiSpanSource
from components.ingestion.tfds_source import TFDS_PREFIX

SOURCE_FAMILIES = ("100k", "1m", "current", "custom")


def source_pattern(source: str = "", data_config: str = "") -> str:
  """The ``{SPAN}`` pattern behind a source or data config; "" for none.

  For a data config it is the interactions path (resolved against the
  config's folder), where the span of a custom log lives.
  """
  if spans.has_span(source):
    return source
  if (data_config or "").strip():
    if spans.has_span(data_config):
      raise IngestionError(
          f"data_config {data_config!r}: put {{SPAN}} in interactions.path "
          f"inside the config, not in the config's own path")
    return custom_source.span_pattern(data_config)
  return ""


def _open_one(source: str, data_config: str, tracker: BadRowTracker,
              tfds_data_dir: Optional[str], span: Optional[int] = None
              ) -> Source:
  if data_config:
    return custom_source.CustomSource(data_config, tracker, span=span)
  if source.startswith(TFDS_PREFIX):
    return tfds_source.TfdsSource(source, tracker, tfds_data_dir)
  return grouplens.open_grouplens(source, tracker)


def open_spans(selection: spans.SpanSelection, span_numbers: Sequence[int],
               data_config: str = "",
               tracker: Optional[BadRowTracker] = None) -> Source:
  """One reader over `span_numbers` of a selection (union of ratings)."""
  tracker = tracker or BadRowTracker()
  readers: List[Tuple[int, Source]] = []
  try:
    for span in span_numbers:
      readers.append((span, _open_one(
          "" if data_config else selection.path(span), data_config, tracker,
          None, span)))
  except Exception:
    for _, reader in readers:
      reader.close()
    raise
  names = ", ".join(str(s) for s in span_numbers)
  return MultiSpanSource(readers, f"{selection.pattern} (span {names})",
                         tracker)


def _check_source_args(source: str, data_config: str) -> None:
  if source and data_config:
    raise IngestionError(
        f"Give either source ({source!r}) or data_config ({data_config!r}), "
        f"not both")
  if not source and not data_config:
    raise IngestionError("No data: give source (a 'tfds:movielens/<config>' "
                         "name or a GroupLens folder/.zip) or data_config")
  if source.startswith(TFDS_PREFIX) and spans.has_span(source):
    raise IngestionError(f"{source!r}: TFDS sources have no spans; {{SPAN}} "
                         f"patterns are for GroupLens folders/zips and data "
                         f"configs")


def open_source(source: str = "", data_config: str = "",
                tracker: Optional[BadRowTracker] = None,
                tfds_data_dir: Optional[str] = None,
                range_config=None) -> Source:
  """The reader of `source` (a TFDS name or GroupLens path) or data_config.

  A ``{SPAN}`` pattern (in source or in the data config's interactions
  path) reads the spans `range_config` selects (spans.py) as one source.
  """
  source = (source or "").strip()
  data_config = (data_config or "").strip()
  _check_source_args(source, data_config)
  tracker = tracker or BadRowTracker()
  pattern = source_pattern(source, data_config)
  if pattern:
    selection = spans.resolve(pattern, range_config)
    return open_spans(selection, selection.spans, data_config, tracker)
  if spans.parse_range_config(range_config) is not None:
    raise IngestionError(
        f"range_config is set but {source or data_config} has no {{SPAN}} "
        f"pattern to select spans from")
  return _open_one(source, data_config, tracker, tfds_data_dir)


def detect_source_family(source: str = "", data_config: str = "") -> str:
  """'100k', '1m', 'current' or 'custom', from names and file lists only.

  For a ``{SPAN}`` pattern, the newest span's files tell.
  """
  source = (source or "").strip()
  if (data_config or "").strip():
    return "custom"
  if source.startswith(TFDS_PREFIX):
    return tfds_source.TFDS_CONFIGS[tfds_source.tfds_config(source)]
  if spans.has_span(source):
    found = spans.find_spans(source)
    source = found[max(found)]
  return grouplens.family_of(source)
