"""create_pipeline() and its configs: the TFX wiring, no ML code and no
runner operations (those are in runners/)."""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
