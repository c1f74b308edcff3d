"""tf.Transform preprocessing (preprocessing.py) and a Beam compatibility fix."""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from transform import beam_compat

beam_compat.apply()
