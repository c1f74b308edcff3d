"""Runs the pipeline locally: LocalDagRunner, SQLite MLMD, Beam DirectRunner.

    python local_runner.py --data ../shared/datasets/ml-100k --output-dir tfx_output

Output layout (DIR = --output-dir, default ./tfx_output):
  DIR/tfx/          pipeline root: every component's artifacts
  DIR/metadata.db   ML Metadata (SQLite): lineage, cache
  DIR/logs/         full TF / Beam / TFX logs of each run
  DIR/serving/      pushed models: retrieval/<version>/, ranking/<version>/

The console shows one line per component start and end with elapsed time and
a summary table; everything else goes to the log file.

Scheduled retraining, retention and rollback (pipeline/schedule.py,
pipeline/retention.py):

    python local_runner.py --data ... --schedule "0 3 * * *"   # or --every 24h
    python local_runner.py --keep-versions 5 --keep-runs 10     # the defaults
    python local_runner.py --rollback ranking                   # or ranking=VERSION

One run per output directory at a time (a lock file in it): a second runner
exits with code 75 (EX_TEMPFAIL), a scheduler skips that tick.
"""
import common  # noqa: F401  pylint: disable=unused-import  (first: sets TF_USE_LEGACY_KERAS)

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
from typing import List, Optional, Tuple

from pipeline import configs
from pipeline import flags
from pipeline import retention
from pipeline import schedule as schedule_lib

EXIT_LOCKED = schedule_lib.EXIT_LOCKED
TICK_FLAG = "--scheduled-tick"  # a scheduler's child process: one run, no loop


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      description="Run the two-stage MovieLens recommender pipeline locally.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--data", default=configs.DEFAULT_DATA,
                 help="tfds:movielens/<config>, or a GroupLens folder/zip "
                      "(e.g. ../shared/datasets/ml-100k) for offline use")
  p.add_argument("--data-config", default="",
                 help="YAML file describing your own interaction data "
                      "(see examples/data_config.example.yaml); replaces --data")
  p.add_argument("--split", default=configs.DEFAULT_SPLIT,
                 help="random | time | u1..u5 | ua | ub (GroupLens ml-100k folds)")
  p.add_argument("--eval-fraction", type=float, default=configs.EVAL_FRACTION)
  p.add_argument("--max-bad-row-fraction", type=float,
                 default=configs.MAX_BAD_ROW_FRACTION,
                 help="skip (and count) up to this fraction of unparsable rows")
  flags.add_span_flags(p)
  flags.add_tune_flags(p)
  p.add_argument("--output-dir", default=configs.DEFAULT_OUTPUT_DIR)
  p.add_argument("--beam-args", default="",
                 help="extra Beam pipeline args, e.g. "
                      "'--direct_running_mode=multi_processing --direct_num_workers=2'")
  p.add_argument("--force", action="store_true",
                 help="ignore the TFX cache and run every component")
  p.add_argument("--retrieval-epochs", type=int, default=None)
  p.add_argument("--ranking-epochs", type=int, default=None)
  p.add_argument("--retrieval-config", type=json.loads, default={},
                 help='JSON object of retrieval hyperparameters, e.g. '
                      '\'{"embedding_dim": 32, "learning_rate": 0.02}\'')
  p.add_argument("--ranking-config", type=json.loads, default={},
                 help='JSON object of ranking hyperparameters, e.g. '
                      '\'{"architecture": "dense", "batch_size": 512}\'')
  p.add_argument("--distribution-strategy", default=None,
                 choices=("auto", "mirrored", "multi_worker_mirrored",
                          "one_device"),
                 help="tf.distribute strategy of both trainers (default: "
                      "their configs', auto)")
  p.add_argument("--no-retrieval", action="store_true", help="skip the retrieval branch")
  p.add_argument("--no-ranking", action="store_true", help="skip the ranking branch")
  p.add_argument("--no-batch-recommendations", action="store_true",
                 help="skip the BatchRecommender (top-k of every user after a push)")
  p.add_argument("--batch-recommendations-k", type=int, default=50,
                 help="recommendations per user of the BatchRecommender")
  p.add_argument("--verbose", action="store_true", help="also print full logs")
  p.add_argument("--report-only", action="store_true",
                 help="rebuild DIR/reports/latest.html (the newest run's HTML "
                      "report) from ML Metadata without running anything")
  _add_operations_args(p)
  args = p.parse_args(argv)
  if args.rollback and (args.schedule or args.every):
    p.error("--rollback cannot be combined with --schedule / --every")
  if args.max_runs is not None and not (args.schedule or args.every):
    p.error("--max-runs only applies with --schedule or --every")
  return args


