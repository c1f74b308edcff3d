"""The ingestion component: MovieLens (TFDS, GroupLens files) or own data.

    from components.ingestion import MovieLensExampleGen
    from components.ingestion import IngestionError, detect_source_family

The readers (base, files, grouplens, tfds_source, custom_config,
custom_source, multi_span, spans, sources; layout in sources.py) and
`ingest` need no TFX run; `MovieLensExampleGen` (component.py, executor.py)
is loaded on first use.
"""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from components.ingestion.base import IngestionError  # noqa: F401
from components.ingestion.sources import detect_source_family  # noqa: F401
from components.ingestion.sources import open_source  # noqa: F401

__all__ = ["MovieLensExampleGen", "MovieLensExampleGenSpec", "Executor",
           "IngestionError", "detect_source_family", "open_source"]


def __getattr__(name):
  # Lazy: component.py and executor.py import the TFX component machinery.
  if name in ("MovieLensExampleGen", "MovieLensExampleGenSpec"):
    from components.ingestion import component  # pylint: disable=g-import-not-at-top
    return getattr(component, name)
  if name == "Executor":
    from components.ingestion import executor  # pylint: disable=g-import-not-at-top
    return executor.Executor
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
