"""Distribution strategy of a trainer run: custom_config["distribution_strategy"].

Both run_fns create the strategy first (before any other TF work: collective
ops of MultiWorkerMirroredStrategy must be configured at program start),
build and compile the model inside `strategy.scope()` and, under any
strategy but the default, create its variables eagerly on one batch (a
distributed `fit` cannot create them inside its tf.function). Keras' `fit`
distributes the input dataset over the replicas itself.

Names (STRATEGIES):
* "auto" (default): TF's default strategy, i.e. no distribution: one device,
  exactly the single-process behaviour.
* "one_device": tf.distribute.OneDeviceStrategy on the first GPU if there is
  one, else the CPU.
* "mirrored": tf.distribute.MirroredStrategy: synchronous data parallelism
  over every local GPU (or the CPU when there is none) of this one process.
* "multi_worker_mirrored": tf.distribute.MultiWorkerMirroredStrategy:
  synchronous data parallelism over several processes ("workers"), each with
  its local devices, gradients all-reduced with collective ops.

Multiple workers (Kubeflow). A KFP component is a single pod, so several
workers need a launcher that starts N pods running the same Trainer
executor: Vertex AI Training (tfx.extensions.google_cloud_ai_platform
Trainer with a worker pool of N replicas) or a Kubeflow Training Operator
TFJob. The launcher gives every pod a TF_CONFIG environment variable, e.g.

    {"cluster": {"worker": ["trainer-0:2222", "trainer-1:2222"]},
     "task": {"type": "worker", "index": 0}}

which MultiWorkerMirroredStrategy reads (TFConfigClusterResolver). Every
worker runs the same run_fn on the same files; tf.data shards the input by
element (`distribute_dataset`), and the global batch (`batch_size`) is split
over all replicas: the retrieval model's in-batch negatives are those of a
replica's share. Saving is a collective operation too, so every worker
exports, but only the chief (worker 0, or the "chief" task) writes to the
artifact's directories; the others write to a throw-away temporary
directory (`output_dirs`). Without TF_CONFIG the strategy runs as a single
local worker. A worker that dies stops the whole job (no BackupAndRestore
checkpointing here); rerun the component.

Losses under a strategy: each replica computes its share's mean loss and the
optimizer sums gradients over replicas, so the trainers divide their loss by
`num_replicas_in_sync` (`scale_loss`), as Keras' compiled losses do. Layer
regularization losses (the kernel L2 of `l2` in retrieval and `kernel_l2`
in ranking, both 0 by default) are added unscaled by tfrs.Model.train_step,
so with N replicas they weigh N times as much.
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Optional, Tuple

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored")
DEFAULT_STRATEGY = "auto"
CONFIG_KEY = "distribution_strategy"
# One strategy object per name and process: both trainers run in one process
# under the local runner, and a second MirroredStrategy's collective
# all-reduces reuse the first one's instance keys (shape-mismatch aborts).
_CREATED = {}


def create(name: Optional[str]) -> tf.distribute.Strategy:
  """The tf.distribute.Strategy called `name` (None or "" = "auto").

  Raises:
    ValueError: `name` is not one of STRATEGIES (the message lists them).
  """
  key = str(name or DEFAULT_STRATEGY).strip().lower()
  if key not in STRATEGIES:
    raise ValueError(f"Unknown {CONFIG_KEY} {name!r}: use one of "
                     f"{', '.join(STRATEGIES)}")
  if key in _CREATED:  # see _CREATED
    return _CREATED[key]
  if key == "auto":
    strategy = tf.distribute.get_strategy()
  elif key == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  elif key == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # Collective ops are configured once per process: one such strategy only.
  if key != "auto":
    _CREATED[key] = strategy
  logging.info("Distribution strategy %s: %s with %d replica(s)", key,
               type(strategy).__name__, strategy.num_replicas_in_sync)
  return strategy


def is_default(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` is TF's default one ("auto": no distribution)."""
  with strategy.scope():
    return not tf.distribute.has_strategy()


def scale_loss(loss: tf.Tensor) -> tf.Tensor:
  """A replica's mean loss scaled so that the summed gradients are the mean's.

  Under the default strategy (one replica) this is the loss itself.
  """
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  if replicas == 1:
    return loss
  return loss / tf.cast(replicas, loss.dtype)


def distribute_dataset(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Shards by element across workers (our inputs have few, uneven files)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return ds.with_options(options)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this worker writes the outputs (always, without multi-worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode",
                                     lambda: False)():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type in (None, "chief"):
    return True
  has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
  return task_type == "worker" and task_id == 0 and not has_chief


def output_dirs(strategy: tf.distribute.Strategy, serving_model_dir: str,
                model_run_dir: Optional[str]) -> Tuple[str, Optional[str]]:
  """Where this worker exports: the artifact dirs, or a temporary dir if not chief."""
  if is_chief(strategy):
    return serving_model_dir, model_run_dir
  scratch = tempfile.mkdtemp(prefix="non_chief_worker_")
  logging.info("Not the chief worker: exporting to %s (discarded)", scratch)
  return (os.path.join(scratch, os.path.basename(serving_model_dir)),
          os.path.join(scratch, "model_run") if model_run_dir else None)
