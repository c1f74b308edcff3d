"""Runs the pipeline locally: LocalDagRunner, SQLite MLMD, Beam DirectRunner.

    python local_runner.py --data ../shared/datasets/ml-100k --output-dir tfx_output

Output layout (DIR = --output-dir, default ./tfx_output):
  DIR/tfx/          pipeline root: every component's artifacts
  DIR/metadata.db   ML Metadata (SQLite): lineage, cache
  DIR/logs/         full TF / Beam / TFX logs of each run
  DIR/serving/      pushed models: retrieval/<version>/, ranking/<version>/

The console shows one line per component start and end with elapsed time and
a summary table; everything else goes to the log file.
"""
import common  # noqa: F401  pylint: disable=unused-import  (first: sets TF_USE_LEGACY_KERAS)

import argparse
import contextlib
import datetime
import json
import logging
import os
import shlex
import sys
import time
import types
from typing import List, Optional

from pipeline import configs


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
  p.add_argument("--no-retrieval", action="store_true", help="skip the retrieval branch")
  p.add_argument("--no-ranking", action="store_true", help="skip the ranking branch")
  p.add_argument("--verbose", action="store_true", help="also print full logs")
  return p.parse_args(argv)


def beam_args(extra: str) -> List[str]:
  """Default Beam args, with same-named flags replaced by the user's."""
  user = shlex.split(extra)
  user_keys = {a.split("=", 1)[0] for a in user}
  return [a for a in configs.BEAM_PIPELINE_ARGS
          if a.split("=", 1)[0] not in user_keys] + user


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


def setup_logging(log_dir: str, verbose: bool):
  """Full logs to a file, progress lines to the console."""
  os.makedirs(log_dir, exist_ok=True)
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  log_path = os.path.join(log_dir, f"run-{stamp}.log")
  root = logging.getLogger()
  root.handlers.clear()
  root.setLevel(logging.INFO)
  file_handler = logging.FileHandler(log_path)
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


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  paths = configs.output_paths(args.output_dir)
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

  t0 = time.time()
  try:
    # Imported here: the TFX stack takes ~20 s to import; flags answer fast.
    from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
    from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    from pipeline import run_report  # pylint: disable=g-import-not-at-top

    if not args.no_ranking and pipeline_lib.is_implicit(args.data_config):
      print(pipeline_lib.IMPLICIT_NOTE)
    p = pipeline_lib.create_pipeline(
        pipeline_name=configs.PIPELINE_NAME,
        pipeline_root=paths["pipeline_root"],
        data=("" if args.data_config else
              os.path.abspath(args.data) if os.path.exists(args.data) else args.data),
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
    )
    with reporting_launcher(progress):
      LocalDagRunner().run(p)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("Pipeline failed")
    where = f" in component {progress.current}" if progress.current else ""
    print(f"\n✘ Pipeline FAILED{where} after {time.time() - t0:.0f}s:", file=sys.stderr)
    print(f"  {type(e).__name__}: {e}", file=sys.stderr)
    print(f"  Full log: {log_path}", file=sys.stderr)
    return 1

  print(f"\nPipeline finished in {time.time() - t0:.0f}s.\n")
  print(run_report.summarize(paths["metadata_path"], configs.PIPELINE_NAME,
                             paths["serving_dir"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
