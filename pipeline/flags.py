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


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def add_tune_flags(parser: argparse.ArgumentParser) -> None:
  """--tune, --tune-trials (a Tuner before each Trainer; off by default)."""
  group = parser.add_argument_group(
      "hyperparameter tuning", "a KerasTuner search per stage before its "
      "Trainer (trainer_modules/tuning.py); each trial is one full training")
  group.add_argument("--tune", action="store_true",
                     help="tune both trainers; they train with the best values")
  group.add_argument("--tune-trials", type=_positive_int, default=None, metavar="N",
                     help="trials per stage (default: DEFAULT_MAX_TRIALS in "
                          "trainer_modules/tuning.py, sized for 2 cores)")
