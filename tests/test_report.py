"""The HTML run report (runners/report.py) of real pipeline runs.

One output directory serves every slow test (a module-scoped fixture):

1. a first run trains, blesses and pushes both models;
2. a second run (no --force; the trainers retrain because the latest blessed
   models, their base models, changed) adds a second point to the history;
3. a third run on data with an invalid rating stops at the ValidationGate;
4. `--report-only` rebuilds the newest report from ML Metadata.

Each run's report is kept as written. The tests parse them (sections,
numbers equal to the artifacts' JSON, history points, lineage, the failure)
and open one in headless Chromium (Debian's package; installed by
scripts/install_chromium.sh when missing and possible, else skipped) to
check that it renders without errors and without any network request.
"""
import contextlib
import glob
import html
import io
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser

import pytest

import local_runner
from tests import synthetic_data
from tests.conftest import logging_restored

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# As test_pipeline_e2e: small data, small ranking batches; both models bless.
RANKING_CONFIG = {"batch_size": 32, "learning_rate": 0.003, "epochs": 10}
RETRIEVAL_EPOCHS = 5
SECTIONS = ["status", "data", "models", "history", "lineage", "tensorboard"]


class Parsed(HTMLParser):
  """What the tests look at: sections, data-key cells, rows, references."""

  def __init__(self, text):
    super().__init__()
    self.sections, self.keys, self.nodes, self.history = [], {}, {}, []
    self.lineage, self.refs, self.tags = [], [], {}
    self._row = None
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    self.tags[tag] = self.tags.get(tag, 0) + 1
    if tag == "section":
      self.sections.append(a.get("id"))
    for name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
      if name in a:
        self.refs.append(a[name])
    if "data-key" in a:
      self.keys[a["data-key"]] = a
    if tag == "tr" and "data-node" in a:
      self.nodes[a["data-node"]] = a["data-state"]
    if tag == "tr" and "data-run" in a:
      self.history.append(a)
    if tag == "tr" and "data-version" in a:
      self._row = dict(a, text="")
      self.lineage.append(self._row)

  def handle_endtag(self, tag):
    if tag == "tr":
      self._row = None

  def handle_data(self, data):
    if self._row is not None:
      self._row["text"] += data + " "

  def value(self, key):
    return float(self.keys[key]["data-value"])


def _run(*args):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = local_runner.main(list(args))
  return code, out.getvalue(), err.getvalue()


def _report_path(text):
  match = re.search(r"Run report: (\S+\.html)", text)
  assert match, text
  return match.group(1)


def _snapshot(out_dir, metadata_path):
  """What the newest run recorded: its artifacts' files and properties."""
  from runners import run_report  # pylint: disable=g-import-not-at-top
  outs = run_report.latest_run_outputs(metadata_path, "movielens-two-stage")
  art = lambda node, key: outs[node][key][0]
  snap = {"examples": {s: run_report._prop(art("MovieLensExampleGen", "examples"),
                                          f"num_examples_{s}") for s in ("train", "eval")}}
  retrieval_eval = art("RetrievalEvaluator", "evaluation")
  with open(os.path.join(retrieval_eval.uri, "metrics.json")) as f:
    snap["retrieval_metrics"] = json.load(f)
  snap["retrieval_headline"] = retrieval_eval.custom_properties[
      snap["retrieval_metrics"]["blessing"]["metric"]].double_value
  ranking_run = art("RankingTrainer", "model_run").uri
  with open(os.path.join(art("TwoStageEvaluator", "evaluation").uri,
                         "metrics.json")) as f:
    rating = json.load(f)["rating"]
  snap["ranking_baselines"] = {"global_mean": rating["global_mean_rmse"],
                               "user_item_bias": rating["user_item_bias_rmse"]}
  snap["ranking_model_run"] = ranking_run
  snap["retrieval_model_run"] = art("RetrievalTrainer", "model_run").uri
  snap["ranking_tfma"] = run_report.ranking_overall_metrics(
      art("RankingEvaluator", "evaluation").uri)
  snap["blessed"] = {stage: run_report._prop(art(f"{stage.capitalize()}Evaluator",
                                                 "blessing"), "blessed")
                     for stage in ("retrieval", "ranking")}
  snap["versions"] = {m: sorted(d for d in os.listdir(os.path.join(out_dir, "serving", m))
                                if d.isdigit())
                      if os.path.isdir(os.path.join(out_dir, "serving", m)) else []
                      for m in ("retrieval", "ranking")}
  return snap


