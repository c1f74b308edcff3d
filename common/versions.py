"""Pushed model versions on disk: the layout, completeness, atomic publishing.

One owner for what the Pusher writes, serving reads and retention prunes:

    <serving_dir>/<model>/<version>/      model: "retrieval" or "ranking";
                                          version: an integer (TF Serving
                                          layout), the newest complete one
                                          is served
    <serving_dir>/<model>/<version>/VERSION.json   written last: every other
                                          file of the version with its size

A version appears at once: `publish` copies the model into a hidden folder
beside the versions (`.pushing-<version>-<pid>`, a name neither TF Serving
nor serving/ ever reads), writes VERSION.json last and renames the folder to
its version number (one atomic rename on a local filesystem). A kill at any
point leaves either no version or a whole one; the hidden leftover is
removed by the next publish (`remove_leftovers`, callers hold the output
directory's runner lock).

A version is *complete* when VERSION.json is there and every file it lists
has its size: a truncated `variables.data`, a 0-byte `saved_model.pb` or a
cut `catalogue.jsonl` makes the version incomplete, and serving skips it for
the newest complete one. Versions pushed before VERSION.json existed are
judged by the older rule (saved_model.pb not empty, and for retrieval the
export's assets.extra/manifest.json); serving still skips them when they do
not load.

No TensorFlow here: retention and the runners use it without importing the
stack. Object stores (gs://, s3://) have no atomic folder rename: there the
files are copied in place and VERSION.json, written last, still marks the
version complete.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Dict, List, Optional, Tuple

RETRIEVAL = "retrieval"
RANKING = "ranking"
MODELS = (RETRIEVAL, RANKING)

VERSION_FILE = "VERSION.json"
# Hidden folders beside the versions (never integers, so never served).
PUSHING_PREFIX = ".pushing-"
DELETING_PREFIX = ".deleting-"
ROLLBACK_TMP_PREFIX = ".rollback-tmp-"
HIDDEN_PREFIXES = (PUSHING_PREFIX, DELETING_PREFIX, ROLLBACK_TMP_PREFIX)

# What an export written before VERSION.json must hold (the older rule).
_SAVED_MODEL = "saved_model.pb"
_LEGACY_RETRIEVAL_MANIFEST = os.path.join("assets.extra", "manifest.json")


class VersionError(Exception):
  """A version cannot be published (destination taken, source missing)."""


def is_local(path: str) -> bool:
  return "://" not in path


# ---------------------------------------------------------------------------
# Completeness.

def _files(root: str, walk=os.walk, size=os.path.getsize) -> Dict[str, int]:
  """Relative path → size of every file under root, VERSION.json excluded
  (walk / size: os's, or fileio's for a remote root)."""
  out = {}
  for dirpath, _, names in walk(root):
    for n in names:
      path = os.path.join(dirpath, n)
      rel = os.path.relpath(path, root)
      if rel != VERSION_FILE:
        out[rel.replace(os.sep, "/")] = size(path)
  return out


def _version_info(version_dir: str, model: str, source: Optional[str],
                  walk=os.walk, size=os.path.getsize) -> str:
  """The text of VERSION.json for version_dir as it is now."""
  return json.dumps({"model": model, "source": source or "",
                     "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "files": _files(version_dir, walk, size)},
                    indent=1, sort_keys=True)


def write_version_file(version_dir: str, model: str,
                       source: Optional[str] = None) -> None:
  """Lists every file of version_dir with its size in VERSION.json (last)."""
  text = _version_info(version_dir, model, source)
  tmp = os.path.join(version_dir, f".{VERSION_FILE}.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(version_dir, VERSION_FILE))


def read_version_file(version_dir: str) -> Optional[dict]:
  """VERSION.json of a version, or None when absent or unreadable."""
  try:
    with open(os.path.join(version_dir, VERSION_FILE), encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError):
    return None
  return info if isinstance(info, dict) and isinstance(info.get("files"), dict) else None


def why_incomplete(model: str, version_dir: str) -> Optional[str]:
  """None when version_dir is a complete version of model, else the reason
  (relative to version_dir: safe to show to a client)."""
  if os.path.exists(os.path.join(version_dir, VERSION_FILE)):
    info = read_version_file(version_dir)
    if info is None:
      return f"{VERSION_FILE} is unreadable"
    for rel, size in sorted(info["files"].items()):
      path = os.path.join(version_dir, *rel.split("/"))
      try:
        actual = os.path.getsize(path)
      except OSError:
        return f"{rel} is missing"
      if actual != size:
        return f"{rel} has {actual} bytes, {VERSION_FILE} says {size}"
    return None
  # Pushed before VERSION.json: the older rule.
  pb = os.path.join(version_dir, _SAVED_MODEL)
  if not os.path.exists(pb):
    return f"no {_SAVED_MODEL}"
  if os.path.getsize(pb) == 0:
    return f"{_SAVED_MODEL} is empty"
  if model == RETRIEVAL and not os.path.exists(
      os.path.join(version_dir, _LEGACY_RETRIEVAL_MANIFEST)):
    return f"no {_LEGACY_RETRIEVAL_MANIFEST}"
  return None


def is_complete(model: str, version_dir: str) -> bool:
  return why_incomplete(model, version_dir) is None


def version_dirs(model_dir: str, model: Optional[str] = None
                 ) -> Tuple[List[int], List[int]]:
  """(complete versions, incomplete versions) of model_dir, each ascending.

  model defaults to model_dir's folder name (`<serving_dir>/<model>`).
  """
  model = model or os.path.basename(os.path.normpath(model_dir))
  try:
    names = os.listdir(model_dir)
  except OSError:
    return [], []
  complete, incomplete = [], []
  for n in names:
    path = os.path.join(model_dir, n)
    if n.isdigit() and os.path.isdir(path):
      (complete if is_complete(model, path) else incomplete).append(int(n))
  return sorted(complete), sorted(incomplete)


def complete_versions(serving_dir: str, model: str) -> List[int]:
  """Complete versions of `<serving_dir>/<model>`, ascending."""
  return version_dirs(os.path.join(serving_dir, model), model)[0]


# ---------------------------------------------------------------------------
# Publishing.

def remove_leftovers(model_dir: str) -> List[str]:
  """Removes hidden folders of interrupted pushes, deletions and rollbacks.

  Only safe while nobody else writes to model_dir (the runner lock).
  Returns the removed paths.
  """
  removed = []
  try:
    names = os.listdir(model_dir)
  except OSError:
    return removed
  for n in names:
    if n.startswith(HIDDEN_PREFIXES):
      path = os.path.join(model_dir, n)
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def find_published(model_dir: str, model: str, source: str) -> Optional[int]:
  """The newest complete version, when it was published from `source` (a
  push renamed into place but not recorded by its run); else None."""
  complete = version_dirs(model_dir, model)[0]
  if not complete or not source:
    return None
  info = read_version_file(os.path.join(model_dir, str(complete[-1])))
  return complete[-1] if info and info.get("source") == source else None


def staging_dir(model_dir: str, version: int) -> str:
  """The hidden folder a version is assembled in before its rename."""
  return os.path.join(model_dir, f"{PUSHING_PREFIX}{version}-{os.getpid()}")


def publish_dir(staged: str, model_dir: str, version: int, model: str,
                source: Optional[str] = None) -> str:
  """Writes VERSION.json into `staged` and renames it to `<model_dir>/<version>`.

  `staged` must be a folder inside model_dir (see staging_dir). Returns the
  version's path; VersionError if that version exists already.
  """
  dst = os.path.join(model_dir, str(version))
  if os.path.exists(dst):
    raise VersionError(f"{model} version {version} exists already: {dst}")
  write_version_file(staged, model, source)
  os.rename(staged, dst)  # atomic on one filesystem: the version appears whole
  return dst


def publish(source_dir: str, model_dir: str, version: int, model: str,
            source: Optional[str] = None,
            copy_dir=None) -> str:
  """Copies source_dir to the new version `<model_dir>/<version>` atomically.

  copy_dir(src, dst) defaults to shutil.copytree; the Pusher passes TFX's
  io_utils.copy_dir so sources on any TFX filesystem work. On a remote
  model_dir the files are copied in place and VERSION.json goes last.
  """
  copy_dir = copy_dir or (lambda s, d: shutil.copytree(s, d, symlinks=True))
  if not is_local(model_dir):
    dst = os.path.join(model_dir, str(version))
    copy_dir(source_dir, dst)
    _write_remote_version_file(dst, model, source)
    return dst
  os.makedirs(model_dir, exist_ok=True)
  staged = staging_dir(model_dir, version)
  if os.path.exists(staged):
    shutil.rmtree(staged)
  copy_dir(source_dir, staged)
  return publish_dir(staged, model_dir, version, model, source)


def _write_remote_version_file(version_dir: str, model: str,
                               source: Optional[str]) -> None:
  from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
  text = _version_info(version_dir, model, source, fileio.walk,
                       lambda path: fileio.stat(path).length)
  with fileio.open(os.path.join(version_dir, VERSION_FILE), "w") as f:
    f.write(text)


def next_version(model_dir: str, clock=time.time) -> int:
  """max(now in seconds, highest version on disk + 1): the Pusher's
  clock-based numbering, never reusing or going below an existing number."""
  try:
    taken = [int(n) for n in os.listdir(model_dir) if n.isdigit()]
  except OSError:
    taken = []
  return max([int(clock())] + [t + 1 for t in taken])

