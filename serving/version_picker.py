"""Which pushed version of a model serving loads: the newest usable one.

common/versions.py says whether a version folder is complete (the sizes in
VERSION.json, or the older rule for versions pushed before it); some damage
only loading shows (a SavedModel that does not load, a catalogue that does
not parse). A damaged newest version must not take serving down while an
older good one is on disk, so `VersionPicker.pick` walks the versions from
the newest, skips the incomplete and the unloadable ones with a warning that
names the version and the reason, and stops at the first that loads (or at
the one already loaded, which keeps serving). A version that failed to load
is remembered with a fingerprint of its files and not loaded again until
they change, so a bad push costs one load, not one per reload check.

Reasons are relative to the version folder (absolute paths of the server are
cut out of exception texts): /healthz shows them to clients.

No TensorFlow here: `load` is the caller's.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from common import versions
from serving.errors import RecommenderError

log = logging.getLogger(__name__)

KEEP = object()  # pick(): the loaded version is still the one to serve
_MAX_REASON_CHARS = 300
# An absolute path inside an exception text (after the version folder's own
# prefix was cut): replaced by its last component.
_ABS_PATH = re.compile(r"(?<![\w.~:/-])(/[^\s'\"():;,/]+)+/([^\s'\"():;,/]*)")


def resolve_serving_dir(path: str) -> str:
  """`path` itself, or `path/serving` when path is a run's output dir."""
  path = os.path.abspath(path)
  if not os.path.isdir(os.path.join(path, versions.RETRIEVAL)) and os.path.isdir(
      os.path.join(path, "serving", versions.RETRIEVAL)):
    return os.path.join(path, "serving")
  return path


@dataclasses.dataclass(frozen=True)
class Skip:
  """A version passed over, and why."""
  model: str
  version: int
  reason: str

  def __str__(self) -> str:
    return f"{self.model} version {self.version} skipped: {self.reason}"


def describe_error(exc: BaseException, version_dir: str) -> str:
  """One line about a failed load, without the server's absolute paths."""
  text = str(exc).strip().splitlines()
  text = text[0].strip() if text else ""
  for prefix in {version_dir, os.path.realpath(version_dir)}:
    text = text.replace(prefix + os.sep, "").replace(prefix, ".")
  text = _ABS_PATH.sub(lambda m: m.group(2) or "/", text)
  text = f"does not load ({type(exc).__name__}: {text})" if text else (
      f"does not load ({type(exc).__name__})")
  return text if len(text) <= _MAX_REASON_CHARS else (
      text[:_MAX_REASON_CHARS - 3] + "...")


def _fingerprint(version_dir: str) -> Tuple:
  """Every file's (path, size, mtime): changes when the version is rewritten."""
  out = []
  for dirpath, _, names in os.walk(version_dir):
    for n in names:
      path = os.path.join(dirpath, n)
      try:
        st = os.stat(path)
      except OSError:
        continue
      out.append((os.path.relpath(path, version_dir), st.st_size, st.st_mtime_ns))
  return tuple(sorted(out))


class VersionPicker:
  """The versions of `<serving_dir>/<model>` and the ones that are bad."""

  def __init__(self, serving_dir: str, model: str):
    self.serving_dir = serving_dir
    self.model = model
    self.model_dir = os.path.join(serving_dir, model)
    self._failed: Dict[int, Tuple[Tuple, str]] = {}  # version → (fingerprint, reason)
    self._warned: Set[Tuple[int, str]] = set()

  def version_dir(self, version: int) -> str:
    return os.path.join(self.model_dir, str(version))

  def on_disk(self) -> List[int]:
    """Every integer version folder, newest first (complete or not)."""
    try:
      names = os.listdir(self.model_dir)
    except OSError:
      return []
    return sorted((int(n) for n in names if n.isdigit()
                   and os.path.isdir(os.path.join(self.model_dir, n))),
                  reverse=True)

  def why_unusable(self, version: int) -> Optional[str]:
    """Why `version` cannot be served (incomplete, or failed to load and not
    changed since), or None when it is worth loading."""
    vdir = self.version_dir(version)
    reason = versions.why_incomplete(self.model, vdir)
    if reason is not None:
      return reason
    failed = self._failed.get(version)
    if failed is not None and failed[0] == _fingerprint(vdir):
      return failed[1]
    return None

  def _load(self, version: int, load: Callable[[str], Any]) -> Tuple[Any, Optional[str]]:
    vdir = self.version_dir(version)
    try:
      return load(vdir), None
    except Exception as e:  # pylint: disable=broad-except
      reason = describe_error(e, vdir)
      self._failed[version] = (_fingerprint(vdir), reason)
      log.debug("%s version %s does not load", self.model, version, exc_info=True)
      return None, reason

  def _skip(self, version: int, reason: str) -> Skip:
    skip = Skip(self.model, version, reason)
    if (version, reason) not in self._warned:
      self._warned.add((version, reason))
      log.warning("%s", skip)
    return skip

  def pick(self, current: Optional[int], load: Callable[[str], Any]
           ) -> Tuple[Optional[int], Any, List[Skip]]:
    """(version, loaded model or KEEP, versions skipped above it).

    `current` is the version loaded now (None: nothing loaded); reaching it
    returns KEEP without loading it again. (None, None, skips) when no
    version is usable.
    """
    skips = []
    for version in self.on_disk():
      reason = self.why_unusable(version)
      if reason is None:
        if version == current:
          return version, KEEP, skips
        loaded, reason = self._load(version, load)
        if reason is None:
          return version, loaded, skips
      skips.append(self._skip(version, reason))
    return None, None, skips

  def load_pinned(self, version: int, load: Callable[[str], Any]) -> Any:
    """The pinned version loaded, or RecommenderError in one sentence."""
    on_disk = self.on_disk()
    if version not in on_disk:
      raise RecommenderError(
          f"Pinned {self.model} version {version} not found under "
          f"{self.model_dir} (versions on disk: "
          f"{sorted(on_disk) or 'none'})")
    reason = self.why_unusable(version)
    if reason is None:
      loaded, reason = self._load(version, load)
      if reason is None:
        return loaded
    raise RecommenderError(f"Pinned {self.model} version {version} under "
                           f"{self.model_dir} is not usable: {reason}")