def _executions(metadata_path):
  from runners import run_report  # pylint: disable=g-import-not-at-top
  return len(run_report.open_store(metadata_path).get_executions())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Three runs of one output directory and a --report-only, with timings."""
  from components.ingestion.component import source_fingerprint  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("report")
  data, out = str(root / "ml-100k"), str(root / "out")
  synthetic_data.write_ml100k(data, num_users=120, num_movies=360, ratings_per_user=30)
  args = ["--data", data, "--output-dir", out, "--retrieval-epochs", str(RETRIEVAL_EPOCHS),
          "--ranking-config", json.dumps(RANKING_CONFIG)]
  metadata_path = os.path.join(out, "metadata.db")
  result = {"data": data, "out": out, "seconds": {}}
  with logging_restored():
    for name in ("first", "second"):
      t = time.time()
      code, stdout, stderr = _run(*args)
      result["seconds"][name] = time.time() - t
      assert code == 0, stdout + stderr
      path = _report_path(stdout)
      with open(path) as f:
        result[name] = {"path": path, "html": f.read(), "stdout": stdout,
                        "snapshot": _snapshot(out, metadata_path),
                        "fingerprint": source_fingerprint(data)}
    with open(os.path.join(data, "u.data"), "a") as f:
      f.write("1\t5\t7\t880000000\n")  # a rating of 7: parseable, but invalid
    t = time.time()
    code, stdout, stderr = _run(*args)
    result["seconds"]["failed"] = time.time() - t
    assert code == 1, stdout + stderr
    path = _report_path(stderr)
    with open(path) as f:
      result["failed"] = {"path": path, "html": f.read(), "stderr": stderr}
    before = _executions(metadata_path)
    t = time.time()
    code, stdout, stderr = _run("--report-only", "--output-dir", out)
    result["seconds"]["report_only"] = time.time() - t
    assert code == 0, stdout + stderr
    path = _report_path(stdout)
    with open(path) as f:
      result["report_only"] = {"path": path, "html": f.read(), "stdout": stdout,
                               "executions_before": before,
                               "executions_after": _executions(metadata_path)}
  print("report test run times (s):", result["seconds"])
  return result


@pytest.mark.slow
def test_each_run_writes_a_report_and_latest_is_the_newest(runs):
  reports = os.path.join(runs["out"], "reports")
  paths = [runs[n]["path"] for n in ("first", "second", "failed")]
  assert len(set(paths)) == 3
  assert all(os.path.dirname(p) == reports and re.fullmatch(
      r"run-\d{8}-\d{6}\.html", os.path.basename(p)) for p in paths)
  assert sorted(glob.glob(os.path.join(reports, "run-*.html"))) == sorted(paths)
  with open(os.path.join(reports, "latest.html")) as f:
    assert f.read() == runs["report_only"]["html"]
  # The run summary names the report.
  assert f"Run report: {runs['first']['path']}" in runs["first"]["stdout"]


@pytest.mark.slow
def test_report_is_self_contained(runs):
  for name in ("first", "second", "failed"):
    text = runs[name]["html"]
    p = Parsed(text)
    assert p.sections == SECTIONS
    for tag in ("script", "link", "iframe", "img", "object", "embed"):
      assert tag not in p.tags, (name, tag)
    # Only in-page anchors and local file links (TensorBoard logs, the log).
    assert all(r.startswith(("#", "file:///")) for r in p.refs), p.refs
    assert "@import" not in text
    assert not re.findall(r"url\((?!#)", text)  # SVG clip paths point inside


@pytest.mark.slow
def test_report_numbers_equal_the_artifacts(runs):
  run = runs["second"]
  snap, p = run["snapshot"], Parsed(run["html"])
  assert "passed" in run["html"].split('data-key="validation"', 1)[1][:200]
  for split in ("train", "eval"):
    assert p.value(f"examples.{split}") == snap["examples"][split]
  assert sum(snap["examples"].values()) == 120 * 30
  metrics = snap["retrieval_metrics"]
  compared = 0
  for scorer in ("model", "popularity", "baseline_model"):
    for group, values in (metrics.get(scorer) or {}).items():
      for key, value in values.items():
        if isinstance(value, float):
          assert p.value(f"retrieval.{scorer}.{group}.{key}") == value, (scorer, group, key)
          compared += 1
  assert compared >= 20
  assert len(snap["ranking_baselines"]) == 2  # the TwoStageEvaluator's
  for key, value in snap["ranking_baselines"].items():
    assert p.value(f"ranking.baseline.{key}") == value
  rmse = snap["ranking_tfma"]["model"]["root_mean_squared_error"]
  assert p.value("ranking.model.root_mean_squared_error") == rmse
  for stage, blessed in snap["blessed"].items():
    assert int(p.keys[f"{stage}.blessed"]["data-value"]) == blessed
  # Loss per epoch from the TensorBoard logs, one point per configured epoch.
  assert int(p.keys["ranking.loss_plot"]["data-epochs"]) == RANKING_CONFIG["epochs"]
  assert int(p.keys["retrieval.loss_plot"]["data-epochs"]) == RETRIEVAL_EPOCHS
  for stage in ("ranking", "retrieval"):
    assert f'href="file://{snap[f"{stage}_model_run"]}"' in run["html"]
    assert f"tensorboard --logdir {snap[f'{stage}_model_run']}" in html.unescape(run["html"])
  assert "warm start from the latest blessed model" in html.unescape(run["html"])


@pytest.mark.slow
def test_history_has_one_point_per_run(runs):
  first, second = Parsed(runs["first"]["html"]), Parsed(runs["second"]["html"])
  assert len(first.history) == 1 and len(second.history) == 2
  assert second.keys["history_plot"]["data-points"] == "2"
  # Each point is that run's number (read back from ML Metadata).
  assert second.value("history.1.retrieval.model") == runs["first"]["snapshot"][
      "retrieval_headline"]
  assert second.value("history.2.retrieval.model") == runs["second"]["snapshot"][
      "retrieval_headline"]
  assert second.value("history.2.ranking.model") == runs["second"]["snapshot"][
      "ranking_tfma"]["model"]["root_mean_squared_error"]
  # The first run pushed (at least retrieval): marked in its history row.
  assert first.history[0].get("class") == "pushed"
  failed = Parsed(runs["failed"]["html"])
  assert len(failed.history) == 3


@pytest.mark.slow
def test_lineage_names_data_and_config_of_each_pushed_version(runs):
  run = runs["second"]
  p = Parsed(run["html"])
  versions = run["snapshot"]["versions"]
  listed = {(r["data-stage"], r["data-version"]) for r in p.lineage}
  assert listed == {(m, v) for m, vs in versions.items() for v in vs}
  assert ("retrieval", versions["retrieval"][0]) in listed  # pushed by the first run
  for row in p.lineage:
    assert runs["data"] in row["text"]
    assert run["fingerprint"] in row["text"]
    assert "split: random" in row["text"]
  ranking = [r for r in p.lineage if r["data-stage"] == "ranking"]
  assert all('"learning_rate": 0.003' in r["text"] for r in ranking)
  assert all('"epochs": %d' % RETRIEVAL_EPOCHS in r["text"]
             for r in p.lineage if r["data-stage"] == "retrieval")


@pytest.mark.slow
def test_failed_run_report_says_where_and_why(runs):
  failed = runs["failed"]
  assert f"Run report: {failed['path']}" in failed["stderr"]
  p = Parsed(failed["html"])
  text = html.unescape(failed["html"])
  assert 'data-status="bad"' in failed["html"]
  assert re.search(r'data-key="failed_node">ValidationGate<', failed["html"])
  error = re.search(r'<pre data-key="error">(.*?)</pre>', text, re.S).group(1)
  assert "DataValidationError" in error and "user_rating" in error
  assert p.nodes["ValidationGate"] == "failed"
  assert p.nodes["MovieLensExampleGen"] == "complete"  # the data changed
  assert "Transform" not in p.nodes and "RetrievalTrainer" not in p.nodes
  assert "user_rating" in re.search(r'<table class="anomalies">(.*?)</table>',
                                    text, re.S).group(1)
  assert "No model was trained" in text or "did not run" in text


@pytest.mark.slow
def test_report_only_rebuilds_from_metadata_without_running(runs):
  rebuilt = runs["report_only"]
  assert rebuilt["executions_after"] == rebuilt["executions_before"]
  assert rebuilt["path"] == runs["failed"]["path"]  # the newest run's report
  p = Parsed(rebuilt["html"])
  assert p.sections == SECTIONS
  assert re.search(r'data-key="failed_node">ValidationGate<', rebuilt["html"])
  assert len(p.history) == 3
  # Same facts as the report the run wrote (the error text is the run's own).
  assert p.keys.keys() - {"error"} == Parsed(runs["failed"]["html"]).keys.keys() - {"error"}


def test_report_only_without_metadata_says_so(tmp_path, capsys):
  from runners import report  # pylint: disable=g-import-not-at-top
  assert report.report_only(str(tmp_path / "nothing")) == 1
  assert "No ML Metadata" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "nothing" / "reports")


def test_two_stage_section_renders_every_row_and_metric():
  from runners import report  # pylint: disable=g-import-not-at-top
  two = {"k": 10,
         "rows": {"two_stage": {"precision@10": 0.31, "recall@10": 0.2,
                                "ndcg@10": 0.35, "map@10": 0.12},
                  "retrieval_only": {"precision@10": 0.3, "recall@10": 0.19,
                                     "ndcg@10": 0.33, "map@10": 0.11},
                  "most_popular": {"precision@10": 0.1, "recall@10": 0.05,
                                   "ndcg@10": 0.12, "map@10": 0.04, "coverage": 0.02},
                  "ease": None},
         "rating": {"rmse": 0.93, "user_item_bias_rmse": 0.95, "global_mean_rmse": 1.12},
         "blessing": {"blessed": False, "message": "two_stage ndcg@10 below ease"}}
  p = Parsed(report.two_stage_html(two))
  for row, metrics in two["rows"].items():
    for key, value in (metrics or {}).items():
      assert p.value(f"two_stage.{row}.{key}") == value
  assert "ease" in report.two_stage_html(two) and "(not computed)" in report.two_stage_html(two)
  for key, value in two["rating"].items():
    assert p.value(f"two_stage.rating.{key}") == value
  assert p.keys["two_stage.blessed"]["data-value"] == "0"
  assert "below ease" in report.two_stage_html(two)


# -- a hand-made ML Metadata store: the report's MLMD logic without a pipeline --

def _fake_store(path):
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  config = pb.ConnectionConfig()
  config.sqlite.filename_uri = path
  config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  return metadata_store.MetadataStore(config), pb


class FakeRuns:
  """Runs of the retrieval branch recorded the way TFX's launcher records
  them: executions in pipeline, pipeline_run and node contexts, artifacts
  attached by OUTPUT / INPUT events, exec properties as custom properties."""

  def __init__(self, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    self.out = out_dir
    self.store, self.pb = _fake_store(os.path.join(out_dir, "metadata.db"))
    pb = self.pb
    self.ctx_types = {n: self.store.put_context_type(pb.ContextType(name=n))
                      for n in ("pipeline", "pipeline_run", "node")}
    self.art_types = {n: self.store.put_artifact_type(pb.ArtifactType(name=n))
                      for n in ("Examples", "Model", "ModelEvaluation", "ModelBlessing",
                                "PushedModel")}
    self.exec_type = self.store.put_execution_type(pb.ExecutionType(name="Fake"))
    self.pipeline = self._context("pipeline", "movielens-two-stage")
    self.nodes = {}

  def _context(self, kind, name):
    [cid] = self.store.put_contexts([self.pb.Context(type_id=self.ctx_types[kind], name=name)])
    return self.store.get_contexts_by_id([cid])[0]

  def artifact(self, kind, uri, **props):
    a = self.pb.Artifact(type_id=self.art_types[kind], uri=uri,
                         state=self.pb.Artifact.LIVE)
    for k, v in props.items():
      field = "int_value" if isinstance(v, int) else (
          "double_value" if isinstance(v, float) else "string_value")
      setattr(a.custom_properties[k], field, v)
    return a

  def start_run(self, run_id):
    self.run = self._context("pipeline_run", run_id)

  def execute(self, node_id, inputs=(), outputs=(), state="COMPLETE", **props):
    """inputs/outputs: [(key, artifact)]; returns the outputs with their ids."""
    pb = self.pb
    if node_id not in self.nodes:
      self.nodes[node_id] = self._context("node", f"movielens-two-stage.{node_id}")
    e = pb.Execution(type_id=self.exec_type,
                     last_known_state=getattr(pb.Execution, state))
    for k, v in props.items():
      e.custom_properties[k].string_value = v
    pairs = []
    for kind, items in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
      for key, art in items:
        ev = pb.Event(type=kind)
        ev.path.steps.add().key = key
        ev.path.steps.add().index = 0
        pairs.append((art, ev))
    _, ids, _ = self.store.put_execution(
        e, pairs, [self.pipeline, self.run, self.nodes[node_id]],
        reuse_context_if_already_exist=True)
    arts = self.store.get_artifacts_by_id(ids)
    return [a for a, (_, ev) in zip(arts, pairs) if ev.type == pb.Event.OUTPUT]

  def retrieval_run(self, run_id, examples, config, hit, blessed, version=None):
    """Trainer → evaluator → pusher of one run; returns the examples used."""
    self.start_run(run_id)
    if examples is None:
      [examples] = self.execute(
          "MovieLensExampleGen", outputs=[("examples", self.artifact(
              "Examples", self.out + "/ex", num_examples_train=80, num_examples_eval=20,
              source="/data/ml-100k", split="random"))],
          source="/data/ml-100k", split="random", source_fingerprint="abc123")
    else:  # cached: the same artifact again
      self.execute("MovieLensExampleGen", outputs=[("examples", examples)], state="CACHED",
                   source="/data/ml-100k", split="random", source_fingerprint="abc123")
    [model] = self.execute("RetrievalTrainer", inputs=[("examples", examples)],
                           outputs=[("model", self.artifact("Model", self.out + "/m"))],
                           custom_config=json.dumps(config), run_fn="trainer_modules.x")
    ev_dir = os.path.join(self.out, run_id.replace(":", ""))
    os.makedirs(ev_dir)
    with open(os.path.join(ev_dir, "metrics.json"), "w") as f:
      json.dump({"model": {"all": {"hit@100_excl_seen": hit, "hit@10": hit / 4}},
                 "popularity": {"all": {"hit@100_excl_seen": 0.2, "hit@10": 0.05}},
                 "baseline_model": None, "eval_split": "eval"}, f)
    evaluation, blessing = self.execute(
        "RetrievalEvaluator", inputs=[("model", model)],
        outputs=[("evaluation", self.artifact(
                      "ModelEvaluation", ev_dir, **{"hit@100_excl_seen": hit,
                                                    "popularity_hit@100_excl_seen": 0.2})),
                 ("blessing", self.artifact("ModelBlessing", ev_dir + "/b", blessed=int(blessed),
                                            blessing_message=f"blessed={blessed}"))])
    pushed = dict(pushed=int(version is not None))
    if version is not None:
      pushed.update(pushed_version=str(version),
                    pushed_destination=f"{self.out}/serving/retrieval/{version}")
    self.execute("RetrievalPusher", inputs=[("model", model), ("model_blessing", blessing)],
                 outputs=[("pushed_model", self.artifact("PushedModel", ev_dir + "/p",
                                                         **pushed))])
    del evaluation
    return examples


def test_report_from_hand_made_metadata_history_lineage_and_models(tmp_path):
  """The MLMD reading (runs, cached executions, headline metrics, pushes,
  lineage) on a store written like TFX writes it; no pipeline needed."""
  from runners import report  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "out")
  fake = FakeRuns(out)
  examples = fake.retrieval_run("2026-12-01T10:00:00.000001", None, {"epochs": 3},
                                hit=0.41, blessed=True, version=7)
  time.sleep(0.01)
  fake.retrieval_run("2026-12-01T11:00:00.000001", examples, {"epochs": 4},
                     hit=0.39, blessed=False)
  path = report.write(out)
  assert os.path.basename(path) == "run-20261201-110000.html"
  with open(path) as f:
    text = f.read()
  p = Parsed(text)
  assert p.sections == SECTIONS
  assert [r["data-run"] for r in p.history] == ["2026-12-01T10:00:00.000001",
                                               "2026-12-01T11:00:00.000001"]
  assert p.value("history.1.retrieval.model") == 0.41
  assert p.value("history.2.retrieval.model") == 0.39
  assert p.value("history.2.retrieval.most_popular") == 0.2
  assert p.history[0].get("class") == "pushed" and "class" not in p.history[1]
  assert p.keys["history_plot"]["data-points"] == "2"
  # The newest run: its metrics beside most-popular, not blessed, nothing pushed.
  assert p.value("retrieval.model.all.hit@100_excl_seen") == 0.39
  assert p.value("retrieval.popularity.all.hit@10") == 0.05
  assert p.keys["retrieval.blessed"]["data-value"] == "0"
  assert p.keys["retrieval.pushed"]["data-value"] == "0"
  assert p.value("examples.train") == 80
  assert p.nodes["MovieLensExampleGen"] == "cached"
  # Lineage: version 7, produced from the ingested data by the first config.
  [row] = p.lineage
  assert row["data-stage"] == "retrieval" and row["data-version"] == "7"
  for fact in ("/data/ml-100k", "abc123", "split: random", '"epochs": 3',
               "2026-12-01T10:00:00.000001", "num_examples_train: 80"):
    assert fact in row["text"], (fact, row["text"])
  assert '"epochs": 4' not in row["text"]


def test_drift_section_shows_distances_against_thresholds():
  from runners import report  # pylint: disable=g-import-not-at-top
  body = report._drift({  # pylint: disable=protected-access
      "state": "failed", "current_span": 2, "previous_span": 1, "note": "",
      "measurements": [
          {"feature": "user_rating", "comparator": "Jensen-Shannon",
           "distance": 0.31, "threshold": 0.05},
          {"feature": "movie_id", "comparator": "L-infinity",
           "distance": 0.01, "threshold": 0.05}]})
  p = Parsed(body)
  assert p.value("drift.user_rating.distance") == 0.31
  assert p.value("drift.user_rating.threshold") == 0.05
  assert p.value("drift.movie_id.distance") == 0.01
  assert "span 2 vs span 1" in body and "1 feature(s) beyond threshold" in body
  assert body.count('class="failed"') == 1


# -- the browser check -------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-dev-shm-usage",
                  "--host-resolver-rules=MAP * ~NOTFOUND"]
INSTALL_TIMEOUT = 300


def _chromium_binary():
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


@pytest.fixture(scope="session")
def chromium():
  """Debian's Chromium: found on PATH, installed when root with apt-get, or
  the test is skipped saying why."""
  path = _chromium_binary()
  if path:
    return path
  script = os.path.join(REPO, "scripts", "install_chromium.sh")
  if os.geteuid() != 0 or not shutil.which("apt-get"):
    pytest.skip("Chromium is not installed and cannot be installed here (needs root "
                "and apt-get): run scripts/install_chromium.sh (apt-get install chromium)")
  try:
    done = subprocess.run(["bash", script], capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT)
  except subprocess.TimeoutExpired:
    pytest.skip(f"Installing Chromium took over {INSTALL_TIMEOUT}s (apt-get); skipped")
  path = _chromium_binary()
  if done.returncode != 0 or not path:
    pytest.skip("Chromium could not be installed with apt-get: "
                + (done.stderr or done.stdout).strip()[-300:])
  return path


class Cdp:
  """A minimal Chrome DevTools Protocol client over the browser's websocket."""

  def __init__(self, url):
    import websocket  # pylint: disable=g-import-not-at-top  (websocket-client, locked)
    self.ws = websocket.create_connection(url, timeout=120, suppress_origin=True)
    self.events, self._id = [], 0

  def call(self, method, session=None, **params):
    self._id += 1
    msg = {"id": self._id, "method": method, "params": params}
    if session:
      msg["sessionId"] = session
    self.ws.send(json.dumps(msg))
    while True:
      reply = json.loads(self.ws.recv())
      if reply.get("id") == self._id:
        if "error" in reply:
          raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})
      self.events.append(reply)

  def wait_for(self, method, seconds):
    import websocket  # pylint: disable=g-import-not-at-top
    deadline = time.time() + seconds
    while not any(e.get("method") == method for e in self.events):
      if time.time() > deadline:
        raise TimeoutError(f"no {method} within {seconds}s")
      self.ws.settimeout(max(0.1, deadline - time.time()))
      try:
        self.events.append(json.loads(self.ws.recv()))
      except websocket.WebSocketTimeoutException:
        pass

  def drain(self, seconds):
    import websocket  # pylint: disable=g-import-not-at-top
    deadline = time.time() + seconds
    while time.time() < deadline:
      self.ws.settimeout(max(0.05, deadline - time.time()))
      try:
        self.events.append(json.loads(self.ws.recv()))
      except websocket.WebSocketTimeoutException:
        break

  def close(self):
    self.ws.close()


