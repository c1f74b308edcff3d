"""components package.

The gates' custom artifact types are also reachable as
`components.<TypeName>`: a KFP v2 schema title must read
"<module>.<Name>" (one dot, TFX's compiler checks it) and TFX's Kubeflow
entrypoint imports the class by that title, so the types' TYPE_NAMEs are
these paths (resolved lazily, so importing the package stays cheap).
"""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

_ARTIFACT_TYPES = {
    "DataValidationResult": "components.validation_gate",
    "DataDriftResult": "components.drift_gate",
}


def __getattr__(name):
  if name in _ARTIFACT_TYPES:
    import importlib  # pylint: disable=g-import-not-at-top
    return getattr(importlib.import_module(_ARTIFACT_TYPES[name]), name)
  raise AttributeError(f"module 'components' has no attribute {name!r}")
