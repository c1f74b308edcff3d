"""Executes a compiled KFP v2 pipeline spec here, task by task, as KFP would.

    python kubeflow_runner.py --pipeline-root /tmp/root --data ... --output p.yaml
    python kubeflow_runner.py --pipeline-root /tmp/root --run-locally p.yaml

Nothing here knows the pipeline: the DAG, the commands and the queries all
come from the spec KubeflowV2DagRunner wrote (kubeflow_runner.py), so new
components just work. What a KFP v2 backend does per task, this does too:

* container tasks: the executor's command and args exactly as compiled
  (TFX's `python -m tfx.orchestration.kubeflow.v2.container.
  kubeflow_v2_run_executor --executor_class_path ... --json_serialized_
  invocation_args {{$}} <beam args>`), placeholders substituted, `{{$}}`
  being the ExecutorInput the launcher builds: parameters, input artifacts
  (name, type, URI, metadata of the upstream outputs), output artifact URIs
  under the pipeline root and the output metadata file. The process is the
  project's Python instead of the image (`python` → this interpreter, the
  image's copy of the repository → this checkout, TF_USE_LEGACY_KERAS=1);
  its ExecutorOutput (the artifacts' metadata, e.g. a blessing's `blessed`,
  `current_model_id`, `blessing_stage`) is what downstream tasks receive.
* resolver tasks: each output query (`schema_title="tfx.ModelBlessing" AND
  state=LIVE AND metadata.blessed.number_value=1 AND ...`, placeholders such
  as `{{$.inputs.artifacts['input'].metadata['current_model_id']}}` filled
  in) is run against the artifacts of earlier local runs; the newest match
  is the output (TFX compiles desired_num_of_artifacts=1), none is none.
* importer tasks: the artifact at the compiled URI (reused unless reimport).

The local metadata store (MLMD's role on a cluster) is one JSON file,
<pipeline root>/kfp_local_metadata.json: every artifact a task produced,
with its run, task, output key, URI and metadata, so a later run resolves
the models blessed before it. Artifacts live at
<pipeline root>/<run id>/<task>/<output key>; each task's log and
executor_output.json sit in <pipeline root>/<run id>/<task>/.

Not emulated (needs a cluster, see README *Running on Kubeflow*): the image,
pods and their resources, the KFP driver/launcher binaries, KFP's cache
(every task runs), object-store pipeline roots (the root is a local path).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent import futures
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORE_FILE = "kfp_local_metadata.json"
LOG_FILE = "log.txt"
EXECUTOR_OUTPUT_FILE = "executor_output.json"
RUN_SUMMARY_FILE = "run.json"
PYTHON_COMMANDS = ("python", "python3")
LOG_TAIL_LINES = 40
# Shown on a task's progress line.
NOTED_PROPERTIES = {"tfx.ModelBlessing": ("blessed",),
                    "tfx.PushedModel": ("pushed",)}
# Container processes at a time (KFP starts independent tasks' pods at once).
DEFAULT_PARALLEL = 2

_PLACEHOLDER = re.compile(r"\{\{\$(.*?)\}\}")
_KEYED = re.compile(r"^\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](.*)$")


class SpecError(ValueError):
  """The spec uses something a KFP backend supports but this runner does not,
  or is inconsistent (unknown task, cycle, missing executor)."""


class TaskFailed(RuntimeError):
  """A task's process exited non-zero; the message ends with its log tail."""

  def __init__(self, task: str, returncode: int, log_path: str):
    self.task, self.returncode, self.log_path = task, returncode, log_path
    with open(log_path, errors="replace") as f:
      tail = "".join(f.readlines()[-LOG_TAIL_LINES:])
    super().__init__(f"task {task} failed (exit status {returncode}); "
                     f"full log: {log_path}\n--- last lines ---\n{tail}")


# ----------------------------------------------------------------- the spec


