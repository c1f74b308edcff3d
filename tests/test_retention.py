"""Retention of pushed versions and pipeline runs, and rollback.

The fast part works on version folders with fake saved_model.pb files; the
slow part runs a tiny real TFX pipeline (Python-function components, a
latest-blessed-model resolver) several times with LocalDagRunner, prunes the
old runs and runs again.
"""
import json
import os

import pytest

from common import versions

from runners import retention


def _push(serving, model, version, complete=True, payload=None):
  d = os.path.join(serving, model, str(version))
  os.makedirs(os.path.join(d, "variables"), exist_ok=True)
  with open(os.path.join(d, "variables", "variables.data"), "w") as f:
    f.write(payload or f"{model} weights of {version}")
  if complete:
    with open(os.path.join(d, "saved_model.pb"), "w") as f:
      f.write(f"graph {version}")
    if model == "retrieval":
      os.makedirs(os.path.join(d, "assets.extra"), exist_ok=True)
      with open(os.path.join(d, "assets.extra", "manifest.json"), "w") as f:
        f.write("{}")
  return d


def _versions(serving, model):
  return sorted(int(n) for n in os.listdir(os.path.join(serving, model))
                if n.isdigit())


def _tree(path):
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      p = os.path.join(root, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, path)] = fh.read()
  return out


# ---------------------------------------------------------------------------
# Pushed versions.

def test_keeps_newest_n_complete_versions(tmp_path):
  serving = str(tmp_path / "serving")
  for v in (100, 200, 300, 400, 500):
    _push(serving, "ranking", v)
    _push(serving, "retrieval", v)
  lines = []
  deleted = retention.prune_versions(serving, keep=2, say=lines.append)
  assert _versions(serving, "ranking") == [400, 500]
  assert _versions(serving, "retrieval") == [400, 500]
  assert len(deleted) == 6 and all(d.size > 0 for d in deleted)
  # No `.deleting-*` leftovers, nothing else touched.
  assert sorted(os.listdir(os.path.join(serving, "ranking"))) == ["400", "500"]


def test_keep_zero_keeps_everything(tmp_path):
  serving = str(tmp_path / "serving")
  for v in (1, 2, 3):
    _push(serving, "ranking", v)
  assert retention.prune_versions(serving, keep=0) == []
  assert _versions(serving, "ranking") == [1, 2, 3]


def test_never_deletes_pinned_or_incomplete_and_newest_complete_is_kept(tmp_path):
  serving = str(tmp_path / "serving")
  for v in (10, 20, 30, 40):
    _push(serving, "retrieval", v)
  # 50: being pushed (no saved_model.pb yet); 5: retrieval without manifest.
  _push(serving, "retrieval", 50, complete=False)
  d5 = _push(serving, "retrieval", 5)
  os.remove(os.path.join(d5, "assets.extra", "manifest.json"))
  with open(os.path.join(serving, "retrieval", "KEEP"), "w") as f:
    f.write("# pinned by recommend --version 10\n10\n")
  lines = []
  retention.prune_versions(serving, keep=1, models=["retrieval"], say=lines.append)
  # 40 = newest complete (served), 10 = pinned, 5 and 50 = incomplete.
  assert _versions(serving, "retrieval") == [5, 10, 40, 50]
  assert any("retrieval/50 is incomplete" in l for l in lines)


def test_bad_pin_file_is_a_clear_error(tmp_path):
  serving = str(tmp_path / "serving")
  _push(serving, "ranking", 1)
  _push(serving, "ranking", 2)
  with open(os.path.join(serving, "ranking", "KEEP"), "w") as f:
    f.write("v1\n")
  with pytest.raises(retention.RetentionError, match="KEEP:1: 'v1'"):
    retention.prune_versions(serving, keep=1)
  assert _versions(serving, "ranking") == [1, 2]  # nothing deleted


def test_interrupted_deletion_is_finished(tmp_path):
  serving = str(tmp_path / "serving")
  _push(serving, "ranking", 1)
  os.makedirs(os.path.join(serving, "ranking", ".deleting-0-1-2", "variables"))
  retention.prune_versions(serving, keep=3)
  assert os.listdir(os.path.join(serving, "ranking")) == ["1"]


# ---------------------------------------------------------------------------
# Rollback.

