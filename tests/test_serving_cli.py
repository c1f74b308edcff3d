"""The `recommend` console script as a user runs it: separate processes.

tests/test_serving.py drives serving.cli.main() and the FastAPI app inside
the test process; this module starts the installed entry point (or
`python -m serving.cli` when it is not installed) in a subprocess, so
argument parsing, exit codes, uvicorn start-up on a real socket and shutdown
on SIGTERM are covered too. Models are the tiny ones test_serving.py trains
(its module fixture is imported, not copied). Every wait is bounded and
every server listens on loopback only.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_serving import _free_port, _push, fused_score

VARIABLES_DATA = os.path.join("variables", "variables.data-00000-of-00001")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 180  # TF import + model load on a busy 2-core machine
CALL_TIMEOUT = 180


def _command():
  script = os.path.join(os.path.dirname(sys.executable), "recommend")
  if os.path.exists(script):
    return [script]
  return [sys.executable, "-m", "serving.cli"]


def _env():
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (ROOT, env.get("PYTHONPATH")) if p)
  return env


def _run(args, timeout=CALL_TIMEOUT):
  return subprocess.run(_command() + args, cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


@pytest.fixture(scope="module")
def output_dir(models, tmp_path_factory):  # pylint: disable=redefined-outer-name
  out = tmp_path_factory.mktemp("cli_output")
  _push(models, out / "serving", "retrieval", 1)
  _push(models, out / "serving", "ranking", 1)
  return str(out)


@pytest.fixture(scope="module")
def damaged_output_dir(models, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """Good versions 1, and a retrieval version 2 whose variables were cut."""
  out = tmp_path_factory.mktemp("damaged_output")
  _push(models, out / "serving", "retrieval", 1)
  _push(models, out / "serving", "ranking", 1)
  bad = _push(models, out / "serving", "retrieval", 2)
  with open(os.path.join(bad, VARIABLES_DATA), "r+b") as f:
    f.truncate(10)
  return str(out)


def _tail(path, n=3000):
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()[-n:]


def _errors(stderr):
  """The `error:` lines of stderr; a traceback is never one of them."""
  assert "Traceback" not in stderr, stderr
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def _start_serve(args, log_path):
  with open(log_path, "w", encoding="utf-8") as log:
    return subprocess.Popen(  # pylint: disable=consider-using-with
        _command() + ["serve", "--host", "127.0.0.1"] + args,
        cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _wait_healthy(proc, client, log_path):
  """/healthz once it answers 200 (the process must stay up meanwhile)."""
  import httpx  # pylint: disable=g-import-not-at-top
  deadline = time.time() + START_TIMEOUT
  while True:
    assert proc.poll() is None, (
        f"server exited with {proc.returncode}:\n{_tail(log_path)}")
    assert time.time() < deadline, f"no /healthz:\n{_tail(log_path)}"
    try:
      health = client.get("/healthz", timeout=2)
      if health.status_code == 200:
        return health
    except httpx.TransportError:
      pass
    time.sleep(0.25)


def _stop(proc, log_path):
  """SIGTERM, then SIGKILL by pid if it does not exit."""
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait(timeout=30)
      raise AssertionError(f"server ignored SIGTERM:\n{_tail(log_path)}")
  return proc.returncode


@pytest.mark.slow
def test_serve_subprocess_answers_and_exits_on_sigterm(output_dir, tmp_path):
  import httpx  # pylint: disable=g-import-not-at-top
  port = _free_port()
  base = f"http://127.0.0.1:{port}"
  log_path = tmp_path / "serve.log"
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        _command() + ["serve", "--output-dir", output_dir,
                      "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
  try:
    with httpx.Client(base_url=base, timeout=30) as c:
      health = _wait_healthy(proc, c, log_path)
      assert health.json()["status"] == "ok"
      assert health.json()["model_versions"] == {"retrieval": 1, "ranking": 1}

      r = c.get("/recommend", params={"user_id": "1", "k": 5})
      assert r.status_code == 200, r.text
      body = r.json()
      assert body["user_id"] == "1" and body["known_user"] and body["ranked"]
      assert len(body["items"]) == 5
      assert len({it["movie_id"] for it in body["items"]}) == 5
      # The serving order: reciprocal rank fusion of the models' ranks.
      fused = [fused_score(it) for it in body["items"]]
      assert fused == sorted(fused, reverse=True)

      r = c.post("/recommend", json={"user_id": "cli-new-user", "k": 3,
                                     "features": {"age": 30, "gender": "F"}})
      assert r.status_code == 200, r.text
      assert len(r.json()["items"]) == 3 and not r.json()["known_user"]

      for params in ({"user_id": "1", "k": 0}, {"k": 5},
                     {"user_id": "1", "colour": "red"}):
        r = c.get("/recommend", params=params)
        assert 400 <= r.status_code < 500, (params, r.status_code, r.text)
        assert r.json()["detail"]
      r = c.post("/recommend", content=b"{not json",
                 headers={"content-type": "application/json"})
      assert 400 <= r.status_code < 500 and r.json()["detail"]
      assert c.get("/healthz").status_code == 200  # still serving

    proc.send_signal(signal.SIGTERM)
    returncode = proc.wait(timeout=30)
    assert returncode in (0, -signal.SIGTERM), (returncode, _tail(log_path))
    with pytest.raises(httpx.TransportError):
      httpx.get(f"{base}/healthz", timeout=2)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(timeout=30)


@pytest.mark.slow
def test_serve_without_models_fails_fast(tmp_path):
  """No pushed model: the process exits non-zero instead of serving 503s."""
  res = _run(["serve", "--output-dir", str(tmp_path), "--host", "127.0.0.1",
              "--port", str(_free_port())], timeout=START_TIMEOUT)
  assert res.returncode != 0
  assert "No complete retrieval model" in res.stderr


@pytest.mark.slow
def test_user_and_batch_subprocess(output_dir, tmp_path):
  res = _run(["user", "2", "--output-dir", output_dir, "--k", "4", "--json"])
  assert res.returncode == 0, res.stderr
  body = json.loads(res.stdout)
  assert body["user_id"] == "2" and len(body["items"]) == 4

  res = _run(["user", "new-user", "--output-dir", output_dir, "--k", "3",
              "--age", "30", "--gender", "F", "--occupation", "writer"])
  assert res.returncode == 0, res.stderr
  lines = res.stdout.strip().splitlines()
  assert "unknown user" in lines[0] and len(lines) == 2 + 3  # header + rows

  res = _run(["user", "2", "--output-dir", output_dir, "--k", "0"])
  assert res.returncode == 2 and "error: k must be positive" in res.stderr

  users = tmp_path / "users.txt"
  users.write_text("1\n\n3\nnobody\n")
  out = tmp_path / "recs.jsonl"
  res = _run(["batch", "--users-file", str(users), "--out", str(out),
              "--output-dir", output_dir, "--k", "2", "--version", "1"])
  assert res.returncode == 0, res.stderr
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["user_id"] for r in rows] == ["1", "3", "nobody"]
  assert all(len(r["items"]) == 2 for r in rows)
  assert all(r["model_versions"] == {"retrieval": 1, "ranking": 1} for r in rows)
  assert "wrote 3 lines" in res.stderr

  res = _run(["user", "1"])  # --output-dir is required
  assert res.returncode == 2 and "--output-dir" in res.stderr


@pytest.mark.slow
def test_user_skips_a_damaged_newest_version_pinned_is_one_line(damaged_output_dir):
  res = _run(["user", "1", "--output-dir", damaged_output_dir, "--k", "3", "--json"])
  assert res.returncode == 0, res.stderr
  assert json.loads(res.stdout)["model_versions"] == {"retrieval": 1, "ranking": 1}
  assert ("WARNING: retrieval version 2 skipped: variables/variables.data-00000-"
          "of-00001 has 10 bytes, VERSION.json says") in res.stderr
  assert not _errors(res.stderr)

  res = _run(["user", "1", "--output-dir", damaged_output_dir, "--version", "2"])
  assert res.returncode == 1 and not res.stdout
  [error] = _errors(res.stderr)
  assert error.startswith("error: Pinned retrieval version 2 under ")
  assert error.endswith("is not usable: variables/variables.data-00000-of-00001 "
                        f"has 10 bytes, VERSION.json says "
                        f"{os.path.getsize(os.path.join(damaged_output_dir, 'serving', 'retrieval', '1', VARIABLES_DATA))}")

  res = _run(["user", "1", "--output-dir", damaged_output_dir, "--version", "9"])
  assert res.returncode == 1
  [error] = _errors(res.stderr)
  assert error.startswith("error: Pinned retrieval version 9 not found")


@pytest.mark.slow
def test_bad_cli_numbers_exit_2_without_output(damaged_output_dir):
  for args, message in (
      (["--age", "inf"], "error: age must be a finite number in 0..120, got inf"),
      (["--age", "nan"], "error: age must be a finite number in 0..120, got nan"),
      (["--age", "-1"], "error: age must be a finite number in 0..120, got -1.0"),
      (["--timestamp", "-5"], "error: timestamp must be a finite number"),
      (["--occupation", "x" * 300], "error: occupation must be at most 256 characters"),
      (["--n-candidates", "0"], "error: n_candidates must be in 1..2000")):
    res = _run(["user", "new-user", "--output-dir", damaged_output_dir, "--json"]
               + args)
    assert res.returncode == 2, (args, res.returncode, res.stdout, res.stderr)
    assert not res.stdout, args
    [error] = _errors(res.stderr)
    assert error.startswith(message), (args, error)


@pytest.mark.slow
def test_no_usable_version_is_one_line_and_exit_1(models, tmp_path):  # pylint: disable=redefined-outer-name
  bad = _push(models, tmp_path / "serving", "retrieval", 1)
  with open(os.path.join(bad, "saved_model.pb"), "wb"):
    pass  # 0 bytes
  for command in (["user", "1"], ["serve", "--port", str(_free_port())],
                  ["serve", "--port", str(_free_port()), "--workers", "2"]):
    res = _run(command + ["--output-dir", str(tmp_path)], timeout=START_TIMEOUT)
    assert res.returncode == 1, (command, res.stderr)
    [error] = _errors(res.stderr)
    assert error.startswith(("error: No usable retrieval model under",
                             "error: No complete retrieval model under")), error
    assert "retrieval version 1 skipped: saved_model.pb has 0 bytes" in error


@pytest.mark.slow
def test_serve_skips_a_damaged_newest_version_and_reports_it(damaged_output_dir,
                                                             tmp_path):
  import httpx  # pylint: disable=g-import-not-at-top
  port = _free_port()
  log_path = tmp_path / "serve.log"
  proc = _start_serve(["--output-dir", damaged_output_dir, "--port", str(port)],
                      log_path)
  try:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
      health = _wait_healthy(proc, c, log_path)
      body = health.json()
      assert body["status"] == "degraded", body
      assert body["model_versions"] == {"retrieval": 1, "ranking": 1}
      assert body["last_reload_error"].startswith(
          "retrieval version 2 skipped: variables/variables.data-00000-of-00001 "
          "has 10 bytes, VERSION.json says")
      assert damaged_output_dir not in health.text
      r = c.get("/recommend", params={"user_id": "1", "k": 2})
      assert r.status_code == 200 and r.json()["model_versions"]["retrieval"] == 1
      assert c.get("/docs").status_code == 404
      assert c.get("/openapi.json").status_code == 404
    assert _stop(proc, log_path) in (0, -signal.SIGTERM)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(timeout=30)


def _children(pid):
  """Pids of uvicorn's spawned worker processes under `pid`."""
  out = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmdline = f.read()
    except (OSError, ValueError, IndexError):
      continue
    if ppid == pid and b"spawn_main" in cmdline:
      out.append(int(entry))
  return out


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.slow
def test_serve_with_two_workers(output_dir, tmp_path):
  import httpx  # pylint: disable=g-import-not-at-top
  port = _free_port()
  log_path = tmp_path / "serve.log"
  proc = _start_serve(["--output-dir", output_dir, "--port", str(port),
                       "--workers", "2", "--threads", "2"], log_path)
  workers = []
  try:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
      deadline = time.time() + START_TIMEOUT
      while len(workers) < 2:
        assert time.time() < deadline, f"no 2 workers:\n{_tail(log_path)}"
        workers = _children(proc.pid)
        time.sleep(0.5)
      assert len(workers) == 2, workers
      health = _wait_healthy(proc, c, log_path)
      assert health.json()["status"] == "ok"
      # Fresh connections, so both workers get some of them.
      for user in ("1", "2", "3", "4", "5", "6"):
        r = httpx.get(f"http://127.0.0.1:{port}/recommend",
                      params={"user_id": user, "k": 3}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["model_versions"] == {"retrieval": 1, "ranking": 1}
    assert _stop(proc, log_path) in (0, -signal.SIGTERM)
    deadline = time.time() + 30
    while any(_alive(w) for w in workers):
      assert time.time() < deadline, f"workers outlived the server: {workers}"
      time.sleep(0.2)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(timeout=30)
    for w in workers:
      if _alive(w):
        os.kill(w, signal.SIGKILL)
