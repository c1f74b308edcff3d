"""kubeflow_runner --submit / --schedule against a fake KFP 2.x API server.

The server (http.server on 127.0.0.1, free port) answers the v2beta1 REST
calls kfp.Client 2.5 makes and records them: healthz, list/create
experiments, create run, create recurring run. One pipeline compile for the
module (submitting while compiling); the schedule test reuses its spec.
"""
import http.server
import json
import os
import threading
import urllib.parse

import pytest
import yaml

import kubeflow_runner
from tests import synthetic_data

API = "/apis/v2beta1"
MAX_REQUESTS = 50
COMPONENTS = ["MovieLensExampleGen", "Transform", "RetrievalTrainer",
              "RankingTrainer", "RetrievalPusher", "RankingPusher"]


class FakeKfp:
  """A loopback KFP API: records requests, answers minimal valid JSON."""

  def __init__(self):
    self.requests = []
    self.experiments = {}  # display_name -> experiment
    fake = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *args):  # keep pytest output quiet
        pass

      def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        fake.requests.append({"method": method, "path": url.path,
                              "query": urllib.parse.parse_qs(url.query),
                              "body": body})
        if len(fake.requests) > MAX_REQUESTS:
          return self._reply(500, {"error": "too many requests"})
        return self._reply(*fake.answer(method, url.path,
                                        urllib.parse.parse_qs(url.query), body))

      def do_GET(self):  # pylint: disable=invalid-name
        self._handle("GET")

      def do_POST(self):  # pylint: disable=invalid-name
        self._handle("POST")

    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
    self.thread = threading.Thread(target=self.server.serve_forever,
                                   daemon=True)

  def answer(self, method, path, query, body):
    if method == "GET" and path == f"{API}/healthz":
      return 200, {"multi_user": False}
    if method == "GET" and path == f"{API}/experiments":
      [flt] = query.get("filter", ["{}"])
      names = [p.get("stringValue") or p.get("string_value")
               for p in json.loads(flt).get("predicates", [])]
      found = [e for n, e in self.experiments.items() if n in names]
      return 200, {"experiments": found, "total_size": len(found)}
    if method == "POST" and path == f"{API}/experiments":
      exp = {"experiment_id": f"exp-{len(self.experiments) + 1}",
             "display_name": body["display_name"]}
      self.experiments[body["display_name"]] = exp
      return 200, exp
    if method == "POST" and path == f"{API}/runs":
      return 200, {"run_id": "run-1", "display_name": body.get("display_name"),
                   "experiment_id": body.get("experiment_id")}
    if method == "POST" and path == f"{API}/recurringruns":
      return 200, {"recurring_run_id": "rr-1",
                   "display_name": body.get("display_name"),
                   "experiment_id": body.get("experiment_id")}
    return 404, {"error": f"fake KFP: no {method} {path}"}

  def calls(self, method, path):
    return [r for r in self.requests
            if r["method"] == method and r["path"] == f"{API}/{path}"]

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *exc):
    self.server.shutdown()
    self.server.server_close()
    self.thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _no_local_kfp_context(monkeypatch, tmp_path):
  """kfp.Client reads ~/.config/kfp/context.json; never the user's."""
  import kfp  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT",
                      str(tmp_path / "kfp" / "context.json"))


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
  """Compiles the pipeline and submits a run to a fake KFP (once)."""
  import kfp  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("kfp_submit")
  data = str(tmp / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp / "pipeline.yaml")
  saved = kfp.Client._LOCAL_KFP_CONTEXT  # pylint: disable=protected-access
  kfp.Client._LOCAL_KFP_CONTEXT = str(tmp / "kfp" / "context.json")  # pylint: disable=protected-access
  try:
    with FakeKfp() as fake:
      rc = kubeflow_runner.main([
          "--pipeline-root", "gs://bucket/root", "--data", data,
          "--image", "example.com/recsys:1", "--output", out,
          "--endpoint", fake.url, "--submit",
          "--experiment", "nightly", "--run-name", "first-run"])
  finally:
    kfp.Client._LOCAL_KFP_CONTEXT = saved  # pylint: disable=protected-access
  return {"rc": rc, "spec_path": out, "fake": fake}


def test_submit_creates_the_experiment_and_a_run_with_the_compiled_spec(
    submitted):
  fake = submitted["fake"]
  assert submitted["rc"] == 0
  assert fake.url.startswith("http://127.0.0.1:")
  assert len(fake.requests) <= 10
  [created] = fake.calls("POST", "experiments")
  assert created["body"]["display_name"] == "nightly"
  [run] = fake.calls("POST", "runs")
  body = run["body"]
  assert body["display_name"] == "first-run"
  assert body["experiment_id"] == "exp-1"
  assert body["runtime_config"]["pipeline_root"] == "gs://bucket/root"
  tasks = body["pipeline_spec"]["root"]["dag"]["tasks"]
  for name in COMPONENTS:
    assert name in tasks
  assert body["pipeline_spec"]["pipelineInfo"]["name"] == "movielens-two-stage"
  # What was sent is the file on disk, post-processing included.
  with open(submitted["spec_path"]) as f:
    on_disk = yaml.safe_load(f)
  assert body["pipeline_spec"]["deploymentSpec"] == on_disk["deploymentSpec"]
  resolver = on_disk["deploymentSpec"]["executors"][
      "LatestBlessedRankingModel-model-blessing-resolver_executor"]
  [query] = resolver["resolver"]["outputArtifactQueries"].values()
  assert 'blessing_stage.string_value="ranking_served"' in query["filter"]
  assert not fake.calls("POST", "recurringruns")


