"""Code shared by every stage: the feature contract and process set-up.

Importing this package is the one place where the process is prepared for the
stack: TensorFlow Recommenders needs Keras 2 (tf-keras), which TensorFlow 2.16
only uses when TF_USE_LEGACY_KERAS=1 is set before TensorFlow resolves
`tf.keras`. Every package of this project imports `common` first, so every
entry point (runners, tests, the Kubeflow container via the installed package)
goes through here.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA plugin probes on a CPU machine) is
# noise here; real failures still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# google-api-core (pulled in by TFX) warns on every start that Python 3.10 is
# no longer supported by Google's client libraries; TFX 1.16 needs 3.10.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")