# -- scheduling, retention, rollback flags -----------------------------------

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
  if model not in retention.MODELS:
    raise argparse.ArgumentTypeError(
        f"{text!r}: MODEL must be one of {', '.join(retention.MODELS)}, "
        "optionally =VERSION (e.g. ranking=1732000000)")
  if version and not version.isdigit():
    raise argparse.ArgumentTypeError(f"{text!r}: VERSION must be an integer")
  return model, int(version) if version else None


def _add_operations_args(p: argparse.ArgumentParser) -> None:
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


def beam_args(extra: str) -> List[str]:
  """Default Beam args, with same-named flags replaced by the user's."""
  return configs.merged_beam_args(extra)


def _local_abspath(data: str) -> str:
  """Local paths and {SPAN} patterns made absolute; URIs and tfds: as given."""
  if "://" in data or data.startswith("tfds:"):
    return data
  if os.path.exists(data) or "{SPAN" in data:
    return os.path.abspath(data)
  return data


class Progress:
  """One console line per component start and end, with elapsed time."""

  def __init__(self, stream=None):
    self.stream = stream  # None: whatever sys.stdout is when a line is printed
    self.current = None
    self.started_at = 0.0
    self.finished = []  # (node id, seconds, cached)

  def start(self, node_id: str):
    self.current, self.started_at = node_id, time.time()
    self._print(f"▶ {node_id} ...")

  def end(self, node_id: str, cached: bool):
    took = time.time() - self.started_at
    self.finished.append((node_id, took, cached))
    self._print(f"✔ {node_id} done in {took:.1f}s" + (" (cached)" if cached else ""))
    self.current = None

  def _print(self, line):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {line}", file=self.stream or sys.stdout, flush=True)


@contextlib.contextmanager
def reporting_launcher(progress: Progress):
  """Makes LocalDagRunner report each component's start and end to `progress`.

  LocalDagRunner launches components one at a time through
  tfx.orchestration.portable.launcher.Launcher; a subclass reports around
  launch() and reads from MLMD whether the execution was served from cache.
  (Its own "Component X is running" log lines are not reliable for this:
  libraries loaded by components lower absl's log level mid-run.)
  """
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local import local_dag_runner  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import launcher as tfx_launcher  # pylint: disable=g-import-not-at-top

  class ReportingLauncher(tfx_launcher.Launcher):

    def launch(self):
      node_id = self._pipeline_node.node_info.id
      progress.start(node_id)
      info = super().launch()
      cached = False
      if info is not None:
        with self._mlmd_connection as m:
          [execution] = m.store.get_executions_by_id([info.execution_id])
          cached = (execution.last_known_state ==
                    metadata_store_pb2.Execution.CACHED)
      progress.end(node_id, cached)
      return info

  original = local_dag_runner.launcher
  local_dag_runner.launcher = types.SimpleNamespace(Launcher=ReportingLauncher)
  try:
    yield
  finally:
    local_dag_runner.launcher = original


_run_log_handler: Optional[logging.FileHandler] = None


