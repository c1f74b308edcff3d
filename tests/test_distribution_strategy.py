"""custom_config["distribution_strategy"] (trainer_modules/strategy.py).

MirroredStrategy runs on CPU: in-process with the one CPU device (one
replica, but the distributed code path: variables created in the scope and
before fit, distributed datasets, scaled losses), and in a subprocess with
two logical CPU devices (two replicas, both trainers in one process as under
the local runner).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from common import features as F
from trainer_modules import ranking
from trainer_modules import strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fn_args(data, root, custom_config):
  return tfx.components.FnArgs(
      train_files=[data["train_pattern"]], eval_files=[data["eval_pattern"]],
      transform_output=data["tft_dir"],
      serving_model_dir=os.path.join(root, "model", "Format-Serving"),
      model_run_dir=os.path.join(root, "model_run"), train_steps=None,
      eval_steps=None, custom_config=custom_config)


def test_unknown_strategy_fails_listing_the_valid_names(tiny_transformed, tmp_path):
  with pytest.raises(ValueError) as e:
    strategy.create("tpu")
  for name in strategy.STRATEGIES:
    assert name in str(e.value)
  with pytest.raises(ValueError, match="distribution_strategy 'nccl'"):
    ranking.run_fn(_fn_args(tiny_transformed, str(tmp_path),
                            {"distribution_strategy": "nccl"}))


def test_auto_is_the_default_strategy():
  assert strategy.is_default(strategy.create(None))
  assert strategy.is_default(strategy.create("auto"))
  assert not strategy.is_default(strategy.create("one_device"))


def test_mirrored_ranking_trains_and_exports(tiny_transformed, tmp_path):
  args = _fn_args(tiny_transformed, str(tmp_path),
                  {"distribution_strategy": "mirrored", "epochs": 1,
                   "batch_size": 64})
  ranking.run_fn(args)
  loaded = tf.saved_model.load(args.serving_model_dir)
  rows = tiny_transformed["rows"]["eval"][:5]
  examples = [F.to_tf_example({k: v for k, v in r.items() if k != F.USER_RATING})
              .SerializeToString() for r in rows]
  pred = loaded.signatures["serving_default"](
      examples=tf.constant(examples))["predictions"].numpy()
  assert pred.shape == (5,) and np.all(np.isfinite(pred))


_TWO_REPLICAS = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
import common
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfx import v1 as tfx
from trainer_modules import ranking, retrieval, strategy
data, out, catalogue = json.loads(sys.argv[1])
for name, fn in (("ranking", ranking.run_fn), ("retrieval", retrieval.run_fn)):
  fn(tfx.components.FnArgs(
      train_files=[data["train_pattern"]], eval_files=[data["eval_pattern"]],
      transform_output=data["tft_dir"],
      serving_model_dir=os.path.join(out, name, "Format-Serving"),
      model_run_dir=None, train_steps=None, eval_steps=None,
      custom_config={"distribution_strategy": "mirrored", "epochs": 1,
                     "batch_size": 128, "catalogue_uri": catalogue}))
  with open(os.path.join(out, name, "replicas"), "w") as f:
    # The (per-process) strategy the run_fn trained with.
    f.write(str(strategy.create("mirrored").num_replicas_in_sync))
"""


@pytest.mark.slow
def test_mirrored_on_two_cpu_replicas_trains_both_models(tiny_transformed, tmp_path):
  data = {k: tiny_transformed[k] for k in ("train_pattern", "eval_pattern", "tft_dir")}
  catalogue = os.path.dirname(os.path.dirname(tiny_transformed["catalogue_pattern"]))
  proc = subprocess.run(
      [sys.executable, "-c", _TWO_REPLICAS,
       json.dumps([data, str(tmp_path), catalogue])],
      cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("ranking", "retrieval"):
    assert os.path.exists(os.path.join(tmp_path, name, "Format-Serving",
                                       "saved_model.pb"))
    assert open(os.path.join(tmp_path, name, "replicas")).read() == "2"


class _FakeMultiWorker:
  """What is_chief reads of a MultiWorkerMirroredStrategy under TF_CONFIG."""

  def __init__(self, task_type, task_id, cluster):
    self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    self.extended = type("Extended", (), {"_in_multi_worker_mode": lambda self: True})()


def test_only_the_chief_worker_writes_to_the_artifacts(tmp_path):
  workers = {"worker": ["w0:2222", "w1:2222"]}
  serving, run = str(tmp_path / "model" / "Format-Serving"), str(tmp_path / "run")
  chief = _FakeMultiWorker("worker", 0, workers)
  assert strategy.output_dirs(chief, serving, run) == (serving, run)
  other_serving, other_run = strategy.output_dirs(
      _FakeMultiWorker("worker", 1, workers), serving, run)
  assert not other_serving.startswith(str(tmp_path)) and other_run != run
  with_chief = dict(workers, chief=["c0:2222"])
  assert strategy.is_chief(_FakeMultiWorker("chief", 0, with_chief))
  assert not strategy.is_chief(_FakeMultiWorker("worker", 0, with_chief))
  assert strategy.is_chief(tf.distribute.get_strategy())
