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

from tests.test_serving import _free_port, _push, fused_score, models  # noqa: F401  pylint: disable=unused-import

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


def _tail(path, n=3000):
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()[-n:]


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
    deadline = time.time() + START_TIMEOUT
    with httpx.Client(base_url=base, timeout=30) as c:
      while True:
        assert proc.poll() is None, (
            f"server exited with {proc.returncode}:\n{_tail(log_path)}")
        assert time.time() < deadline, f"no /healthz:\n{_tail(log_path)}"
        try:
          health = c.get("/healthz", timeout=2)
          if health.status_code == 200:
            break
        except httpx.TransportError:
          pass
        time.sleep(0.25)
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
