"""Command-line flags both runners share, so local and Kubeflow runs agree.

Only flag declarations live here; the runners pass the parsed values to
create_pipeline() (pipeline/pipeline.py).
"""
import argparse
import json


def add_span_flags(parser: argparse.ArgumentParser) -> None:
  """--rolling-spans, --range-config, --drift-thresholds (span data)."""
  group = parser.add_argument_group(
      "span data", "--data (or the data config's interactions path) with "
      "TFX's {SPAN} placeholder, e.g. /data/ml/span-{SPAN}: the newest span "
      "by default, checked for drift against the span before it")
  group.add_argument("--rolling-spans", type=int, default=None, metavar="N",
                     help="train on the last N spans")
  group.add_argument("--range-config", type=json.loads, default=None,
                     help="a TFX RangeConfig as JSON, e.g. '{\"static_range\": "
                          "{\"start_span_number\": 2, \"end_span_number\": 4}}'")
  group.add_argument("--drift-thresholds", type=json.loads, default=None,
                     help="JSON {feature: threshold or null} over "
                          "pipeline/configs.py DRIFT_THRESHOLDS")
