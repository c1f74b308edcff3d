"""Retention after each successful run, and rollback of a pushed model.

Scheduled retraining pushes a new version and leaves a new pipeline run's
artifacts behind on every tick; without pruning the disk fills up. Two
independent settings (0 = keep everything):

**Pushed versions** (`prune_versions`, --keep-versions N, default 5): in
`<serving>/<model>/` the newest N *complete* versions stay. Never deleted:

* the newest complete version: what serving/recommender.py and TF Serving
  (highest version) serve now;
* versions listed in `<serving>/<model>/KEEP` (version numbers, one per line,
  `#` comments). serving/ pins only in-process (`recommend --version N`, a TF
  Serving `specific` version policy) where retention cannot see it: write
  such a version into KEEP to keep it;
* incomplete version folders (common/versions.py: VERSION.json missing or a
  file not of the size it lists). The ServingPusher renames a version into
  place whole, so an incomplete folder is a damaged version or one written
  by another tool: not counted, not deleted, listed so it can be looked at.

A version is deleted by renaming it to `.deleting-<version>-...` first (one
atomic rename; neither serving/recommender.py nor TF Serving read folders that
are not integers) and only then removing the files, so no reader ever sees a
half-deleted version. Leftovers of an interrupted deletion, push or rollback
(the hidden folders of common/versions.py) are removed on the next prune.

**Pipeline runs** (`prune_runs`, --keep-runs N, default 10): the artifacts of
`pipeline_run` contexts older than the newest N are deleted from disk and
marked DELETED in ML Metadata. TFX then ignores them: input resolution takes
LIVE artifacts only (portable/input_resolution/channel_resolver.py, so the
blessed-model resolvers too) and the executor cache rejects an execution
whose outputs are not all LIVE and recomputes (portable/cache_utils.py).
Never deleted:

* everything produced *or used* by the newest N successful runs and by the
  newest N failed runs, counted apart (a cached execution of a new run points
  at artifacts of an old one; a string of failed runs never pushes the last
  good ones out);
* the run that pushed each model served now (the newest complete version, or
  the original of a rollback copy) and its log;
* per evaluator, the latest blessed model and its blessing: the next run's
  baseline (and a warm-start source), plus the non-Examples inputs of the
  execution that trained it (its TransformGraph, schema, base model): what it
  takes to reuse or inspect the model without retraining. Its training
  examples are not kept: nobody retrains an old model, and they are the bulk;
* anything of a run with executions still NEW/RUNNING, and PENDING artifacts
  (a run killed half-way stays RUNNING in MLMD and is therefore kept: a
  little disk, against ever deleting under a live run);
* anything outside the pipeline root (imported/external URIs).

Artifacts are marked DELETED first (one MLMD transaction) and removed from
disk after, so a crash in between leaves orphan files, never a LIVE artifact
without files. The executor scratch folders of the pruned runs' executions
(`<root>/<node>/.system/executor_execution/<id>`) and run logs beyond the
newest N successful and N failed ones (`prune_logs`; a log is a success's
when it ends with runners/progress.py FINISHED_MARK) go too. Executions, contexts and lineage stay in
ML Metadata: they are small, and the history remains queryable.

**Rollback** (`rollback`) copies an older complete version to a new, highest
version number (copy into a hidden temp folder beside it, VERSION.json
written last, then one atomic rename) with ROLLBACK.json recording the
source, so everything that serves "the highest complete version" switches to
it without retraining.

Callers hold the output directory's runner lock (runners/schedule.py), so
no local Pusher writes versions while these run.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import time
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from common import versions
from common.versions import DELETING_PREFIX, MODELS, ROLLBACK_TMP_PREFIX
from common.versions import version_dirs
from runners import progress

PIN_FILE = "KEEP"
ROLLBACK_FILE = "ROLLBACK.json"
DEFAULT_KEEP_VERSIONS = 5
DEFAULT_KEEP_RUNS = 10

# Types whose artifacts the latest blessed model does not need kept.
_BULK_TYPES = {"Examples"}


class RetentionError(Exception):
  """Bad request (unknown model, missing version, ...); message says why."""


def _size(path: str) -> int:
  if os.path.isfile(path) or os.path.islink(path):
    return os.lstat(path).st_size
  total = 0
  for root, _, files in os.walk(path):
    for f in files:
      try:
        total += os.lstat(os.path.join(root, f)).st_size
      except OSError:
        pass
  return total


def human_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1024 or unit == "GB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TB"


def safe_delete(path: str) -> int:
  """Renames `path` to a hidden `.deleting-*` sibling, then removes it.

  Returns the bytes freed. The rename is atomic: a reader listing the parent
  sees the folder whole or not at all.
  """
  size = _size(path)
  parent, name = os.path.split(os.path.abspath(path))
  if not os.path.isdir(path):
    os.remove(path)
    return size
  doomed = os.path.join(parent, f"{DELETING_PREFIX}{name}-{os.getpid()}-"
                                f"{time.time_ns()}")
  os.rename(path, doomed)
  shutil.rmtree(doomed, ignore_errors=True)
  return size


# ---------------------------------------------------------------------------
# Pushed versions.

def read_pins(model_dir: str) -> Set[int]:
  """Version numbers in `<model_dir>/KEEP` (RetentionError if unreadable)."""
  path = os.path.join(model_dir, PIN_FILE)
  if not os.path.exists(path):
    return set()
  pins = set()
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      for token in line.split("#", 1)[0].split():
        if not token.isdigit():
          raise RetentionError(
              f"{path}:{n}: {token!r} is not a version number (one integer "
              "version per line, # comments)")
        pins.add(int(token))
  return pins


@dataclasses.dataclass
class Deleted:
  what: str
  path: str
  size: int
  detail: bool = True  # False: counted in one summary line, not listed


def _finish_interrupted(parent: str, deleted: List[Deleted]) -> None:
  """Removes leftovers of an interrupted deletion or rollback (ours alone:
  callers hold the runner lock)."""
  try:
    names = os.listdir(parent)
  except OSError:
    return
  for n in names:
    if n.startswith(versions.HIDDEN_PREFIXES):
      p = os.path.join(parent, n)
      size = _size(p)
      shutil.rmtree(p, ignore_errors=True)
      deleted.append(Deleted("leftover of an interrupted push/deletion/rollback",
                             p, size))


def prune_versions(serving_dir: str, keep: int, models: Iterable[str] = MODELS,
                   say: Callable[[str], None] = print) -> List[Deleted]:
  """Deletes all but the newest `keep` complete versions of each model.

  The newest complete version, versions listed in KEEP and incomplete folders are
  never deleted (module docstring). keep <= 0 keeps everything.
  """
  deleted: List[Deleted] = []
  if keep <= 0:
    return deleted
  for model in models:
    model_dir = os.path.join(serving_dir, model)
    if not os.path.isdir(model_dir):
      continue
    _finish_interrupted(model_dir, deleted)
    complete, incomplete = version_dirs(model_dir)
    pins = read_pins(model_dir)
    keep_set = set(complete[-keep:]) | pins
    for v in sorted(pins - set(complete)):
      say(f"  note: {model} version {v} is listed in {PIN_FILE} but not a "
          "complete version here")
    for v in incomplete:
      why = versions.why_incomplete(model, os.path.join(model_dir, str(v)))
      say(f"  left alone: {model}/{v} is incomplete ({why}): serving skips "
          "it; delete it by hand once looked at")
    for v in complete:
      if v in keep_set:
        continue
      path = os.path.join(model_dir, str(v))
      deleted.append(Deleted(f"{model} version {v}", path, safe_delete(path)))
  return deleted


# ---------------------------------------------------------------------------
# Rollback.

def _origin(model_dir: str, version: int) -> Tuple[int, Optional[int]]:
  """(original version, version it replaced) of a version (rollback copies
  record both in ROLLBACK.json; a pushed version is its own origin)."""
  path = os.path.join(model_dir, str(version), ROLLBACK_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
    return int(info["origin_version"]), info.get("replaced_version")
  except (OSError, ValueError, KeyError, TypeError):
    return version, None


def previous_version(model_dir: str) -> int:
  """What was served before the current (newest complete) version.

  The newest complete version below the current one, skipping copies of the
  model served now and versions a rollback already moved away from, so
  rolling back twice goes two steps back instead of returning to the bad
  model.
  """
  complete, _ = version_dirs(model_dir)
  if len(complete) < 2:
    raise RetentionError(
        f"nothing to roll back to in {model_dir}: complete versions "
        f"{complete or 'none'} (need an older one)")
  current = complete[-1]
  current_origin, _ = _origin(model_dir, current)
  # Models rolled away from (by their original version): never "previous".
  replaced = {_origin(model_dir, r)[0] for r in
              (_origin(model_dir, v)[1] for v in complete) if r is not None}
  for v in reversed(complete[:-1]):
    origin, _ = _origin(model_dir, v)
    if origin != current_origin and origin not in replaced:
      return v
  raise RetentionError(
      f"no earlier version to roll back to in {model_dir}: versions {complete}, "
      f"current {current} (= {current_origin}); older ones were rolled back "
      "from already. Name one: --rollback MODEL=VERSION")


def rollback(serving_dir: str, model: str, version: Optional[int] = None,
             clock: Callable[[], float] = time.time) -> Dict[str, object]:
  """Serves `version` (default: previous_version) again as a new version.

  The copy gets number max(newest + 1, now): higher than anything on disk,
  and on the Pusher's clock-based numbering so later pushes still come after
  it. Returns {"model", "source_version", "new_version", "replaced_version",
  "path"}.
  """
  if model not in MODELS:
    raise RetentionError(f"unknown model {model!r}: use one of {', '.join(MODELS)}")
  model_dir = os.path.join(serving_dir, model)
  complete, _ = version_dirs(model_dir)
  if not complete:
    raise RetentionError(f"no complete {model} versions under {model_dir}: "
                         "nothing has been pushed yet")
  if version is None:
    version = previous_version(model_dir)
  elif version not in complete:
    raise RetentionError(f"{model} version {version} is not a complete version "
                         f"under {model_dir} (complete: {complete})")
  current = complete[-1]
  origin, _ = _origin(model_dir, version)
  if version == current or origin == _origin(model_dir, current)[0]:
    raise RetentionError(f"{model} version {version} is already the served "
                         f"model (current version {current})")
  highest = max(complete + version_dirs(model_dir)[1])
  new_version = max(highest + 1, int(clock()))
  src = os.path.join(model_dir, str(version))
  tmp = os.path.join(model_dir, f"{ROLLBACK_TMP_PREFIX}{new_version}-{os.getpid()}")
  shutil.copytree(src, tmp, symlinks=True)
  try:
    os.remove(os.path.join(tmp, ROLLBACK_FILE))  # a copy of a copy: rewritten
  except FileNotFoundError:
    pass
  source = (versions.read_version_file(src) or {}).get("source", "")
  info = {"source_version": version, "origin_version": origin,
          "replaced_version": current, "new_version": new_version,
          "time": datetime.datetime.fromtimestamp(clock()).astimezone().isoformat(
              timespec="seconds"),
          "user": os.environ.get("USER", "")}
  with open(os.path.join(tmp, ROLLBACK_FILE), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  # VERSION.json last, then one rename: the new version appears whole.
  dst = versions.publish_dir(tmp, model_dir, new_version, model,
                             source=f"rollback of version {version}: {source}")
  return {"model": model, "source_version": version, "new_version": new_version,
          "replaced_version": current, "path": dst}


def served_versions(serving_dir: Optional[str]) -> Dict[str, int]:
  """{model: version} of what each model serves now, as pushed: the newest
  complete version, or for a rollback copy the version it copies."""
  out: Dict[str, int] = {}
  if not serving_dir:
    return out
  for model in MODELS:
    model_dir = os.path.join(serving_dir, model)
    complete, _ = version_dirs(model_dir)
    if complete:
      out[model] = _origin(model_dir, complete[-1])[0]
  return out


# ---------------------------------------------------------------------------
# Pipeline runs in ML Metadata.

@dataclasses.dataclass
class RunPruneResult:
  deleted: List[Deleted]
  pruned_runs: List[str]
  kept_runs: List[str]
  protected_blessed: List[str]


def _store(metadata_path: str):
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE)
  return metadata_store.MetadataStore(config)


def _int_prop(artifact, key) -> Optional[int]:
  for props in (artifact.custom_properties, artifact.properties):
    if key in props:
      v = props[key]
      kind = v.WhichOneof("value")
      if kind == "int_value":
        return v.int_value
      if kind == "double_value":
        return int(v.double_value)
      if kind == "string_value" and v.string_value.lstrip("-").isdigit():
        return int(v.string_value)
  return None


def _inside(path: str, root: str) -> bool:
  path, root = os.path.realpath(path), os.path.realpath(root)
  return path != root and os.path.commonpath([path, root]) == root


def prune_runs(metadata_path: str, pipeline_root: str, pipeline_name: str,
               keep: int, serving_dir: Optional[str] = None) -> RunPruneResult:
  """Deletes artifacts of `pipeline_name`'s runs beyond the newest `keep`
  successful and `keep` failed ones.

  See the module docstring for what is protected (with serving_dir: the
  runs that pushed the models served now). keep <= 0 keeps all.
  """
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  result = RunPruneResult([], [], [], [])
  if keep <= 0 or not os.path.exists(metadata_path):
    return result
  store = _store(metadata_path)
  pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
  if pipeline_ctx is None:
    return result
  in_pipeline = {e.id: e for e in store.get_executions_by_context(pipeline_ctx.id)}
  runs = []  # (context, executions)
  for ctx in store.get_contexts_by_type("pipeline_run"):
    execs = [e for e in store.get_executions_by_context(ctx.id) if e.id in in_pipeline]
    if execs:
      runs.append((ctx, execs))
  runs.sort(key=lambda r: (r[0].create_time_since_epoch, r[0].id), reverse=True)
  unfinished = {pb.Execution.NEW, pb.Execution.RUNNING}
  failed = [r for r in runs if any(e.last_known_state == pb.Execution.FAILED
                                   for e in r[1])]
  succeeded = [r for r in runs if r not in failed]
  served = _serving_runs(store, runs, served_versions(serving_dir))
  kept = [r for r in runs
          if r in succeeded[:keep] or r in failed[:keep] or r[0].id in served
          or any(e.last_known_state in unfinished for e in r[1])]
  old = [r for r in runs if r not in kept]
  result.kept_runs = [c.name for c, _ in kept]
  if not old:
    return result

  def linked(run_list) -> Set[int]:
    ids: Set[int] = set()
    for ctx, execs in run_list:
      ids.update(a.id for a in store.get_artifacts_by_context(ctx.id))
      ids.update(ev.artifact_id for ev in
                 store.get_events_by_execution_ids([e.id for e in execs]))
    return ids

  protected = linked(kept)
  protected |= _latest_blessed(store, in_pipeline, result.protected_blessed)
  candidates = linked(old) - protected
  artifacts = store.get_artifacts_by_id(sorted(candidates)) if candidates else []
  protected_uris = [a.uri for a in store.get_artifacts_by_id(sorted(protected))
                    if a.uri] if protected else []
  doomed = []
  for a in artifacts:
    if a.state in (pb.Artifact.DELETED, pb.Artifact.PENDING) or not a.uri:
      continue
    if not _inside(a.uri, pipeline_root):
      continue  # external / imported data: not ours to delete
    if any(_inside(u, a.uri) or os.path.realpath(u) == os.path.realpath(a.uri)
           for u in protected_uris):
      continue  # shares files with something protected
    doomed.append(a)
  if doomed:
    for a in doomed:
      a.state = pb.Artifact.DELETED
    store.put_artifacts(doomed)  # one transaction, before any file goes
  types = {t.id: t.name for t in store.get_artifact_types()}
  _delete_execution_scratch(store, pipeline_root, pipeline_name,
                            [e for _, execs in old for e in execs], result.deleted)
  for a in doomed:
    if os.path.lexists(a.uri):
      size = safe_delete(a.uri)
      result.deleted.append(Deleted(f"{types.get(a.type_id, 'artifact')} #{a.id}",
                                    a.uri, size))
  result.pruned_runs = [c.name for c, _ in old]
  return result


def _serving_runs(store, runs, served: Dict[str, int]) -> Set[int]:
  """Ids of the pipeline_run contexts whose Pusher pushed a served version
  (PushedModel pushed=1 with that pushed_version)."""
  if not served:
    return set()
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  try:
    pushed = store.get_artifacts_by_type("PushedModel")
  except Exception:  # pylint: disable=broad-except
    return set()
  wanted = {str(v) for v in served.values()}
  ids = [a.id for a in pushed if _int_prop(a, "pushed") == 1
         and a.custom_properties.get("pushed_version") is not None
         and a.custom_properties["pushed_version"].string_value in wanted]
  if not ids:
    return set()
  producers = {ev.execution_id for ev in store.get_events_by_artifact_ids(ids)
               if ev.type == pb.Event.OUTPUT}
  return {ctx.id for ctx, execs in runs if any(e.id in producers for e in execs)}


def _delete_execution_scratch(store, pipeline_root, pipeline_name, executions,
                              deleted: List[Deleted]) -> None:
  """Removes `<root>/<node>/.system/executor_execution/<id>` of finished
  executions of pruned runs (executor scratch space and outputs; read only
  while the execution runs)."""
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  finished = {pb.Execution.COMPLETE, pb.Execution.CACHED, pb.Execution.FAILED,
              pb.Execution.CANCELED}
  node_type = store.get_context_type("node")
  for e in executions:
    if e.last_known_state not in finished:
      continue
    for ctx in store.get_contexts_by_execution(e.id):
      if ctx.type_id != node_type.id or not ctx.name.startswith(pipeline_name + "."):
        continue
      path = os.path.join(pipeline_root, ctx.name[len(pipeline_name) + 1:],
                          ".system", "executor_execution", str(e.id))
      if os.path.isdir(path) and _inside(path, pipeline_root):
        deleted.append(Deleted(f"scratch of execution #{e.id}", path,
                               safe_delete(path), detail=False))


def _latest_blessed(store, in_pipeline, names: List[str]) -> Set[int]:
  """Ids of each evaluator's latest blessed Model + blessing + the model's
  non-bulk training inputs (what LatestBlessedModelStrategy would return)."""
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  try:
    blessings = store.get_artifacts_by_type("ModelBlessing")
  except Exception:  # pylint: disable=broad-except
    return set()
  blessings = [b for b in blessings if b.state == pb.Artifact.LIVE
               and _int_prop(b, "blessed") == 1
               and _int_prop(b, "current_model_id") is not None]
  if not blessings:
    return set()
  events = store.get_events_by_artifact_ids([b.id for b in blessings])
  producer = {ev.artifact_id: ev.execution_id for ev in events
              if ev.type == pb.Event.OUTPUT and ev.execution_id in in_pipeline}
  node_type = store.get_context_type("node")
  by_node: Dict[str, list] = {}
  for b in blessings:
    execution_id = producer.get(b.id)
    if execution_id is None:
      continue
    node = next((c.name for c in store.get_contexts_by_execution(execution_id)
                 if c.type_id == node_type.id), str(execution_id))
    by_node.setdefault(node, []).append(b)
  ids: Set[int] = set()
  type_names = {t.id: t.name for t in store.get_artifact_types()}
  for node, group in sorted(by_node.items()):
    model_ids = {_int_prop(b, "current_model_id"): b for b in group}
    live_models = [m for m in store.get_artifacts_by_id(sorted(model_ids))
                   if m.state == pb.Artifact.LIVE]
    if not live_models:
      continue
    model = max(live_models, key=lambda m: m.id)
    ids.update({model.id, model_ids[model.id].id})
    names.append(f"{node.split('.', 1)[-1]}: Model #{model.id}")
    trainer_execs = [ev.execution_id for ev in store.get_events_by_artifact_ids([model.id])
                     if ev.type == pb.Event.OUTPUT]
    if trainer_execs:
      inputs = [ev.artifact_id for ev in store.get_events_by_execution_ids(trainer_execs)
                if ev.type == pb.Event.INPUT]
      for a in store.get_artifacts_by_id(inputs):
        if type_names.get(a.type_id) not in _BULK_TYPES:
          ids.add(a.id)
  return ids


def _log_time(name: str) -> Optional[float]:
  """Start time (epoch seconds) of run-<YYYYmmdd-HHMMSS>.log, local time."""
  stamp = name[len(progress.LOG_PREFIX):-len(".log")]
  try:
    return time.mktime(time.strptime(stamp, progress.LOG_STAMP))
  except ValueError:
    return None


def _log_succeeded(path: str) -> bool:
  """Whether the log ends with progress.FINISHED_MARK (read from its tail)."""
  try:
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - 64 * 1024))
      return progress.FINISHED_MARK.encode() in f.read()
  except OSError:
    return False


def prune_logs(log_dir: str, keep: int, serving_dir: Optional[str] = None
               ) -> List[Deleted]:
  """Keeps the newest `keep` logs of successful runs, the newest `keep` of
  failed runs, and the log of the run behind each served version (the
  newest log started before that version was pushed)."""
  if keep <= 0 or not os.path.isdir(log_dir):
    return []
  logs = sorted(n for n in os.listdir(log_dir)
                if n.startswith(progress.LOG_PREFIX) and n.endswith(".log"))
  ok = [n for n in logs if _log_succeeded(os.path.join(log_dir, n))]
  failed = [n for n in logs if n not in ok]
  kept = set(ok[-keep:]) | set(failed[-keep:])
  for version in served_versions(serving_dir).values():
    before = [n for n in logs if (_log_time(n) or 0) <= version]
    if before:
      kept.add(before[-1])
  out = []
  for n in logs:
    if n not in kept:
      p = os.path.join(log_dir, n)
      out.append(Deleted("log", p, safe_delete(p)))
  return out


def report(deleted: List[Deleted], say: Callable[[str], None] = print) -> int:
  """Prints each deletion and the total; returns the bytes freed."""
  total = sum(d.size for d in deleted)
  for d in deleted:
    if d.detail:
      say(f"  deleted {d.what}: {d.path} ({human_bytes(d.size)})")
  rest = [d for d in deleted if not d.detail]
  if rest:
    say(f"  deleted executor scratch folders of {len(rest)} old execution(s) "
        f"({human_bytes(sum(d.size for d in rest))})")
  return total