def load_spec(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Returns (PipelineSpec, runtime config) of a compiled YAML/JSON file.

  KubeflowV2DagRunner writes a PipelineSpec (YAML, what kfp.Client submits)
  or a PipelineJob (JSON: {"pipelineSpec": ..., "runtimeConfig": ...}).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No compiled pipeline spec at {path}")
  with open(path) as f:
    doc = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
  if not isinstance(doc, dict):
    raise SpecError(f"{path} is not a KFP pipeline spec (not a mapping)")
  spec = doc.get("pipelineSpec", doc)
  for key in ("root", "components", "deploymentSpec"):
    if key not in spec:
      raise SpecError(f"{path} is not a KFP v2 pipeline spec: no {key!r}")
  return spec, doc.get("runtimeConfig", {}) or {}


def task_dependencies(task: Mapping[str, Any]) -> List[str]:
  """dependentTasks plus every producer of an input (KFP adds those too)."""
  deps = set(task.get("dependentTasks", []))
  inputs = task.get("inputs", {})
  for spec in inputs.get("artifacts", {}).values():
    if "taskOutputArtifact" in spec:
      deps.add(spec["taskOutputArtifact"]["producerTask"])
  for spec in inputs.get("parameters", {}).values():
    if "taskOutputParameter" in spec:
      deps.add(spec["taskOutputParameter"]["producerTask"])
  return sorted(deps)


def task_order(spec: Mapping[str, Any]) -> List[str]:
  """The root DAG's tasks in dependency order (ties by name)."""
  tasks = spec["root"]["dag"]["tasks"]
  deps = {name: task_dependencies(t) for name, t in tasks.items()}
  for name, ds in deps.items():
    for d in ds:
      if d not in tasks:
        raise SpecError(f"task {name} depends on unknown task {d!r}")
  order, done = [], set()
  while len(order) < len(tasks):
    ready = sorted(n for n in tasks if n not in done and set(deps[n]) <= done)
    if not ready:
      raise SpecError("the DAG has a cycle among "
                      f"{sorted(set(tasks) - done)}")
    order.extend(ready)
    done.update(ready)
  return order


def _executor_of(spec: Mapping[str, Any], task_name: str
                 ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  task = spec["root"]["dag"]["tasks"][task_name]
  for key in ("triggerPolicy", "iteratorPolicy", "parameterIterator",
              "artifactIterator"):
    if task.get(key):
      raise SpecError(f"task {task_name} uses {key}, which this local runner "
                      "does not implement")
  component = spec["components"][task["componentRef"]["name"]]
  if "dag" in component:
    raise SpecError(f"task {task_name} is a sub-DAG; only flat pipelines "
                    "(what TFX compiles) are run locally")
  label = component.get("executorLabel")
  executors = spec["deploymentSpec"]["executors"]
  if label not in executors:
    raise SpecError(f"task {task_name}: no executor {label!r} in deploymentSpec")
  return component, executors[label]


def schema_title(artifact_type: Mapping[str, Any]) -> str:
  """tfx.Model etc. from an artifactType (schemaTitle or instanceSchema)."""
  if "schemaTitle" in artifact_type:
    return artifact_type["schemaTitle"]
  schema = yaml.safe_load(artifact_type.get("instanceSchema", "")) or {}
  return schema.get("title", "")


# ------------------------------------------------------ local metadata store


class MetadataStore:
  """Artifacts of every local run, in one JSON file under the pipeline root.

  An artifact: {"id", "name", "type" (artifactType), "schema_title", "uri",
  "metadata", "state", "run_id", "task", "output_key", "create_time"}. Its
  name ("artifacts/<id>") is the runtime artifact name tasks see, as an MLMD
  artifact's resource name on a cluster.
  """

  def __init__(self, pipeline_root: str):
    self.path = os.path.join(pipeline_root, STORE_FILE)
    self.data = {"next_id": 1, "artifacts": []}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.data = json.load(f)

  @property
  def artifacts(self) -> List[Dict[str, Any]]:
    return self.data["artifacts"]

  def new_name(self) -> Tuple[int, str]:
    artifact_id = self.data["next_id"]
    self.data["next_id"] += 1
    return artifact_id, f"artifacts/{artifact_id}"

  def add(self, artifact: Dict[str, Any]) -> None:
    self.artifacts.append(artifact)

  def save(self) -> None:
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(self.data, f, indent=1, sort_keys=True)
    os.replace(tmp, self.path)

  def query(self, filter_text: str) -> List[Dict[str, Any]]:
    """Artifacts matching a compiled resolver filter, newest first."""
    clauses = [_clause(c) for c in _split_and(filter_text)]
    found = [a for a in self.artifacts if all(c(a) for c in clauses)]
    return sorted(found, key=lambda a: a["id"], reverse=True)


def _split_and(text: str) -> List[str]:
  """Splits a filter on AND outside double quotes."""
  parts, current, quoted, i = [], "", False, 0
  while i < len(text):
    if text[i] == '"' and (i == 0 or text[i - 1] != "\\"):
      quoted = not quoted
    if not quoted and text[i:i + 5] == " AND ":
      parts.append(current.strip())
      current, i = "", i + 5
      continue
    current += text[i]
    i += 1
  parts.append(current.strip())
  return [p for p in parts if p]


_CLAUSE = re.compile(r'^([A-Za-z_][\w.]*)\s*=\s*(".*"|[^"\s]+)$')
_METADATA_KEY = re.compile(r"^metadata\.(.+)\.(number_value|string_value|"
                           r"bool_value)$")
_FIELDS = {"schema_title": "schema_title", "name": "name", "uri": "uri",
           "state": "state"}


def _clause(text: str) -> Callable[[Mapping[str, Any]], bool]:
  """One `field=value` clause of a KFP/Vertex artifact filter as a predicate.

  Supported: schema_title, name, uri, state and metadata.<key>.
  number_value / string_value / bool_value, with `=` (what TFX compiles).
  """
  m = _CLAUSE.match(text)
  if not m:
    raise SpecError(f"unsupported artifact filter clause {text!r} (only "
                    "field=value clauses joined by AND are implemented)")
  field, raw = m.groups()
  value: Any = json.loads(raw) if raw.startswith('"') else raw
  if field in _FIELDS:
    key = _FIELDS[field]
    return lambda a: str(a.get(key)) == str(value)
  mk = _METADATA_KEY.match(field)
  if not mk:
    raise SpecError(f"unsupported artifact filter field {field!r} in {text!r}")
  key, kind = mk.groups()
  if kind == "number_value":
    target = float(value)
    return lambda a: (isinstance(a["metadata"].get(key), (int, float))
                      and float(a["metadata"][key]) == target)
  if kind == "bool_value":
    flag = str(value).lower() == "true"
    return lambda a: a["metadata"].get(key) is flag
  return lambda a: a["metadata"].get(key) == str(value)


# ------------------------------------------------------------- placeholders


def _to_text(value: Any) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return json.dumps(value, sort_keys=True)


def substitute(text: str, executor_input: Mapping[str, Any],
               extra: Optional[Mapping[str, str]] = None) -> str:
  """Fills KFP placeholders ({{$}}, {{$.inputs.parameters['k']}}, ...) in text.

  `executor_input` is the ExecutorInput as JSON dict; `extra` holds the
  job/task placeholders ({{$.pipeline_job_name}} ...). Unknown ones raise.
  """
  extra = extra or {}

  def one(m: re.Match) -> str:
    expr = m.group(1)
    if expr == "":
      return json.dumps(executor_input, sort_keys=True)
    if expr in extra:
      return extra[expr]
    if expr == ".outputs.output_file":
      return executor_input["outputs"]["outputFile"]
    k = _KEYED.match(expr)
    if not k:
      raise SpecError(f"unsupported placeholder {m.group(0)!r}")
    side, kind, key, rest = k.groups()
    section = executor_input[side]
    if kind == "parameters":
      if side == "outputs" and rest == ".output_file":
        return section["parameters"][key]["outputFile"]
      if side == "inputs" and rest == "":
        values = section.get("parameterValues", {})
        if key in values:
          return _to_text(values[key])
        old = section.get("parameters", {})
        if key in old:
          return _to_text(_old_value(old[key]))
      raise SpecError(f"placeholder {m.group(0)!r}: no such parameter")
    artifacts = section.get("artifacts", {}).get(key, {}).get("artifacts", [])
    if not artifacts:
      raise SpecError(f"placeholder {m.group(0)!r}: no {side} artifact {key!r}")
    artifact = artifacts[0]
    if rest in (".uri", ".path"):
      return artifact["uri"]
    mm = re.match(r"^\.metadata\['([^']+)'\]$", rest)
    if mm:
      if mm.group(1) not in artifact.get("metadata", {}):
        raise SpecError(f"placeholder {m.group(0)!r}: artifact "
                        f"{artifact.get('name')} has no metadata "
                        f"{mm.group(1)!r}")
      return _to_text(artifact["metadata"][mm.group(1)])
    if rest == ".metadata":
      return _to_text(artifact.get("metadata", {}))
    raise SpecError(f"unsupported placeholder {m.group(0)!r}")

  return _PLACEHOLDER.sub(one, text)


def _old_value(value: Mapping[str, Any]) -> Any:
  """The Python value of a (deprecated) pipeline_spec Value: intValue ..."""
  if "intValue" in value:
    return int(value["intValue"])
  if "doubleValue" in value:
    return float(value["doubleValue"])
  return value.get("stringValue", "")


# ------------------------------------------------------------------ the run


class LocalRun:
  """One execution of a compiled spec; see the module docstring."""

  def __init__(self, spec_path: str, pipeline_root: str, image_src_dir: str = "",
               local_src_dir: str = REPO_ROOT, python: str = sys.executable,
               run_id: str = "", log: Callable[[str], None] = print,
               max_parallel: int = DEFAULT_PARALLEL):
    if "://" in pipeline_root:
      raise ValueError(f"--run-locally needs a local pipeline root, got "
                       f"{pipeline_root!r} (object stores need a cluster)")
    self.spec, self.runtime_config = load_spec(spec_path)
    self.pipeline_root = os.path.abspath(pipeline_root)
    self.image_src_dir = image_src_dir.rstrip("/")
    self.local_src_dir = os.path.abspath(local_src_dir)
    self.python = python
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y%m%d-%H%M%S")
    self.run_id = run_id or f"run-{stamp}-{uuid.uuid4().hex[:6]}"
    self.log = log
    if max_parallel < 1:
      raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    self.max_parallel = max_parallel
    os.makedirs(self.pipeline_root, exist_ok=True)
    self.store = MetadataStore(self.pipeline_root)
    self.outputs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    self.output_parameters: Dict[str, Dict[str, Any]] = {}
    self.summary: Dict[str, Any] = {"run_id": self.run_id,
                                    "pipeline_root": self.pipeline_root,
                                    "spec": os.path.abspath(spec_path),
                                    "tasks": {}}

  @property
  def run_dir(self) -> str:
    return os.path.join(self.pipeline_root, self.run_id)

  def task_dir(self, task: str) -> str:
    return os.path.join(self.run_dir, task)

  # ----- mapping image paths to this checkout

  def to_local(self, text: str) -> str:
    """The image's copy of the repository (--image-src-dir) → this checkout."""
    if not self.image_src_dir:
      return text
    return re.sub(r"(?<![\w./-])" + re.escape(self.image_src_dir) + r"(?=/|$)",
                  lambda _: self.local_src_dir, text)

  # ----- inputs

  def _root_parameter(self, name: str) -> Any:
    values = self.runtime_config.get("parameterValues", {})
    if name in values:
      return values[name]
    old = self.runtime_config.get("parameters", {})
    if name in old:
      return _old_value(old[name])
    definition = self.spec["root"].get("inputDefinitions", {}).get(
        "parameters", {}).get(name, {})
    if "defaultValue" in definition:
      return definition["defaultValue"]
    raise SpecError(f"pipeline parameter {name!r} has no value (no runtime "
                    "config value and no default)")

  def _parameters(self, task_name: str, task: Mapping[str, Any],
                  component: Mapping[str, Any]) -> Tuple[Dict, Dict]:
    """(parameterValues, parameters) of the ExecutorInput.

    Schema 2.0 specs (TFX's default) give constants as constantValue
    {intValue|doubleValue|stringValue}: those go to the deprecated
    `parameters` field, which TFX's entrypoint reads; 2.1 specs (`constant`)
    to `parameterValues`.
    """
    new, old = {}, {}
    types = component.get("inputDefinitions", {}).get("parameters", {})
    for name, spec in task.get("inputs", {}).get("parameters", {}).items():
      if "runtimeValue" in spec:
        rv = spec["runtimeValue"]
        if "constantValue" in rv:
          value = dict(rv["constantValue"])
          if "stringValue" in value:
            value["stringValue"] = self.to_local(value["stringValue"])
          old[name] = value
          continue
        if "constant" in rv:
          value = rv["constant"]
          new[name] = self.to_local(value) if isinstance(value, str) else value
          continue
        raise SpecError(f"task {task_name}: parameter {name} has an "
                        f"unsupported runtimeValue {sorted(rv)}")
      if "componentInputParameter" in spec:
        value = self._root_parameter(spec["componentInputParameter"])
      elif "taskOutputParameter" in spec:
        ref = spec["taskOutputParameter"]
        produced = self.output_parameters.get(ref["producerTask"], {})
        if ref["outputParameterKey"] not in produced:
          raise SpecError(f"task {task_name}: {ref['producerTask']} produced "
                          f"no parameter {ref['outputParameterKey']!r}")
        value = produced[ref["outputParameterKey"]]
      else:
        raise SpecError(f"task {task_name}: parameter {name} has an "
                        f"unsupported kind {sorted(spec)}")
      if isinstance(value, str):
        value = self.to_local(value)
      if "parameterType" in types.get(name, {}):
        new[name] = value
      else:
        kind = types.get(name, {}).get("type", "STRING")
        old[name] = ({"intValue": str(int(value))} if kind == "INT" else
                     {"doubleValue": float(value)} if kind == "DOUBLE" else
                     {"stringValue": value if isinstance(value, str)
                      else json.dumps(value)})
    return new, old

  def _input_artifacts(self, task_name: str, task: Mapping[str, Any]
                       ) -> Dict[str, Dict[str, List[Dict[str, Any]]]]:
    result = {}
    for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
      if "taskOutputArtifact" not in spec:
        raise SpecError(f"task {task_name}: input artifact {key} is not a "
                        f"task output ({sorted(spec)}); not implemented")
      ref = spec["taskOutputArtifact"]
      produced = self.outputs.get(ref["producerTask"], {})
      if ref["outputArtifactKey"] not in produced:
        raise SpecError(f"task {task_name}: {ref['producerTask']} has no "
                        f"output {ref['outputArtifactKey']!r}")
      result[key] = {"artifacts": [_runtime_artifact(a) for a in
                                   produced[ref["outputArtifactKey"]]]}
    return result

  # ----- tasks

  def run(self) -> Dict[str, Any]:
    """Runs every task once; independent tasks run side by side, up to
    max_parallel container processes (as KFP starts their pods), and a
    failure lets the running ones finish but starts nothing new."""
    order = task_order(self.spec)
    tasks = self.spec["root"]["dag"]["tasks"]
    deps = {n: set(task_dependencies(tasks[n])) for n in order}
    name = self.spec.get("pipelineInfo", {}).get("name", "pipeline")
    self.log(f"Running {name} locally: {len(order)} tasks, run {self.run_id} "
             f"under {self.pipeline_root}")
    started, done, running, failure = time.time(), set(), {}, None
    with futures.ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
      while len(done) < len(order):
        ready = [n for n in order if n not in done and n not in running
                 and deps[n] <= done] if failure is None else []
        for task_name in ready:
          if len(running) >= self.max_parallel:
            break
          component, executor = _executor_of(self.spec, task_name)
          t0 = time.time()
          if "container" in executor:
            job = self._start_container(task_name, component,
                                        executor["container"])
            running[task_name] = (pool.submit(_execute, *job[:4]), job, t0)
            continue
          if "resolver" in executor:
            kind = "resolver"
            note = self._resolver_task(task_name, component,
                                       executor["resolver"])
          elif "importer" in executor:
            kind = "importer"
            note = self._importer_task(task_name, component,
                                       executor["importer"])
          else:
            raise SpecError(f"task {task_name}: executor kind "
                            f"{sorted(executor)} is not implemented locally")
          self._finish(task_name, kind, note, t0, len(done) + 1, len(order))
          done.add(task_name)
        if not running:
          if failure is not None:
            raise failure
          continue
        finished, _ = futures.wait([f for f, _, _ in running.values()],
                                   return_when=futures.FIRST_COMPLETED)
        for task_name in [n for n, (f, _, _) in running.items()
                          if f in finished]:
          future, (_, _, _, log_path, executor_input, pending), t0 = \
              running.pop(task_name)
          rc, cpu = future.result()
          if rc != 0:
            failure = failure or TaskFailed(task_name, rc, log_path)
            self.log(f"[{len(done) + 1}/{len(order)}] {task_name} (container): "
                     f"FAILED, exit status {rc} ({time.time() - t0:.0f} s)")
            done.add(task_name)
            continue
          note = self._collect(task_name, executor_input, pending)
          self._finish(task_name, "container", note, t0, len(done) + 1,
                       len(order), cpu)
          done.add(task_name)
    if failure is not None:
      raise failure
    self.summary["seconds"] = round(time.time() - started, 1)
    self.summary["cpu_seconds"] = round(sum(
        t.get("cpu_seconds", 0) for t in self.summary["tasks"].values()), 1)
    os.makedirs(self.run_dir, exist_ok=True)
    with open(os.path.join(self.run_dir, RUN_SUMMARY_FILE), "w") as f:
      json.dump(self.summary, f, indent=1, sort_keys=True)
    self.log(f"Run {self.run_id} finished in {self.summary['seconds']:.0f} s "
             f"({self.summary['cpu_seconds']:.0f} CPU s in tasks); summary: "
             f"{os.path.join(self.run_dir, RUN_SUMMARY_FILE)}")
    return self.summary

  def _finish(self, task_name: str, kind: str, note: str, t0: float, i: int,
              n: int, cpu: Optional[float] = None) -> None:
    seconds = time.time() - t0
    entry = {"kind": kind, "seconds": round(seconds, 1),
             "outputs": self.outputs.get(task_name, {})}
    if cpu is not None:
      entry["cpu_seconds"] = round(cpu, 1)
    self.summary["tasks"][task_name] = entry
    self.store.save()
    self.log(f"[{i}/{n}] {task_name} ({kind}): {note} ({seconds:.0f} s)")

  def _new_artifact(self, task_name: str, key: str,
                    artifact_type: Mapping[str, Any], uri: str,
                    metadata: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, Any]:
    artifact_id, name = self.store.new_name()
    return {"id": artifact_id, "name": name, "type": dict(artifact_type),
            "schema_title": schema_title(artifact_type), "uri": uri,
            "metadata": metadata or {}, "state": "LIVE", "run_id": self.run_id,
            "task": task_name, "output_key": key,
            "create_time": datetime.datetime.now(
                datetime.timezone.utc).isoformat()}

  def executor_input(self, task_name: str, component: Mapping[str, Any]
                     ) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """The ExecutorInput (JSON dict) the launcher builds, and the new outputs."""
    task = self.spec["root"]["dag"]["tasks"][task_name]
    new, old = self._parameters(task_name, task, component)
    task_dir = self.task_dir(task_name)
    outputs, pending = {"artifacts": {}, "parameters": {},
                        "outputFile": os.path.join(task_dir,
                                                   EXECUTOR_OUTPUT_FILE)}, {}
    out_defs = component.get("outputDefinitions", {})
    for key, definition in sorted(out_defs.get("artifacts", {}).items()):
      artifact = self._new_artifact(task_name, key, definition["artifactType"],
                                    os.path.join(task_dir, key))
      pending[key] = artifact
      outputs["artifacts"][key] = {"artifacts": [_runtime_artifact(artifact)]}
    for key in sorted(out_defs.get("parameters", {})):
      outputs["parameters"][key] = {
          "outputFile": os.path.join(task_dir, "parameters", key)}
    inputs: Dict[str, Any] = {"artifacts": self._input_artifacts(task_name,
                                                                 task)}
    if new:
      inputs["parameterValues"] = new
    if old:
      inputs["parameters"] = old
    executor_input = {"inputs": inputs, "outputs": outputs}
    _check_executor_input(executor_input)
    return executor_input, pending

  def _start_container(self, task_name: str, component: Mapping[str, Any],
                       container: Mapping[str, Any]) -> Tuple:
    """(argv, env, cwd, log path, executor input, new outputs) of a task."""
    executor_input, pending = self.executor_input(task_name, component)
    extra = {".pipeline_job_name": self.run_id,
             ".pipeline_job_uuid": self.run_id,
             ".pipeline_task_name": task_name,
             ".pipeline_task_uuid": f"{self.run_id}-{task_name}"}
    argv = [self.to_local(substitute(a, executor_input, extra))
            for a in list(container.get("command", [])) +
            list(container.get("args", []))]
    if not argv:
      raise SpecError(f"task {task_name}: the container has no command")
    if argv[0] in PYTHON_COMMANDS:
      argv[0] = self.python
    env = dict(os.environ)
    for item in container.get("env", []):
      env[item["name"]] = self.to_local(substitute(item.get("value", ""),
                                                   executor_input, extra))
    env["TF_USE_LEGACY_KERAS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [self.local_src_dir] + [p for p in [env.get("PYTHONPATH")] if p])
    task_dir = self.task_dir(task_name)
    os.makedirs(task_dir, exist_ok=True)
    return (argv, env, self.local_src_dir, os.path.join(task_dir, LOG_FILE),
            executor_input, pending)

  def _collect(self, task_name: str, executor_input: Mapping[str, Any],
               pending: Dict[str, Dict[str, Any]]) -> str:
    """Reads the ExecutorOutput into the new artifacts and records them."""
    path = executor_input["outputs"]["outputFile"]
    output = {}
    if os.path.exists(path):
      with open(path) as f:
        output = json.load(f)
    produced = {}
    for key, artifact in pending.items():
      reported = (output.get("artifacts", {}).get(key, {}).get("artifacts")
                  or [{}])[0]
      artifact["metadata"] = reported.get("metadata", {}) or {}
      artifact["uri"] = reported.get("uri") or artifact["uri"]
      self.store.add(artifact)
      produced[key] = [artifact]
    self.outputs[task_name] = produced
    params = {}
    for key, value in output.get("parameterValues", {}).items():
      params[key] = value
    for key, value in output.get("parameters", {}).items():
      params.setdefault(key, _old_value(value))
    self.output_parameters[task_name] = params
    notes = []
    for key, [a] in sorted(produced.items()):
      for flag in NOTED_PROPERTIES.get(a["schema_title"], ()):
        if flag in a["metadata"]:
          notes.append(f"{key} {flag}={_to_text(a['metadata'][flag])}")
    return "ok" + (", " + ", ".join(notes) if notes else "")

  def _resolver_task(self, task_name: str, component: Mapping[str, Any],
                     resolver: Mapping[str, Any]) -> str:
    task = self.spec["root"]["dag"]["tasks"][task_name]
    executor_input = {"inputs": {"artifacts": self._input_artifacts(task_name,
                                                                    task)},
                      "outputs": {}}
    produced, notes = {}, []
    for key, query in sorted(resolver.get("outputArtifactQueries", {}).items()):
      try:
        filter_text = substitute(query["filter"], executor_input)
      except SpecError:
        # An input the filter reads (e.g. the blessing named by the first
        # query) was not found: nothing to resolve, as on a cluster.
        produced[key] = []
        notes.append(f"{key}: none (no input to query with)")
        continue
      found = self.store.query(filter_text)[:1]
      produced[key] = found
      notes.append(f"{key}: " + (f"{found[0]['name']} from run "
                                 f"{found[0]['run_id']}" if found else "none"))
    self.outputs[task_name] = produced
    return "; ".join(notes)

  def _importer_task(self, task_name: str, component: Mapping[str, Any],
                     importer: Mapping[str, Any]) -> str:
    [key] = component.get("outputDefinitions", {}).get("artifacts", {}) or [
        "artifact"]
    uri_spec = importer.get("artifactUri", {})
    if "constantValue" in uri_spec:
      uri = _old_value(uri_spec["constantValue"])
    elif "constant" in uri_spec:
      uri = uri_spec["constant"]
    elif "runtimeParameter" in uri_spec:
      uri = self._root_parameter(uri_spec["runtimeParameter"])
    else:
      raise SpecError(f"task {task_name}: importer without an artifactUri")
    uri = self.to_local(str(uri))
    title = schema_title(importer.get("typeSchema", {}))
    existing = [a for a in self.store.artifacts
                if a["uri"] == uri and a["schema_title"] == title]
    if existing and not importer.get("reimport", False):
      artifact = existing[-1]
      note = f"{key}: {artifact['name']} (already imported)"
    else:
      artifact = self._new_artifact(task_name, key, importer.get("typeSchema",
                                                                 {}), uri,
                                    dict(importer.get("metadata", {}) or {}))
      self.store.add(artifact)
      note = f"{key}: {artifact['name']} imported from {uri}"
    self.outputs[task_name] = {key: [artifact]}
    return note


def _execute(argv: List[str], env: Dict[str, str], cwd: str, log_path: str
             ) -> Tuple[int, float]:
  """Runs one task's process; returns (exit status, CPU seconds it used)."""
  with open(log_path, "w") as log:
    log.write("$ " + " ".join(argv[:4]) + " ...\n")
    log.flush()
    proc = subprocess.Popen(argv, cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, usage.ru_utime + usage.ru_stime


def _runtime_artifact(artifact: Mapping[str, Any]) -> Dict[str, Any]:
  """A stored artifact as ExecutorInput's RuntimeArtifact (JSON)."""
  return {"name": artifact["name"], "type": artifact["type"],
          "uri": artifact["uri"], "metadata": artifact.get("metadata", {})}


def _check_executor_input(executor_input: Mapping[str, Any]) -> None:
  """Parses it as KFP's ExecutorInput proto: only valid messages go out."""
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=g-import-not-at-top
  json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())


def run(spec_path: str, pipeline_root: str, **kwargs) -> Dict[str, Any]:
  """Runs a compiled spec locally; returns the run summary (see LocalRun)."""
  return LocalRun(spec_path, pipeline_root, **kwargs).run()