def test_rollback_copies_previous_version_to_a_new_highest_one(tmp_path):
  serving = str(tmp_path / "serving")
  _push(serving, "ranking", 100, payload="good model")
  _push(serving, "ranking", 200, payload="bad model")
  done = retention.rollback(serving, "ranking", clock=lambda: 150.0)
  assert done["source_version"] == 100 and done["replaced_version"] == 200
  assert done["new_version"] == 201  # above everything, even with an old clock
  new = os.path.join(serving, "ranking", "201")
  info = json.load(open(os.path.join(new, retention.ROLLBACK_FILE)))
  assert info["source_version"] == 100 and info["replaced_version"] == 200
  content = _tree(new)
  del content[retention.ROLLBACK_FILE]
  # Written last, VERSION.json lists every file of the copy (ROLLBACK.json too).
  listed = json.loads(content.pop(versions.VERSION_FILE))["files"]
  assert set(listed) == set(content) | {retention.ROLLBACK_FILE}
  assert content == _tree(os.path.join(serving, "ranking", "100"))
  assert retention.version_dirs(os.path.join(serving, "ranking"))[0][-1] == 201
  assert not [n for n in os.listdir(os.path.join(serving, "ranking"))
              if n.startswith(".")]


def test_rollback_version_follows_the_clock_for_later_pushes(tmp_path):
  serving = str(tmp_path / "serving")
  _push(serving, "ranking", 100)
  _push(serving, "ranking", 200)
  done = retention.rollback(serving, "ranking", clock=lambda: 1_700_000_000.0)
  assert done["new_version"] == 1_700_000_000  # Pusher numbers by time.time()


def test_rolling_back_twice_goes_further_back(tmp_path):
  serving = str(tmp_path / "serving")
  for v in (100, 200, 300):
    _push(serving, "ranking", v)
  first = retention.rollback(serving, "ranking", clock=lambda: 0)
  assert (first["source_version"], first["new_version"]) == (200, 301)
  second = retention.rollback(serving, "ranking", clock=lambda: 0)
  assert (second["source_version"], second["new_version"]) == (100, 302)
  with pytest.raises(retention.RetentionError, match="no earlier version"):
    retention.rollback(serving, "ranking", clock=lambda: 0)
  # Explicit versions are always possible (here: undo, back to 300).
  again = retention.rollback(serving, "ranking", 300, clock=lambda: 0)
  assert again["new_version"] == 303


def test_rollback_errors(tmp_path):
  serving = str(tmp_path / "serving")
  with pytest.raises(retention.RetentionError, match="nothing has been pushed"):
    retention.rollback(serving, "ranking")
  with pytest.raises(retention.RetentionError, match="unknown model"):
    retention.rollback(serving, "ranker")
  _push(serving, "ranking", 1)
  with pytest.raises(retention.RetentionError, match="nothing to roll back to"):
    retention.rollback(serving, "ranking")
  _push(serving, "ranking", 2)
  with pytest.raises(retention.RetentionError, match="not a complete version"):
    retention.rollback(serving, "ranking", 7)
  with pytest.raises(retention.RetentionError, match="already the served"):
    retention.rollback(serving, "ranking", 2)


def test_prune_logs(tmp_path):
  for i in range(5):
    (tmp_path / f"run-2026010{i}-000000.log").write_text("x")
  (tmp_path / "other.txt").write_text("y")
  deleted = retention.prune_logs(str(tmp_path), 2)
  assert len(deleted) == 3
  assert sorted(os.listdir(tmp_path)) == [
      "other.txt", "run-20260103-000000.log", "run-20260104-000000.log"]


