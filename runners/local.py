"""What the local runner does around a pipeline run.

local_runner.py parses the flags and dispatches here:

* `locked_run`: one run under the output directory's lock (runners/schedule.py
  OutputDirLock), then retention (runners/retention.py);
* `run_schedule`: the foreground scheduler (--schedule / --every), one child
  process per run;
* `run_rollback`: serve an older pushed version again (--rollback).

A run builds the pipeline afresh (pipeline/pipeline.py create_pipeline),
runs it with TFX's LocalDagRunner, reports progress (runners/progress.py),
writes the HTML report (runners/report.py) and prints the summary
(runners/run_report.py).
"""
import argparse
import datetime
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from common import versions
from pipeline import configs
from runners import flags
from runners import progress as progress_lib
from runners import retention
from runners import schedule as schedule_lib
from trainer_modules import configs as trainer_configs

EXIT_LOCKED = schedule_lib.EXIT_LOCKED


def local_abspath(data: str) -> str:
  """Local paths and {SPAN} patterns made absolute; URIs and tfds: as given."""
  if "://" in data or data.startswith("tfds:"):
    return data
  if os.path.exists(data) or "{SPAN" in data:
    return os.path.abspath(data)
  return data


def output_dir_problem(output_dir: str) -> Optional[str]:
  """Why a run cannot write to output_dir (None when it can): checked before
  anything starts, so a read-only or mistyped path is one line, not a
  traceback from deep inside a component."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
      pass
  except OSError as e:
    return f"cannot write to the output directory {output_dir}: {e.strerror or e}"
  return None


def trainer_settings(args: argparse.Namespace):
  """(retrieval config, ranking config): the JSON flags with --*-epochs and
  --distribution-strategy applied, each checked (trainer_configs.ConfigError
  naming the key and what was expected)."""
  retrieval_config, ranking_config = dict(args.retrieval_config), dict(args.ranking_config)
  if args.retrieval_epochs is not None:
    retrieval_config["epochs"] = args.retrieval_epochs
  if args.ranking_epochs is not None:
    ranking_config["epochs"] = args.ranking_epochs
  if args.distribution_strategy:
    for config in (retrieval_config, ranking_config):
      config["distribution_strategy"] = args.distribution_strategy
  for kind, config, defaults in (
      ("retrieval", retrieval_config, configs.RETRIEVAL_CONFIG),
      ("ranking", ranking_config, configs.RANKING_CONFIG)):
    trainer_configs.validate(kind, dict(defaults, **config))
  return retrieval_config, ranking_config


def run_pipeline(args: argparse.Namespace, paths: dict) -> int:
  """One pipeline run (the pipeline is created afresh: new data and spans
  are fingerprinted again); 0 on success, 1 on failure."""
  log_path = progress_lib.setup_logging(paths["log_dir"], args.verbose)
  progress = progress_lib.Progress()
  beam = configs.merged_beam_args(args.beam_args)
  print(f"Pipeline {configs.PIPELINE_NAME}: data={args.data_config or args.data} "
        f"split={args.split} output={paths['output_dir']}")
  print(f"Beam: {' '.join(beam)}")
  print(f"Full logs: {log_path}")

  retrieval_config, ranking_config = trainer_settings(args)

  t0 = time.time()
  try:
    # Imported here: the TFX stack takes ~20 s to import; flags answer fast.
    from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
    from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    from runners import run_report  # pylint: disable=g-import-not-at-top

    from common import filesystems  # pylint: disable=g-import-not-at-top
    for uri in (args.data, args.data_config):  # s3:// needs tensorflow-io
      filesystems.ensure_scheme(uri)
    if not args.no_ranking and pipeline_lib.is_implicit(args.data_config):
      print(pipeline_lib.IMPLICIT_NOTE)
    p = pipeline_lib.create_pipeline(
        pipeline_name=configs.PIPELINE_NAME,
        pipeline_root=paths["pipeline_root"],
        data=("" if args.data_config else local_abspath(args.data)),
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
    with progress_lib.reporting_launcher(progress):
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

  progress_lib.mark_finished()
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
                                configs.PIPELINE_NAME, args.keep_runs,
                                serving_dir=paths["serving_dir"])
    deleted += runs.deleted
    deleted += retention.prune_logs(paths["log_dir"], args.keep_runs,
                                    serving_dir=paths["serving_dir"])
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


def _tick_command(script: str, argv: List[str]) -> List[str]:
  return [sys.executable, os.path.abspath(script)] + list(argv) + [flags.TICK_FLAG]


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
                 script: str, run_once=None) -> int:
  """--schedule / --every: the foreground scheduler loop; each run is
  `script argv --scheduled-tick` in a child process."""
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
  cmd = _tick_command(script, argv)
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
  for m in versions.MODELS:
    complete, _ = versions.version_dirs(os.path.join(paths["serving_dir"], m))
    if complete:
      print(f"  now served: {m} version {complete[-1]}  "
            f"({os.path.join(paths['serving_dir'], m, str(complete[-1]))})")
  return 0