def _devtools_url(user_data_dir, proc, seconds=60):
  port_file = os.path.join(user_data_dir, "DevToolsActivePort")
  deadline = time.time() + seconds
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"chromium exited with {proc.returncode}")
    if os.path.exists(port_file):
      lines = open(port_file).read().split()
      if len(lines) >= 2:
        return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
    time.sleep(0.2)
  raise TimeoutError("chromium did not open its DevTools port")


@pytest.mark.slow
def test_report_renders_in_chromium_without_errors_or_network(runs, chromium, tmp_path):
  report_path = runs["second"]["path"]
  url = "file://" + report_path
  profile = str(tmp_path / "chromium-profile")
  proc = subprocess.Popen(
      [chromium] + CHROMIUM_FLAGS + [f"--user-data-dir={profile}",
                                     "--remote-debugging-port=0", "about:blank"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  cdp = None
  try:
    cdp = Cdp(_devtools_url(profile, proc))
    target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
    session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Network", "Runtime", "Log", "Page"):
      cdp.call(f"{domain}.enable", session)
    cdp.call("Page.navigate", session, url=url)
    cdp.wait_for("Page.loadEventFired", 60)
    cdp.drain(1.5)
    state = cdp.call("Runtime.evaluate", session, returnByValue=True, expression="""
        JSON.stringify({
          sections: [...document.querySelectorAll('section')].map(s => s.id),
          plots: [...document.querySelectorAll('.plot svg')].map(
              s => Math.round(s.getBoundingClientRect().width)),
          resources: performance.getEntriesByType('resource').map(e => e.name),
          title: document.title,
          height: document.documentElement.scrollHeight})""")
    shot = None
    if os.environ.get("REPORT_SCREENSHOT"):  # a PNG of the page, for a human look
      shot = cdp.call("Page.captureScreenshot", session, format="png",
                      captureBeyondViewport=True)
    cdp.call("Browser.close")
  finally:
    if cdp is not None:
      cdp.close()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  events = [e for e in cdp.events if e.get("sessionId") == session]
  requests = [e["params"]["request"]["url"] for e in events
              if e.get("method") == "Network.requestWillBeSent"]
  assert requests and all(r == url or r.startswith("data:") for r in requests), requests
  assert not [e for e in events if e.get("method") == "Network.loadingFailed"]
  assert not [e for e in events if e.get("method") == "Runtime.exceptionThrown"]
  assert not [e for e in events if e.get("method") == "Runtime.consoleAPICalled"
              and e["params"]["type"] in ("error", "assert")]
  errors = [e["params"]["entry"] for e in events if e.get("method") == "Log.entryAdded"
            and e["params"]["entry"]["level"] == "error"]
  assert not errors, errors
  page = json.loads(state["result"]["value"])
  assert page["sections"] == SECTIONS
  assert page["resources"] == []
  assert page["title"].startswith("Run report: movielens-two-stage")
  assert len(page["plots"]) >= 4 and min(page["plots"]) > 200, page["plots"]
  assert page["height"] > 2000
  if shot is not None:
    import base64  # pylint: disable=g-import-not-at-top
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with open(os.environ["REPORT_SCREENSHOT"], "wb") as f:
      f.write(png)
