"""The TFDS MovieLens builders as a source: ``tfds:movielens/<config>``.

Configs 100k-ratings, 1m-ratings, 20m-ratings, 25m-ratings and
latest-small-ratings; the catalogue comes from the matching ``-movies``
config. Needs the TFDS data prepared in the TFDS data dir or internet access
to download it; offline the reader raises `IngestionError` telling the user
to pass a local GroupLens folder. TFDS already holds the contract's
encodings (`common.features` uses its names), so values are only converted
to Python types.
"""
from __future__ import annotations

import os
import socket
from typing import Iterator, Optional
from urllib import parse as urlparse

from common import features
from components.ingestion.base import (BadRowTracker, IngestionError, Row,
                                       Source)

TFDS_PREFIX = "tfds:"
TFDS_CONFIGS = {
    "100k-ratings": "100k",
    "1m-ratings": "1m",
    "20m-ratings": "current",
    "25m-ratings": "current",
    "latest-small-ratings": "current",
}
OFFLINE_HINT = ("Pass a local GroupLens MovieLens folder or .zip instead, "
                "e.g. --data ../shared/datasets/ml-100k (source=<path>), or "
                "prepare the TFDS data set where TFDS_DATA_DIR points.")


def check_download_reachable(url: str, timeout: float = 10.0) -> None:
  """Fails fast when the download host cannot be reached.

  TFDS retries a failing download for minutes; a quick connection attempt
  tells an offline machine at once. Skipped behind an HTTP(S) proxy.
  """
  if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy",
                                     "HTTP_PROXY", "http_proxy")):
    return
  host = urlparse.urlparse(url).hostname
  if not host:
    return
  with socket.create_connection((host, 443), timeout=timeout):
    pass


def tfds_config(source: str) -> str:
  """'tfds:movielens/100k-ratings' -> '100k-ratings' (checked)."""
  name = source[len(TFDS_PREFIX):].strip()
  dataset, _, config = name.partition("/")
  if dataset != "movielens" or config not in TFDS_CONFIGS:
    raise IngestionError(
        f"Unsupported TFDS source {source!r}: expected "
        + " or ".join(f"'{TFDS_PREFIX}movielens/{c}'" for c in TFDS_CONFIGS))
  return config


def _value(name: str, value: object) -> object:
  spec = features.FEATURES[name]
  if spec.varlen:
    return [int(v) if spec.dtype == features.INT64 else v for v in value]
  if spec.dtype == features.BYTES:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
  if spec.dtype == features.FLOAT:
    return float(value)
  return int(value)


class TfdsSource(Source):
  """`tfds:movielens/<config>` read with tfds.builder(...).as_dataset."""

  def __init__(self, source: str, tracker: Optional[BadRowTracker] = None,
               data_dir: Optional[str] = None):
    super().__init__(source, tracker)
    self.config = tfds_config(source)
    self.family = TFDS_CONFIGS[self.config]
    self.data_dir = data_dir
    self._unit = "example"

  def _dataset(self, config: str):
    # tensorflow_datasets takes seconds to import; only TFDS sources need it.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    name = f"movielens/{config}"
    try:
      builder = tfds.builder(name, data_dir=self.data_dir)
      if not builder.is_prepared():
        url = getattr(builder.builder_config, "download_url", None)
        if url:
          check_download_reachable(url)
        builder.download_and_prepare()
      dataset = builder.as_dataset(split="train")
    except Exception as e:  # pylint: disable=broad-except
      cause = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
      raise IngestionError(
          f"Could not read the TFDS data set {name} (offline? the download "
          f"failed: {type(e).__name__}{': ' + cause if cause else ''}). "
          + OFFLINE_HINT) from None
    return tfds.as_numpy(dataset)

  def _examples(self, config: str):
    """(1-based example number, example) of one config's train split."""
    number = 0
    try:
      for number, example in enumerate(self._dataset(config), start=1):
        yield number, example
    except IngestionError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (corrupt records)
      raise IngestionError(
          f"TFDS movielens/{config} example {number + 1} cannot be read "
          f"({type(e).__name__}: {str(e)[:300]})") from None

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r}")
    for number, example in self._examples(self.config):
      self.tracker.ok()
      self._line = number
      yield {k: _value(k, v) for k, v in example.items()
             if k in features.FEATURES}

  def catalogue(self) -> Iterator[Row]:
    movies = self.config.replace("-ratings", "-movies")
    for _, example in self._examples(movies):
      yield {k: _value(k, example[k]) for k in features.CATALOGUE_FEATURES}
