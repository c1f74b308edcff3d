"""Command-line flags of the runners, declared once.

Span and tuning flags are shared by both runners, so local and Kubeflow runs
agree; the scheduling / retention / rollback flags are the local runner's.
The runners pass the parsed values to create_pipeline() (pipeline/pipeline.py)
or to runners/local.py.
"""
import argparse
import json
from typing import Optional, Tuple

from common import versions
from runners import retention
from runners import schedule as schedule_lib

TICK_FLAG = "--scheduled-tick"  # a scheduler's child process: one run, no loop


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


def add_tune_flags(parser: argparse.ArgumentParser) -> None:
  """--tune, --tune-trials (a Tuner before each Trainer; off by default)."""
  group = parser.add_argument_group(
      "hyperparameter tuning", "a KerasTuner search per stage before its "
      "Trainer (trainer_modules/tuning.py); each trial is one full training")
  group.add_argument("--tune", action="store_true",
                     help="tune both trainers; they train with the best values")
  group.add_argument("--tune-trials", type=_positive, default=None, metavar="N",
                     help="trials per stage (default: DEFAULT_MAX_TRIALS in "
                          "trainer_modules/tuning.py, sized for 2 cores)")


def _cron(text: str) -> schedule_lib.CronSchedule:
  try:
    return schedule_lib.CronSchedule(text)
  except schedule_lib.ScheduleError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _every(text: str) -> float:
  try:
    return schedule_lib.parse_every(text)
  except schedule_lib.ScheduleError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
  if not text.strip().isdigit():
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
  return int(text)


def _positive(text: str) -> int:
  n = _count(text)
  if n < 1:
    raise argparse.ArgumentTypeError("expected a whole number >= 1")
  return n


def _rollback_spec(text: str) -> Tuple[str, Optional[int]]:
  model, _, version = text.partition("=")
  if model not in versions.MODELS:
    raise argparse.ArgumentTypeError(
        f"{text!r}: MODEL must be one of {', '.join(versions.MODELS)}, "
        "optionally =VERSION (e.g. ranking=1732000000)")
  if version and not version.isdigit():
    raise argparse.ArgumentTypeError(f"{text!r}: VERSION must be an integer")
  return model, int(version) if version else None


def add_operations_flags(p: argparse.ArgumentParser) -> None:
  """Scheduling / retention / rollback flags, one group each."""
  g = p.add_argument_group(
      "scheduled runs", "run in the foreground on a schedule, one run at a "
      "time (a tick during a run is skipped; a failed run is reported and the "
      "scheduler goes on; Ctrl-C stops between runs)")
  when = g.add_mutually_exclusive_group()
  when.add_argument("--schedule", type=_cron, metavar="CRON",
                    help='standard 5-field cron in local time, e.g. "0 3 * * *" '
                         "(03:00 daily)")
  when.add_argument("--every", type=_every, metavar="INTERVAL",
                    help="fixed interval with unit s/m/h/d, e.g. 30m, 24h, 1d; "
                         "the first run starts at once")
  g.add_argument("--max-runs", type=_positive, default=None, help=argparse.SUPPRESS)
  g.add_argument(TICK_FLAG, action="store_true", help=argparse.SUPPRESS)
  r = p.add_argument_group(
      "retention", "applied after each successful run; 0 keeps everything")
  r.add_argument("--keep-versions", type=_count,
                 default=retention.DEFAULT_KEEP_VERSIONS, metavar="N",
                 help="pushed versions kept per model (never deleted: the "
                      "served one, versions listed in serving/<model>/KEEP, "
                      "incomplete ones)")
  r.add_argument("--keep-runs", type=_count, default=retention.DEFAULT_KEEP_RUNS,
                 metavar="N",
                 help="pipeline runs whose artifacts and logs are kept (older "
                      "ones are deleted and marked DELETED in ML Metadata, "
                      "except the latest blessed models and what they need)")
  b = p.add_argument_group("rollback", "no pipeline run: only this, then exit")
  b.add_argument("--rollback", type=_rollback_spec, metavar="MODEL[=VERSION]",
                 help="serve an older pushed version again without retraining "
                      "(MODEL: retrieval|ranking; VERSION default: the "
                      "previously served one): copies it to a new, highest "
                      "version that serving picks up")
