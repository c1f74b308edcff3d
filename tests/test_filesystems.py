"""s3:// through tensorflow-io, against a real S3 server on 127.0.0.1 (moto).

Each check runs in a fresh interpreter: plugins register process-wide, and
the exit status of a process that used S3 is part of what is tested.
"""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from common import filesystems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, env=None, timeout=180):
  full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                        env=full_env, capture_output=True, text=True,
                        timeout=timeout, cwd=REPO, check=False)


def test_scheme_parsing():
  assert filesystems.scheme("s3://bucket/key") == "s3"
  assert filesystems.scheme("GS://bucket") == "gs"
  assert filesystems.scheme("/local/path") == ""
  assert filesystems.scheme("") == ""


def test_builtin_and_local_need_no_plugin():
  filesystems.ensure_scheme("/tmp/x")
  filesystems.ensure_scheme("gs://bucket/x")


def test_unknown_scheme_is_a_clear_error():
  with pytest.raises(ValueError, match=r"hdfz://.*no filesystem.*'hdfz://'"):
    filesystems.ensure_scheme("hdfz://cluster/data")


def test_ensure_scheme_registers_s3():
  result = _python("""
      import tensorflow as tf
      before = "s3" in tf.io.gfile.get_registered_schemes()
      from common import filesystems
      filesystems.ensure_scheme("s3://bucket/root")
      print(before, "s3" in tf.io.gfile.get_registered_schemes())
  """)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split()[-2:] == ["False", "True"]


def test_image_pth_hook_loads_plugins_only_when_asked(tmp_path):
  """The hook the Dockerfile installs into site-packages."""
  shutil.copy(os.path.join(REPO, "docker", "recsys_filesystems.pth"), tmp_path)
  probe = f"""
      import site, sys
      site.addsitedir({str(tmp_path)!r})
      print("tensorflow" in sys.modules)
      import tensorflow as tf
      print("s3" in tf.io.gfile.get_registered_schemes())
  """
  on = _python(probe, env={filesystems.ENV_VAR: "s3"})
  assert on.returncode == 0, on.stderr[-2000:]
  assert on.stdout.split()[-2:] == ["True", "True"]
  off = _python(probe, env={filesystems.ENV_VAR: ""})
  assert off.returncode == 0, off.stderr[-2000:]
  # Unset, the hook imports nothing: plain interpreters stay fast.
  assert off.stdout.split()[-2:] == ["False", "False"]


def test_dockerfile_installs_the_hook():
  with open(os.path.join(REPO, "Dockerfile")) as f:
    dockerfile = f.read()
  assert "recsys_filesystems.pth" in dockerfile
  assert f"{filesystems.ENV_VAR}=s3" in dockerfile


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def s3_server():
  from moto.server import ThreadedMotoServer  # pylint: disable=g-import-not-at-top
  port = _free_port()
  server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
  server.start()
  try:
    bucket = "recsys-test"
    urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{port}/{bucket}", method="PUT"), timeout=10).read()
    yield {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "S3_ENDPOINT": f"http://127.0.0.1:{port}",
           "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0"}, bucket
  finally:
    server.stop()


@pytest.mark.slow
def test_s3_round_trip_keeps_the_exit_status(s3_server):
  """Write, list and read back through tf.io.gfile; the exit code survives.

  Without the exit guard, tensorflow-io's S3 client aborts the interpreter
  at exit (status 134) and every Kubeflow step that touched S3 would fail.
  """
  env, bucket = s3_server
  code = f"""
      import sys
      from common import filesystems
      filesystems.ensure_scheme("s3://{bucket}")
      import tensorflow as tf
      root = "s3://{bucket}/pipeline-root/Trainer/model/7"
      tf.io.gfile.makedirs(root)
      with tf.io.gfile.GFile(root + "/saved_model.pb", "w") as f:
        f.write("weights")
      print(tf.io.gfile.listdir(root))
      print(tf.io.gfile.GFile(root + "/saved_model.pb").read())
      sys.exit(EXIT)
  """
  ok = _python(code.replace("EXIT", "0"), env=env)
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "['saved_model.pb']" in ok.stdout and "weights" in ok.stdout
  failed = _python(code.replace("EXIT", "3"), env=env)
  assert failed.returncode == 3, failed.stderr[-3000:]
  crashed = _python(f"""
      from common import filesystems
      filesystems.ensure_scheme("s3://{bucket}")
      import tensorflow as tf
      tf.io.gfile.exists("s3://{bucket}/nothing")
      raise RuntimeError("component failed")
  """, env=env)
  assert crashed.returncode == 1
  assert "component failed" in crashed.stderr
