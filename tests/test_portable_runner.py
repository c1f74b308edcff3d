"""The whole pipeline on Beam's portable runner (slow).

Beam's own local job service and an external SDK worker pool speak the same
Job and Fn APIs as the Flink and Spark job servers and Dataflow; this keeps
the pipeline's Beam code (TFX components, TFT, TFMA, ours) runnable there:

    python -m apache_beam.runners.portability.local_job_service_main --port P1
    python -m apache_beam.runners.worker.worker_pool_main --service_port=P2
    python local_runner.py ... --beam-args "--runner=PortableRunner
        --job_endpoint=localhost:P1 --environment_type=EXTERNAL
        --environment_config=localhost:P2"

Both services run with the project's venv first on PATH and
TF_USE_LEGACY_KERAS=1 (the SDK workers import the stack), on free ports of
127.0.0.1, and are stopped by their process ids, also when the run fails.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import local_runner
from tests import synthetic_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 180  # seconds for a service to listen (imports on a busy machine)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _listening(port: int) -> bool:
  with socket.socket() as s:
    s.settimeout(1.0)
    return s.connect_ex(("127.0.0.1", port)) == 0


def _start(args, log_path):
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1",
             PATH=os.path.dirname(sys.executable) + os.pathsep
             + os.environ.get("PATH", ""))
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  # Its own process group: the SDK workers it may start stop with it.
  proc = subprocess.Popen([sys.executable, "-m"] + args, cwd=REPO, env=env,
                          stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
  proc.log = log
  return proc


def _wait_listening(proc, port, log_path):
  deadline = time.time() + START_TIMEOUT
  while not _listening(port):
    if proc.poll() is not None:
      with open(log_path) as f:
        pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{f.read()}")
    if time.time() > deadline:
      pytest.fail(f"{proc.args} does not listen on port {port} after "
                  f"{START_TIMEOUT} s")
    time.sleep(1.0)


def _stop(proc):
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGTERM)  # the group this test created
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait(timeout=20)
  proc.log.close()


def _versions(path):
  return sorted(d for d in os.listdir(path) if d.isdigit()) if os.path.isdir(
      path) else []


@pytest.mark.slow
def test_pipeline_runs_on_the_portable_runner(tmp_path, restore_logging,
                                              capsys):
  job_port, worker_port = _free_port(), _free_port()
  job_log, worker_log = str(tmp_path / "job.log"), str(tmp_path / "worker.log")
  services = []
  try:
    services.append(_start(
        ["apache_beam.runners.portability.local_job_service_main", "--port",
         str(job_port)], job_log))
    services.append(_start(
        ["apache_beam.runners.worker.worker_pool_main",
         f"--service_port={worker_port}"], worker_log))
    _wait_listening(services[0], job_port, job_log)
    _wait_listening(services[1], worker_port, worker_log)

    data = str(tmp_path / "ml-100k")
    synthetic_data.write_ml100k(data, num_users=120, num_movies=360,
                                ratings_per_user=30)
    out = str(tmp_path / "out")
    beam = (f"--runner=PortableRunner --job_endpoint=localhost:{job_port} "
            f"--environment_type=EXTERNAL "
            f"--environment_config=localhost:{worker_port}")
    code = local_runner.main([
        "--data", data, "--output-dir", out, "--beam-args", beam,
        "--no-batch-recommendations",
        "--ranking-config", json.dumps(synthetic_data.E2E_RANKING_CONFIG),
        "--retrieval-config",
        json.dumps(synthetic_data.E2E_RETRIEVAL_CONFIG)])
    printed = capsys.readouterr().out
    assert code == 0, printed
  finally:
    for proc in services:
      _stop(proc)

  assert f"--job_endpoint=localhost:{job_port}" in printed  # the Beam line
  serving = os.path.join(out, "serving")
  for model in ("retrieval", "ranking"):
    [version] = _versions(os.path.join(serving, model))
    assert os.path.exists(os.path.join(serving, model, version,
                                       "saved_model.pb"))
  assert printed.count("blessed: yes") == 2
  # The Beam stages really ran in the job service and its external workers.
  with open(job_log) as f:
    jobs = f.read().count("Completed job in")
  # StatisticsGen, Transform, the TFMA Evaluator (3 measured).
  assert jobs >= 3, f"{jobs} Beam jobs in the job service"
  assert glob.glob(os.path.join(out, "tfx", "Transform", "transform_graph",
                                "*", "transform_fn"))