def test_prune_logs_counts_failed_runs_apart_and_keeps_the_served_models_log(tmp_path):
  """24 failed runs, then successes: the failed ones do not push the good
  runs' logs out, and the log of the run that pushed the served version
  stays however old it is."""
  import time  # pylint: disable=g-import-not-at-top
  from runners import progress  # pylint: disable=g-import-not-at-top
  logs, serving = tmp_path / "logs", str(tmp_path / "serving")
  logs.mkdir()

  def log(day, hour, ok):
    name = f"run-202601{day:02d}-{hour:02d}0000.log"
    (logs / name).write_text("lines\n" + (progress.FINISHED_MARK + "\n" if ok else "boom\n"))
    return name
  served_run = log(1, 0, True)  # pushed the version served now
  pushed_at = int(time.mktime(time.strptime("20260101-003000", progress.LOG_STAMP)))
  _push(serving, "ranking", pushed_at)
  older_ok = [log(2, h, True) for h in range(3)]
  failed = [log(3 + h // 12, h % 12, False) for h in range(24)]
  newest_ok = log(9, 0, True)
  retention.prune_logs(str(logs), 2, serving_dir=serving)
  assert sorted(os.listdir(logs)) == sorted(
      [served_run, older_ok[-1], newest_ok] + failed[-2:])


# ---------------------------------------------------------------------------
# Pipeline runs (real TFX + MLMD).

# The tiny pipeline's component functions. TFX's @component wants module-level
# functions; their annotations are filled in by _tiny_components() so that
# importing this file (the fast tests) does not import TFX.

def tiny_make_data(examples, salt):
  if salt == "fail":
    raise RuntimeError("a failing run")
  os.makedirs(examples.uri, exist_ok=True)
  with open(os.path.join(examples.uri, "data.txt"), "w") as f:
    f.write(salt * 1000)


def tiny_graph(transform_graph):
  os.makedirs(transform_graph.uri, exist_ok=True)
  with open(os.path.join(transform_graph.uri, "graph.txt"), "w") as f:
    f.write("g")


def tiny_train(examples, transform_graph, model):
  assert os.path.exists(os.path.join(examples.uri, "data.txt"))
  assert os.path.exists(os.path.join(transform_graph.uri, "graph.txt"))
  os.makedirs(model.uri, exist_ok=True)
  with open(os.path.join(model.uri, "saved_model.pb"), "w") as f:
    f.write("model")


def tiny_bless(model, blessing, bless):
  blessing.set_int_custom_property("blessed", bless)
  blessing.set_int_custom_property("current_model_id", model.id)
  os.makedirs(blessing.uri, exist_ok=True)


def tiny_check(baseline=None):
  if baseline is not None:
    assert os.path.exists(os.path.join(baseline.uri, "saved_model.pb")), (
        f"baseline {baseline.uri} has no files")


_COMPONENTS = {}


def _tiny_components():
  """The functions above as TFX components (built once)."""
  if _COMPONENTS:
    return _COMPONENTS
  # pylint: disable=g-import-not-at-top
  from tfx.dsl.component.experimental.annotations import InputArtifact
  from tfx.dsl.component.experimental.annotations import OutputArtifact
  from tfx.dsl.component.experimental.annotations import Parameter
  from tfx.dsl.component.experimental.decorators import component
  from tfx.types import standard_artifacts as sa
  annotations = {
      tiny_make_data: {"examples": OutputArtifact[sa.Examples],
                       "salt": Parameter[str]},
      tiny_graph: {"transform_graph": OutputArtifact[sa.TransformGraph]},
      tiny_train: {"examples": InputArtifact[sa.Examples],
                   "transform_graph": InputArtifact[sa.TransformGraph],
                   "model": OutputArtifact[sa.Model]},
      tiny_bless: {"model": InputArtifact[sa.Model],
                   "blessing": OutputArtifact[sa.ModelBlessing],
                   "bless": Parameter[int]},
      tiny_check: {"baseline": InputArtifact[sa.Model]},  # default None: optional
  }
  for fn, hints in annotations.items():
    fn.__annotations__ = hints
    _COMPONENTS[fn.__name__] = component(fn)
  return _COMPONENTS


def _tiny_pipeline(root, metadata_path, bless, salt="x", cache=False):
  """MakeData, Graph → Train → Bless, plus a latest-blessed resolver → Check.

  Check fails the run if the resolver hands it a model whose files are gone,
  which is what pruning must never cause.
  """
  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import metadata
  from tfx.orchestration import pipeline as tfx_pipeline
  from components.resolvers import latest_blessed_model_resolver
  c = _tiny_components()
  data = c["tiny_make_data"](salt=salt)
  graph = c["tiny_graph"]()
  train = c["tiny_train"](examples=data.outputs["examples"],
                          transform_graph=graph.outputs["transform_graph"]
                          ).with_id("Train")
  bless_ = c["tiny_bless"](model=train.outputs["model"], bless=bless).with_id("Bless")
  baseline = latest_blessed_model_resolver("Baseline", "Train", "Bless")
  check = c["tiny_check"](baseline=baseline.outputs["model"])
  return tfx_pipeline.Pipeline(
      pipeline_name="tiny", pipeline_root=root,
      components=[data, graph, train, bless_, baseline, check],
      enable_cache=cache,
      metadata_connection_config=metadata.sqlite_metadata_connection_config(
          metadata_path))


def _artifacts(metadata_path):
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  store = metadata_store.MetadataStore(config)
  types = {t.id: t.name for t in store.get_artifact_types()}
  return store, [(types[a.type_id], a) for a in store.get_artifacts()]


def _run_artifact_ids(store, newest_first_index):
  """Artifact ids attributed to one pipeline_run (0 = newest)."""
  runs = sorted(store.get_contexts_by_type("pipeline_run"),
                key=lambda c: (c.create_time_since_epoch, c.id), reverse=True)
  return {a.id for a in store.get_artifacts_by_context(runs[newest_first_index].id)}


@pytest.mark.slow
def test_prune_runs_deletes_old_artifacts_and_keeps_what_is_needed(tmp_path):
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  root, db = str(tmp_path / "tfx"), str(tmp_path / "metadata.db")

  def run(bless, salt, cache=False):
    LocalDagRunner().run(_tiny_pipeline(root, db, bless, salt, cache))

  # Run 1 blesses its model; runs 2-4 do not, so run 1's model stays the
  # evaluator baseline however old it gets. Cache off: every run is new.
  run(1, "a")
  for _ in range(3):
    run(0, "b")
  store, before = _artifacts(db)
  assert len(store.get_contexts_by_type("pipeline_run")) == 4
  last_run = _run_artifact_ids(store, 0)
  first_run = _run_artifact_ids(store, 3)
  kind = {a.id: t for t, a in before}
  first = {kind[i]: i for i in first_run}  # type → id in run 1

  result = retention.prune_runs(db, root, "tiny", keep=1)
  assert len(result.pruned_runs) == 3 and len(result.kept_runs) == 1
  assert result.protected_blessed == [f"Bless: Model #{first['Model']}"]
  assert result.deleted and all(not os.path.exists(d.path) for d in result.deleted)
  assert any("scratch of execution" in d.what for d in result.deleted)

  _, after = _artifacts(db)
  state = {a.id: a.state for _, a in after}
  on_disk = {a.id: os.path.exists(a.uri) for _, a in after}
  # The last run (what it made and what it read): untouched.
  assert first["Model"] in last_run
  assert all(state[i] == pb.Artifact.LIVE and on_disk[i] for i in last_run)
  # Run 1: the baseline model, its blessing and its transform graph stay;
  # its examples (bulk, not needed to reuse the model) go.
  for t in ("Model", "ModelBlessing", "TransformGraph"):
    assert state[first[t]] == pb.Artifact.LIVE and on_disk[first[t]], t
  assert state[first["Examples"]] == pb.Artifact.DELETED
  # Runs 2 and 3: everything DELETED and gone from disk.
  middle = set(state) - last_run - first_run
  assert len(middle) == 8
  assert all(state[i] == pb.Artifact.DELETED and not on_disk[i] for i in middle)

  # A further run, now with the cache on, resolves the kept baseline (Check
  # would fail on a pruned one). MakeData with salt "a" matches only run 1's
  # execution in the cache, whose output is DELETED: it must run again (the
  # executor cache ignores non-LIVE outputs); Graph (no inputs) is served from
  # run 4's LIVE output.
  run(0, "a", cache=True)
  store, final = _artifacts(db)
  assert len(store.get_contexts_by_type("pipeline_run")) == 5
  newest = _run_artifact_ids(store, 0)
  kind = {a.id: t for t, a in final}
  final_state = {a.id: a.state for _, a in final}
  new_examples = [i for i in newest if kind[i] == "Examples"]
  assert new_examples and new_examples[0] not in state  # recomputed, new artifact
  graphs = [i for i in newest if kind[i] == "TransformGraph"]
  assert graphs and all(i in last_run for i in graphs)  # cached from run 4
  assert all(final_state[i] == pb.Artifact.LIVE for i in newest)

  # Pruning again deletes run 4 except what run 5 used (its graph, the baseline).
  again = retention.prune_runs(db, root, "tiny", keep=1)
  assert {d.what.split(" #")[0] for d in again.deleted} >= {
      "Examples", "Model", "ModelBlessing"}
  _, final = _artifacts(db)
  final_state = {a.id: a.state for _, a in final}
  assert all(final_state[i] == pb.Artifact.LIVE for i in newest)
  assert all(final_state[i] == pb.Artifact.DELETED for i in last_run - newest)


@pytest.mark.slow
def test_failed_runs_are_counted_apart_from_successful_ones(tmp_path):
  """A success, then three failed runs, keep 1: the success stays (failed runs
  do not push it out), and of the failed runs only the newest stays."""
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  root, db = str(tmp_path / "tfx"), str(tmp_path / "metadata.db")
  LocalDagRunner().run(_tiny_pipeline(root, db, 0, "a"))
  for _ in range(3):
    with pytest.raises(RuntimeError, match="a failing run"):
      LocalDagRunner().run(_tiny_pipeline(root, db, 0, "fail"))
  store, _ = _artifacts(db)
  runs = sorted(store.get_contexts_by_type("pipeline_run"),
                key=lambda c: (c.create_time_since_epoch, c.id))
  result = retention.prune_runs(db, root, "tiny", keep=1)
  assert sorted(result.kept_runs) == sorted([runs[0].name, runs[-1].name])
  assert sorted(result.pruned_runs) == sorted([runs[1].name, runs[2].name])

