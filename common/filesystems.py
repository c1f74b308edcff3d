"""URI schemes beyond TensorFlow's own: s3:// (AWS S3, MinIO, Ceph ...).

TFX reads and writes every artifact through tf.io.gfile. TensorFlow 2.16
knows file:// and, through tensorflow-io-gcs-filesystem, gs://. S3 and
S3-compatible stores come from tensorflow-io's filesystem plugins, which
register when `tensorflow_io` is imported. So every process that touches an
s3:// URI must import it first:

* our own code calls `ensure_scheme(uri)` for the URIs it is given (the
  runners for --data / --pipeline-root, ingestion for its source);
* the stock components (StatisticsGen, Evaluator, Pusher, ...) in the
  Kubeflow image never import our code, so the image installs a `.pth` hook
  (docker/recsys_filesystems.pth) that calls `load_plugins_from_env()` at
  interpreter start when RECSYS_FILESYSTEM_PLUGINS names schemes (the
  Dockerfile sets it to "s3").

tensorflow-io 0.37's S3 client aborts the interpreter at exit ("pure virtual
method called", exit status 134) once it has been used, which would fail
every Kubeflow step that wrote to S3. Loading the plugin therefore installs an
exit guard that ends the process with its real exit status before the
plugin's static destructors run.

S3 settings come from the environment, as for the AWS SDK: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, and for MinIO S3_ENDPOINT=host:port (or
http://host:port), S3_USE_HTTPS=0, S3_VERIFY_SSL=0.
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
from typing import List

# Scheme → the module whose import registers it with tf.io.gfile.
PLUGIN_MODULES = {"s3": "tensorflow_io"}
ENV_VAR = "RECSYS_FILESYSTEM_PLUGINS"

_exit_status = {"code": 0}
_guard_installed = False


def scheme(uri: str) -> str:
  """"s3" for "s3://bucket/key"; "" for local paths."""
  head, sep, _ = (uri or "").partition("://")
  return head.lower() if sep else ""


def registered_schemes() -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return list(tf.io.gfile.get_registered_schemes())


def ensure_scheme(uri: str) -> None:
  """Makes tf.io.gfile able to open `uri`, or says why it cannot.

  Raises:
    ValueError: the scheme is neither built in nor provided by a plugin
      this project knows, or its plugin did not register it.
  """
  name = scheme(uri)
  if not name or name in registered_schemes():
    return
  module = PLUGIN_MODULES.get(name)
  if module is None:
    raise ValueError(
        f"{uri}: no filesystem for the scheme '{name}://'. TensorFlow here "
        f"knows {sorted(s for s in registered_schemes() if s)}; plugins this "
        f"project can load: {sorted(PLUGIN_MODULES)}.")
  _load(module)
  if name not in registered_schemes():
    raise ValueError(f"{uri}: importing {module} did not register "
                     f"'{name}://' with tf.io.gfile.")


def load_plugins_from_env() -> None:
  """Loads the plugins for the schemes listed in $RECSYS_FILESYSTEM_PLUGINS.

  Called by the image's .pth hook at every interpreter start; does nothing
  (and imports nothing) when the variable is unset or empty.
  """
  for name in filter(None, (s.strip().lower() for s in
                            os.environ.get(ENV_VAR, "").split(","))):
    ensure_scheme(f"{name}://")


def _load(module: str) -> None:
  importlib.import_module(module)
  _install_exit_guard()


def _install_exit_guard() -> None:
  """Exits with the process's real status before C++ teardown can abort it.

  The guard records the status passed to sys.exit (absl's app.run, used by
  TFX's container entrypoint, ends with sys.exit(main())) and 1 for an
  uncaught exception, then, as the last atexit handler (registered first,
  handlers run in reverse), flushes stdio and calls os._exit.
  """
  global _guard_installed
  if _guard_installed:
    return
  _guard_installed = True
  original_exit = sys.exit
  original_hook = sys.excepthook

  def recording_exit(code=0):
    if code is None:
      _exit_status["code"] = 0
    elif isinstance(code, int):
      _exit_status["code"] = code
    else:  # sys.exit("message") prints it and exits with 1
      _exit_status["code"] = 1
    original_exit(code)

  def recording_hook(exc_type, exc, tb):
    _exit_status["code"] = 1
    original_hook(exc_type, exc, tb)

  def hard_exit():
    logging.shutdown()  # handlers registered before this one won't run
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    os._exit(_exit_status["code"])  # pylint: disable=protected-access

  sys.exit = recording_exit
  sys.excepthook = recording_hook
  atexit.register(hard_exit)