def test_curated_schema_is_referenced_at_its_path_in_the_image(submitted):
  with open(submitted["spec_path"]) as f:
    text = f.read()
  spec = yaml.safe_load(text)
  params = spec["root"]["dag"]["tasks"]["ImportSchemaGen"]["inputs"][
      "parameters"]
  path = params["schema_file"]["runtimeValue"]["constantValue"]["stringValue"]
  assert path.startswith(kubeflow_runner.IMAGE_SRC_DIR + "/pipeline/schemas/")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rel = path[len(kubeflow_runner.IMAGE_SRC_DIR) + 1:]
  assert os.path.isfile(os.path.join(repo, rel))  # the file the image copies
  assert repo + "/pipeline/schemas" not in text


def test_schedule_creates_a_recurring_run_with_the_cron_expression(submitted):
  with FakeKfp() as fake:
    fake.experiments["nightly"] = {"experiment_id": "exp-7",
                                   "display_name": "nightly"}
    assert kubeflow_runner.main([
        "--pipeline-root", "gs://bucket/root", "--spec",
        submitted["spec_path"], "--endpoint", fake.url,
        "--schedule", "0 30 2 * * *", "--experiment", "nightly",
        "--run-name", "nightly-retrain"]) == 0
  assert len(fake.requests) <= 10
  assert not fake.calls("POST", "experiments")  # the existing one is reused
  assert not fake.calls("POST", "runs")
  [rec] = fake.calls("POST", "recurringruns")
  body = rec["body"]
  assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
  assert body["experiment_id"] == "exp-7"
  assert body["display_name"] == "nightly-retrain"
  assert body["mode"] == "ENABLE"
  assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
  assert body["runtime_config"]["pipeline_root"] == "gs://bucket/root"
  for name in COMPONENTS:
    assert name in body["pipeline_spec"]["root"]["dag"]["tasks"]


def test_five_field_cron_is_rejected_before_any_request(submitted, capsys):
  with FakeKfp() as fake:
    with pytest.raises(SystemExit) as exit_info:
      kubeflow_runner.main([
          "--pipeline-root", "gs://bucket/root", "--spec",
          submitted["spec_path"], "--endpoint", fake.url,
          "--schedule", "30 2 * * *"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "6 space-separated fields" in err
  assert "got 5" in err
  assert '"0 30 2 * * *"' in err  # the suggested fix
  assert fake.requests == []


@pytest.mark.parametrize("argv, message", [
    (["--submit"], "need --endpoint"),
    (["--endpoint", "http://127.0.0.1:9", "--submit", "--output", "p.json"],
     "is not .yaml"),
    (["--spec", "p.yaml"], "only for --submit"),
])
def test_inconsistent_submission_flags_are_rejected(argv, message, capsys):
  with pytest.raises(SystemExit):
    kubeflow_runner.parse_args(["--pipeline-root", "gs://b/r"] + argv)
  assert message in capsys.readouterr().err


def _read_as_server_model(body, model):
  """The request body read into kfp-server-api's model (what a KFP 2.x API
  server decodes) and written back; unknown fields would be dropped, enum
  values outside the API's raise."""
  import kfp_server_api  # pylint: disable=g-import-not-at-top
  client = kfp_server_api.ApiClient()
  obj = client._ApiClient__deserialize(body, model)  # pylint: disable=protected-access
  return obj, client.sanitize_for_serialization(obj)


def test_run_and_recurring_run_requests_are_valid_kfp_server_api_models(
    submitted):
  """The compiled spec plus --submit / --schedule: the v2beta1 request
  bodies KFP 2.x expects, field for field."""
  with open(submitted["spec_path"]) as f:
    on_disk = yaml.safe_load(f)
  [run] = submitted["fake"].calls("POST", "runs")
  obj, back = _read_as_server_model(run["body"], "V2beta1Run")
  assert back == run["body"]  # every field is one the API knows
  assert obj.pipeline_spec["deploymentSpec"] == on_disk["deploymentSpec"]
  assert sorted(obj.pipeline_spec["root"]["dag"]["tasks"]) == sorted(
      on_disk["root"]["dag"]["tasks"])
  assert obj.runtime_config.pipeline_root == "gs://bucket/root"

  with FakeKfp() as fake:
    assert kubeflow_runner.main([
        "--pipeline-root", "gs://bucket/root", "--spec",
        submitted["spec_path"], "--endpoint", fake.url,
        "--schedule", "0 0 3 * * *", "--run-name", "nightly"]) == 0
  [rec] = fake.calls("POST", "recurringruns")
  obj, back = _read_as_server_model(rec["body"], "V2beta1RecurringRun")
  # max_concurrency is an int64: proto JSON (the server's decoder) takes it
  # as a number or a string; the model keeps the string form.
  assert back == dict(rec["body"],
                      max_concurrency=str(rec["body"]["max_concurrency"]))
  assert obj.display_name == "nightly"
  assert obj.pipeline_spec["deploymentSpec"] == on_disk["deploymentSpec"]
  assert obj.pipeline_version_reference is None
  assert obj.trigger.cron_schedule.cron == "0 0 3 * * *"
  assert obj.trigger.periodic_schedule is None
  assert obj.mode == "ENABLE"
  # KFP's API server accepts max_concurrency in [1, 10].
  assert 1 <= int(obj.max_concurrency) <= 10
  assert obj.no_catchup is True
  assert obj.runtime_config.pipeline_root == "gs://bucket/root"
  assert obj.experiment_id == "exp-1"
