"""The Pusher both branches use: only blessed models, each to a new version."""
from tfx.components import Pusher
from tfx.proto import pusher_pb2


def blessed_model_pusher(trainer, evaluator, serving_dir: str, pusher_id: str):
  """A stock Pusher of trainer's model, gated on evaluator's blessing.

  Versions are integer folders (TF Serving layout) under serving_dir.
  """
  return Pusher(
      model=trainer.outputs["model"],
      model_blessing=evaluator.outputs["blessing"],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(
              base_directory=serving_dir))).with_id(pusher_id)