def setup_logging(log_dir: str, verbose: bool):
  """Full logs to a file, progress lines to the console."""
  os.makedirs(log_dir, exist_ok=True)
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  log_path = os.path.join(log_dir, f"run-{stamp}.log")
  root = logging.getLogger()
  global _run_log_handler
  if _run_log_handler is not None:
    _run_log_handler.close()  # the previous run's log (several runs, one process)
  root.handlers.clear()
  root.setLevel(logging.INFO)
  file_handler = _run_log_handler = logging.FileHandler(log_path)
  file_handler.setFormatter(logging.Formatter(
      "%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root.addHandler(file_handler)
  if verbose:
    root.addHandler(logging.StreamHandler(sys.stderr))
  logging.captureWarnings(True)
  # absl and TensorFlow install their own stderr handlers; route them here.
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.use_python_logging(quiet=True)
  for name in ("absl", "tensorflow", "apache_beam"):
    lg = logging.getLogger(name)
    lg.handlers.clear()
    lg.propagate = True
  return log_path


def run_pipeline(args: argparse.Namespace, paths: dict) -> int:
  """One pipeline run (the pipeline is created afresh: new data and spans
  are fingerprinted again); 0 on success, 1 on failure."""
  log_path = setup_logging(paths["log_dir"], args.verbose)
  progress = Progress()
  beam = beam_args(args.beam_args)
  print(f"Pipeline {configs.PIPELINE_NAME}: data={args.data_config or args.data} "
        f"split={args.split} output={paths['output_dir']}")
  print(f"Beam: {' '.join(beam)}")
  print(f"Full logs: {log_path}")

  retrieval_config, ranking_config = dict(args.retrieval_config), dict(args.ranking_config)
  if args.retrieval_epochs is not None:
    retrieval_config["epochs"] = args.retrieval_epochs
  if args.ranking_epochs is not None:
    ranking_config["epochs"] = args.ranking_epochs
  if args.distribution_strategy:
    for config in (retrieval_config, ranking_config):
      config["distribution_strategy"] = args.distribution_strategy

  t0 = time.time()
  try:
    # Imported here: the TFX stack takes ~20 s to import; flags answer fast.
    from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
    from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    from pipeline import run_report  # pylint: disable=g-import-not-at-top

    from common import filesystems  # pylint: disable=g-import-not-at-top
    for uri in (args.data, args.data_config):  # s3:// needs tensorflow-io
      filesystems.ensure_scheme(uri)
    if not args.no_ranking and pipeline_lib.is_implicit(args.data_config):
      print(pipeline_lib.IMPLICIT_NOTE)
    p = pipeline_lib.create_pipeline(
        pipeline_name=configs.PIPELINE_NAME,
        pipeline_root=paths["pipeline_root"],
        data=("" if args.data_config else _local_abspath(args.data)),
        data_config=os.path.abspath(args.data_config) if args.data_config else "",
        split=args.split,
        eval_fraction=args.eval_fraction,
        max_bad_row_fraction=args.max_bad_row_fraction,
        serving_dir=paths["serving_dir"],
        retrieval_config=retrieval_config,
        ranking_config=ranking_config,
        enable_retrieval=not args.no_retrieval,
        enable_ranking=not args.no_ranking,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            paths["metadata_path"]),
        beam_pipeline_args=beam,
        enable_cache=not args.force,
        range_config=args.range_config,
        rolling_spans=args.rolling_spans,
        drift_thresholds=args.drift_thresholds,
        tune=args.tune, tune_trials=args.tune_trials,
        batch_recommendations=not args.no_batch_recommendations,
        batch_recommendations_k=args.batch_recommendations_k,
    )
    with reporting_launcher(progress):
      LocalDagRunner().run(p)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("Pipeline failed")
    where = f" in component {progress.current}" if progress.current else ""
    print(f"\n✘ Pipeline FAILED{where} after {time.time() - t0:.0f}s:", file=sys.stderr)
    print(f"  {type(e).__name__}: {e}", file=sys.stderr)
    print(f"  Full log: {log_path}", file=sys.stderr)
    from runners import report  # pylint: disable=g-import-not-at-top
    report_path = report.write_for_runner(paths["output_dir"], progress.current, e, t0, log_path)
    if report_path:
      print(f"  Run report: {report_path}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    logging.warning("Interrupted")
    where = f" in component {progress.current}" if progress.current else ""
    print(f"\n✘ Pipeline interrupted{where} after {time.time() - t0:.0f}s.",
          file=sys.stderr)
    return 130

  print(f"\nPipeline finished in {time.time() - t0:.0f}s.\n")
  from runners import report  # pylint: disable=g-import-not-at-top
  report_path = report.write_for_runner(paths["output_dir"], started_at=t0, log_path=log_path)
  print(run_report.summarize(paths["metadata_path"], configs.PIPELINE_NAME,
                             paths["serving_dir"], report_path=report_path))
  return 0


def apply_retention(args: argparse.Namespace, paths: dict) -> None:
  """--keep-versions / --keep-runs after a successful run.

  A retention problem is reported but does not fail the run: the models are
  pushed already, and the next run retries.
  """
  if not args.keep_versions and not args.keep_runs:
    return
  try:
    deleted = retention.prune_versions(paths["serving_dir"], args.keep_versions)
    runs = retention.prune_runs(paths["metadata_path"], paths["pipeline_root"],
                                configs.PIPELINE_NAME, args.keep_runs)
    deleted += runs.deleted
    deleted += retention.prune_logs(paths["log_dir"], args.keep_runs)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("Retention failed")
    print(f"⚠ Retention failed (nothing else is affected): "
          f"{type(e).__name__}: {e}", file=sys.stderr)
    return
  head = (f"Retention (keep {args.keep_versions or 'all'} versions, "
          f"{args.keep_runs or 'all'} runs)")
  if runs.protected_blessed:
    head += "; kept latest blessed: " + ", ".join(runs.protected_blessed)
  if not deleted:
    print(f"{head}: nothing to delete.")
    return
  print(f"{head}:")
  freed = retention.report(deleted)
  print(f"  freed {retention.human_bytes(freed)} "
        f"({len(deleted)} item(s); {len(runs.pruned_runs)} run(s) older than "
        f"the newest {args.keep_runs})")


def locked_run(args: argparse.Namespace, paths: dict) -> int:
  """run_pipeline + retention under the output directory's lock."""
  try:
    lock = schedule_lib.OutputDirLock(paths["output_dir"]).acquire()
  except schedule_lib.LockBusy as e:
    print(f"✘ Not started: {e}.\n  One run per output directory at a time; "
          "try again when it has finished.", file=sys.stderr)
    return EXIT_LOCKED
  try:
    code = run_pipeline(args, paths)
    if code == 0:
      apply_retention(args, paths)
    return code
  finally:
    lock.release()


def _say(line: str) -> None:
  stamp = datetime.datetime.now().strftime("%H:%M:%S")
  print(f"[{stamp}] {line}", flush=True)


def _tick_command(argv: List[str]) -> List[str]:
  return [sys.executable, os.path.abspath(__file__)] + list(argv) + [TICK_FLAG]


def _run_child(cmd: List[str]) -> int:
  """One scheduled run in a child process.

  A child per run keeps the scheduler alive through anything a run can do
  (a crash, an OOM kill, TF/Keras state or memory that grows run after
  run) and picks up changed code. It runs in its own session, so Ctrl-C in
  the terminal reaches only the scheduler, which lets the run finish; a
  second Ctrl-C is passed on to abort it.
  """
  proc = subprocess.Popen(cmd, start_new_session=True)
  try:
    return proc.wait()
  except KeyboardInterrupt:
    proc.send_signal(signal.SIGINT)
    try:
      proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    raise


def run_schedule(args: argparse.Namespace, paths: dict, argv: List[str],
                 run_once=None) -> int:
  """--schedule / --every: the foreground scheduler loop."""
  try:
    owner = schedule_lib.OutputDirLock(
        paths["output_dir"], schedule_lib.SCHEDULER_LOCK_FILE,
        what="scheduler").acquire()
  except schedule_lib.LockBusy as e:
    print(f"✘ Not started: {e}.\n  One scheduler per output directory.",
          file=sys.stderr)
    return EXIT_LOCKED
  if args.schedule:
    when, first_now = args.schedule, False
  else:
    when, first_now = schedule_lib.IntervalSchedule(args.every, time.time()), True
  print(f"Scheduler: {when}, output {paths['output_dir']}. One run at a time "
        "(ticks during a run are skipped); Ctrl-C stops between runs.", flush=True)
  cmd = _tick_command(argv)
  stop = schedule_lib.StopRequest(_say).install()
  try:
    return schedule_lib.run_scheduled(
        when, run_once or (lambda: _run_child(cmd)), say=_say,
        max_runs=args.max_runs, stop=stop, run_first_now=first_now)
  finally:
    stop.uninstall()
    owner.release()


def run_rollback(args: argparse.Namespace, paths: dict) -> int:
  """--rollback MODEL[=VERSION]."""
  model, version = args.rollback
  if not os.path.isdir(paths["serving_dir"]):
    print(f"✘ Rollback failed: no pushed models under {paths['serving_dir']}",
          file=sys.stderr)
    return 1
  try:
    with schedule_lib.OutputDirLock(paths["output_dir"]):
      done = retention.rollback(paths["serving_dir"], model, version)
  except schedule_lib.LockBusy as e:
    print(f"✘ Not rolled back: {e}.\n  A run may be pushing right now; try "
          "again when it has finished.", file=sys.stderr)
    return EXIT_LOCKED
  except retention.RetentionError as e:
    print(f"✘ Rollback failed: {e}", file=sys.stderr)
    return 1
  print(f"Rolled back {model}: version {done['new_version']} is a copy of "
        f"version {done['source_version']} (replaces {done['replaced_version']}; "
        f"{retention.ROLLBACK_FILE} records it).")
  for m in retention.MODELS:
    complete, _ = retention.version_dirs(os.path.join(paths["serving_dir"], m))
    if complete:
      print(f"  now served: {m} version {complete[-1]}  "
            f"({os.path.join(paths['serving_dir'], m, str(complete[-1]))})")
  return 0


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  paths = configs.output_paths(args.output_dir)
  if args.rollback:
    return run_rollback(args, paths)
  if args.report_only:
    from runners import report  # pylint: disable=g-import-not-at-top
    return report.report_only(paths["output_dir"])
  if (args.schedule or args.every) and not args.scheduled_tick:
    return run_schedule(args, paths, argv)
  try:
    return locked_run(args, paths)
  except KeyboardInterrupt:
    print("\n✘ Interrupted.", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
