"""Span-numbered inputs: TFX's ``{SPAN}`` pattern convention and RangeConfig.

Pure span matching: patterns, the spans that exist and the ones a range
config selects. It reads no data and imports no reader (the dispatcher,
sources.py, opens the selected spans; custom_source.py fills ``{SPAN}`` in a
data config's paths). TFX's example_gen utilities pull in Apache Beam
(seconds to import), so they are imported where a pattern is matched.

Scheduled retraining adds data as numbered *spans* (TFX's name for one
delivery of data): ``/data/ml/span-1``, ``/data/ml/span-2``, ... each a
complete GroupLens folder (or zip), or, with a data config, an interactions
file per span (``interactions.path: events/span-{SPAN}.csv``). The source
string (or the interactions path) carries the ``{SPAN}`` placeholder, or
``{SPAN:3}`` for a zero-padded width, exactly as stock ExampleGen's
input patterns do; matching reuses ExampleGen's own glob/regex construction
(tfx/components/example_gen/utils.py), so a pattern means the same thing here
as in a stock FileBasedExampleGen.

Which spans are read is a TFX RangeConfig (tfx.proto.range_config_pb2), with
the semantics of TFX's SpanRangeStrategy:

* none (default): the newest span only;
* ``rolling_range {num_spans: N}``: the spans numbered newest-N+1 .. newest
  (and >= start_span_number); span *numbers*, so a gap in the numbering
  makes the window hold fewer spans;
* ``static_range {start_span_number: a, end_span_number: b}``: the spans
  a..b that exist.

The "previous" span (the baseline of the drift check) is the largest existing
span number below the newest selected one, whether or not it is in the
window: drift is about the new delivery against the one before it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional

from google.protobuf import json_format
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.utils import proto_utils

from components.ingestion.base import IngestionError

SPAN_SPEC = "{SPAN"  # prefix of {SPAN} and {SPAN:<width>}


def has_span(pattern: str) -> bool:
  """Whether a path or source string uses the ``{SPAN}`` placeholder."""
  return bool(pattern) and SPAN_SPEC in pattern


def parse_range_config(value) -> Optional[range_config_pb2.RangeConfig]:
  """A RangeConfig from a proto, a dict or its JSON text; None when empty.

  JSON uses the proto field names, as stock ExampleGen's range_config does:
  ``{"rolling_range": {"num_spans": 3}}`` or
  ``{"static_range": {"start_span_number": 2, "end_span_number": 4}}``.
  """
  if value is None or value == "" or value == {}:
    return None
  if isinstance(value, range_config_pb2.RangeConfig):
    config = value
  else:
    text = value if isinstance(value, str) else json.dumps(value)
    config = range_config_pb2.RangeConfig()
    try:
      json_format.Parse(text, config)
    except json_format.ParseError as e:
      raise IngestionError(
          f"range_config {text!r} is not a RangeConfig (expected e.g. "
          f'{{"rolling_range": {{"num_spans": 3}}}} or {{"static_range": '
          f'{{"start_span_number": 1, "end_span_number": 2}}}}): {e}') from None
  which = config.WhichOneof("range")
  if which is None:
    return None
  if which == "rolling_range" and config.rolling_range.num_spans <= 0:
    raise IngestionError(f"range_config rolling_range.num_spans must be "
                         f">= 1, got {config.rolling_range.num_spans}")
  if which == "static_range" and (config.static_range.end_span_number <
                                  config.static_range.start_span_number):
    raise IngestionError(
        f"range_config static_range: end_span_number "
        f"{config.static_range.end_span_number} is below start_span_number "
        f"{config.static_range.start_span_number}")
  return config


def range_config_json(value) -> str:
  """Canonical JSON of a range config ("" for none): a stable cache key."""
  config = parse_range_config(value)
  if config is None:
    return ""
  return json.dumps(json.loads(proto_utils.proto_to_json(config)),
                    sort_keys=True, separators=(",", ":"))


def describe_range(config) -> str:
  config = parse_range_config(config)
  if config is None:
    return "the newest span"
  if config.HasField("rolling_range"):
    r = config.rolling_range
    text = f"rolling window of {r.num_spans} span(s)"
    return text + (f" from span {r.start_span_number}"
                   if r.start_span_number else "")
  r = config.static_range
  return f"spans {r.start_span_number}..{r.end_span_number}"


def fill(pattern: str, span: int) -> str:
  """The pattern with its ``{SPAN}`` filled in (zero-padded to its width)."""
  from tfx.components.example_gen import utils  # pylint: disable=g-import-not-at-top  (Beam)
  try:
    return utils.get_pattern_for_span_version(pattern, True, False, False,
                                              span, None)
  except ValueError as e:
    raise IngestionError(f"span pattern {pattern!r}: {e}") from None


def find_spans(pattern: str) -> Dict[int, str]:
  """Every span number matching `pattern` -> its path (file, folder or zip).

  Raises IngestionError when the pattern is malformed, nothing matches (the
  message shows the pattern and the folder searched), a match carries no
  integer span, or two paths have the same span number (``span-1`` and
  ``span-01``).
  """
  from tfx.components.example_gen import utils  # pylint: disable=g-import-not-at-top  (Beam)
  split = example_gen_pb2.Input.Split(name="data", pattern=pattern)
  try:
    is_span, is_date, is_version = utils.verify_split_pattern_specs(split)
  except ValueError as e:
    raise IngestionError(f"span pattern {pattern!r}: {e}") from None
  if not is_span or is_date or is_version:
    raise IngestionError(
        f"span pattern {pattern!r} must hold exactly one {{SPAN}} (or "
        f"{{SPAN:<width>}}) and no {{VERSION}} or date specs")
  # ExampleGen's own glob and capture regex for one split pattern.
  try:
    glob, regex = utils._create_matching_glob_and_regex(  # pylint: disable=protected-access
        uri="", split=split, is_match_span=True, is_match_date=False,
        is_match_version=False, range_config=None)
  except ValueError as e:
    raise IngestionError(f"span pattern {pattern!r}: {e}") from None
  folder = os.path.dirname(pattern.split(SPAN_SPEC, 1)[0]) or "."
  try:
    matches = fileio.glob(glob)
  except Exception:  # pylint: disable=broad-except  (a missing remote folder)
    matches = []
  found: Dict[int, str] = {}
  for path in sorted(matches):
    path = path.rstrip("/")
    result = re.search(regex, path)
    if result is None:
      continue  # the glob is wider than a {SPAN:<width>} (ml-7 for width 3)
    token = result.group("span")
    if not token.isdigit():
      raise IngestionError(
          f"{path} matches the span pattern {pattern!r} but {token!r} is not "
          f"a span number (expected digits where {{SPAN}} is); rename or move "
          f"it out of {folder}")
    span = int(token)
    if span in found:
      raise IngestionError(
          f"span {span} matches twice for pattern {pattern!r}: {found[span]} "
          f"and {path}; keep one")
    found[span] = path
  if not found:
    raise IngestionError(
        f"No span matches the pattern {pattern!r}: nothing in {folder} "
        f"matches {os.path.basename(glob)!r}. Span inputs are numbered "
        f"folders/files such as {fill(pattern, 1)!r}")
  return found


def select_spans(available: List[int], range_config=None) -> List[int]:
  """The span numbers `range_config` selects from `available`, ascending."""
  config = parse_range_config(range_config)
  spans = sorted(set(available))
  if not spans:
    raise IngestionError("No spans to select from")
  newest = spans[-1]
  if config is None:
    selected = [newest]
  elif config.HasField("rolling_range"):
    r = config.rolling_range
    start = max(r.start_span_number, newest - r.num_spans + 1)
    selected = [s for s in spans if start <= s <= newest]
  else:
    r = config.static_range
    selected = [s for s in spans
                if r.start_span_number <= s <= r.end_span_number]
  if not selected:
    raise IngestionError(
        f"{describe_range(config)} selects none of the existing spans "
        f"{spans}")
  return selected


@dataclasses.dataclass
class SpanSelection:
  """The spans one ingestion reads.

  Attributes:
    pattern: the ``{SPAN}`` pattern.
    available: every matching span -> its path.
    spans: the selected span numbers, ascending.
    newest: the newest selected span (the examples' `span`).
    previous: the largest existing span below `newest` (the drift
      baseline), None when `newest` is the first span.
  """
  pattern: str
  available: Dict[int, str]
  spans: List[int]
  newest: int
  previous: Optional[int]

  def path(self, span: int) -> str:
    return self.available[span]


def resolve(pattern: str, range_config=None) -> SpanSelection:
  """Matches `pattern` and applies `range_config` (see the module docstring)."""
  available = find_spans(pattern)
  spans = select_spans(list(available), range_config)
  newest = spans[-1]
  earlier = [s for s in available if s < newest]
  return SpanSelection(pattern=pattern, available=available, spans=spans,
                       newest=newest, previous=max(earlier) if earlier else None)
