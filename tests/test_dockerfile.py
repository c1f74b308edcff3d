"""Static checks of the Kubeflow image's Dockerfile (no docker build here)."""
import importlib.util
import json
import os
import re

import kubeflow_runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _instructions():
  """[(INSTRUCTION, argument)] with line continuations and comments folded."""
  with open(os.path.join(REPO, "Dockerfile")) as f:
    lines = [l for l in f.read().splitlines() if not l.lstrip().startswith("#")]
  text = re.sub(r"\\\n", " ", "\n".join(lines))
  out = []
  for line in text.splitlines():
    if line.strip():
      word, _, rest = line.strip().partition(" ")
      out.append((word.upper(), " ".join(rest.split())))
  return out


def _index(instrs, pred):
  return next(i for i, ins in enumerate(instrs) if pred(ins))


def test_base_image_is_python_3_10_slim():
  instrs = _instructions()
  assert instrs[0] == ("FROM", "python:3.10-slim")


def test_installs_the_lock_then_the_package_without_deps():
  instrs = _instructions()
  runs = [arg for word, arg in instrs if word == "RUN"]
  assert any("pip install --no-cache-dir uv" in r for r in runs)
  assert any("uv pip install --system -r requirements.lock" in r for r in runs)
  assert any("uv pip install --system --no-deps ." in r for r in runs)
  copy_lock = _index(instrs, lambda i: i[0] == "COPY"
                     and i[1].startswith("requirements.lock"))
  install_lock = _index(instrs, lambda i: i[0] == "RUN"
                        and "-r requirements.lock" in i[1])
  copy_all = _index(instrs, lambda i: i == ("COPY", ". ."))
  install_pkg = _index(instrs, lambda i: i[0] == "RUN" and "--no-deps ." in i[1])
  # The lock layer is built before the source is copied (cache-friendly).
  assert copy_lock < install_lock < copy_all < install_pkg


def test_sets_legacy_keras_for_every_container():
  env = " ".join(arg for word, arg in _instructions() if word == "ENV")
  assert re.search(r"\bTF_USE_LEGACY_KERAS=1\b", env)


def test_kubeflow_command_is_in_the_spec_so_entrypoint_is_beams_boot(tmp_path):
  """Kubeflow runs the command compiled into the spec; Beam workers (the
  image as SDK container) start through the ENTRYPOINT, Beam's boot binary
  from the SDK image of the pinned Beam and Python versions."""
  import sys  # pylint: disable=g-import-not-at-top
  import apache_beam  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top
  from tests import synthetic_data  # pylint: disable=g-import-not-at-top
  [entry] = [arg for word, arg in _instructions() if word == "ENTRYPOINT"]
  assert json.loads(entry) == ["/opt/apache/beam/boot"]
  sdk = (f"apache/beam_python{sys.version_info.major}.{sys.version_info.minor}"
         f"_sdk:{apache_beam.__version__}")
  assert ("COPY", f"--from={sdk} /opt/apache/beam /opt/apache/beam") in _instructions()

  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp_path / "pipeline.yaml")
  assert kubeflow_runner.main(["--pipeline-root", "gs://b/root", "--data", data,
                               "--output", out]) == 0
  with open(out) as f:
    spec = yaml.safe_load(f)
  containers = [e["container"] for e in spec["deploymentSpec"]["executors"].values()
                if "container" in e]
  assert containers
  for container in containers:
    assert tuple(container["command"]) == tuple(kubeflow_v2_dag_runner.KUBEFLOW_TFX_CMD)
  module = kubeflow_v2_dag_runner.KUBEFLOW_TFX_CMD[-1]
  assert importlib.util.find_spec(module) is not None  # shipped with tfx (in the lock)


def test_workdir_is_where_the_runner_expects_package_files():
  """kubeflow_runner points ImportSchemaGen at <WORKDIR>/pipeline/schemas."""
  [workdir] = [arg for word, arg in _instructions() if word == "WORKDIR"]
  assert workdir == kubeflow_runner.IMAGE_SRC_DIR


def test_lock_pins_tfx_and_kfp():
  with open(os.path.join(REPO, "requirements.lock")) as f:
    lock = f.read()
  assert re.search(r"^tfx==1\.16\.0$", lock, re.M)
  assert re.search(r"^kfp==2\.", lock, re.M)


def test_dockerignore_keeps_venv_outputs_and_vcs_out():
  with open(os.path.join(REPO, ".dockerignore")) as f:
    entries = {l.strip() for l in f if l.strip() and not l.startswith("#")}
  for name in (".venv", "tfx_output", ".git", "**/__pycache__",
               ".pytest_cache"):
    assert name in entries, name
  # Nothing the image needs is excluded.
  for needed in ("requirements.lock", "setup.py", "pipeline", "components",
                 "transform", "trainer_modules", "common"):
    assert needed not in entries
