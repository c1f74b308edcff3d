"""Console progress and log files of a local run.

LocalDagRunner prints nothing useful per component and TF / Beam / TFX log
thousands of lines. A run shows one console line per component start and
end (with elapsed time and whether it came from the cache) and sends the
full logs to `<output>/logs/run-<time>.log`. benchmarks/scale.py parses the
progress lines, so their format is defined here once.
"""
import contextlib
import datetime
import logging
import os
import sys
import time
import types
from typing import Optional

LOG_PREFIX = "run-"  # <log_dir>/run-<YYYYmmdd-HHMMSS>.log, one per run
LOG_STAMP = "%Y%m%d-%H%M%S"
# The last line of a successful run's log (retention tells runs apart by it).
FINISHED_MARK = "Pipeline run finished successfully"


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
  stamp = datetime.datetime.now().strftime(LOG_STAMP)
  log_path = os.path.join(log_dir, f"{LOG_PREFIX}{stamp}.log")
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


def mark_finished() -> None:
  """Writes FINISHED_MARK to the run's log (a failed run's log lacks it)."""
  logging.info(FINISHED_MARK)
