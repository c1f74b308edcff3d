"""Works around TFT 1.16's deep-copy optimization failing on Beam 2.74.

TFX's Transform executor always enables TFT's "deep copy" optimization. With
the pinned Beam it fails on any preprocessing_fn that has an analyzer:
tensorflow_transform/beam/deep_copy.py constructs
`AppliedPTransform(parent, transform, label, inputs)`, while Beam 2.74 also
requires `environment_id` and `annotations`:

    TypeError: AppliedPTransform.__init__() missing 2 required positional
    arguments: 'environment_id' and 'annotations'

The optimization only saves re-reading the input for later analysis phases,
so it is switched off when (and only when) the installed Beam has that
signature. Importing the `transform` package applies this, and the Transform
executor imports it (via the preprocessing_fn import path) before it builds
its Beam pipeline.
"""
import inspect


def needs_patch() -> bool:
  from apache_beam import pipeline as beam_pipeline  # pylint: disable=g-import-not-at-top
  params = inspect.signature(beam_pipeline.AppliedPTransform.__init__).parameters
  required = [p for p in params.values()
              if p.default is inspect.Parameter.empty and p.name != "self"]
  return len(required) > 4


def apply() -> bool:
  """Disables TFT's deep-copy optimization if Beam is incompatible with it."""
  if not needs_patch():
    return False
  from tensorflow_transform.beam import context  # pylint: disable=g-import-not-at-top
  context.Context.get_use_deep_copy_optimization = classmethod(lambda cls: False)
  return True
