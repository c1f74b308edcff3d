"""The run report: one self-contained HTML file per pipeline run.

local_runner.py writes it at the end of every run, a failed one too, to

    DIR/reports/run-<YYYYmmdd-HHMMSS>.html   (the run's start, local time)
    DIR/reports/latest.html                  (a copy of the newest)

and `local_runner.py --report-only --output-dir DIR` rebuilds it from ML
Metadata without running anything. Sections:

* status: succeeded, or where the run stopped and why, and each component's
  state and time;
* data: examples per split, StatisticsGen's statistics of train vs eval,
  ExampleValidator's anomalies, and for span data the drift distances
  against their thresholds;
* models: per stage the metrics beside their baselines, the blessing and its
  reason, what was pushed, warm start, training time and loss per epoch
  (from the trainers' TensorBoard logs, which it links), and the two-stage
  evaluation when the pipeline has one;
* history: the headline metrics of every run of this output directory, one
  point per run, pushed versions marked;
* lineage: which data and trainer configuration produced each pushed version.

Plots are inline SVG (report_plots.py), styles are inline, there is no
script: opening the file fetches nothing. Facts come from report_data.py
(ML Metadata) and report_stats.py (statistics, anomalies, drift).
"""
from __future__ import annotations

import datetime
import html
import json
import logging
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

from pipeline import configs
from runners import run_report
from runners import report_data as D
from runners import report_plots as P
from runners import report_stats as S

REPORTS_DIR = "reports"
LATEST = "latest.html"
TENSORBOARD = ".venv/bin/tensorboard"


def report_dir(output_dir: str) -> str:
  return os.path.join(os.path.abspath(output_dir), REPORTS_DIR)


# -- small HTML helpers ------------------------------------------------------

def esc(x: Any) -> str:
  return html.escape("" if x is None else str(x), quote=True)


def fmt(x: Any) -> str:
  if isinstance(x, bool) or x is None:
    return {True: "yes", False: "no", None: "–"}[x]
  if isinstance(x, float):
    if math.isnan(x):
      return "–"
    return f"{x:.4f}" if abs(x) < 1e5 else f"{x:.4g}"
  return str(x)


def pct(x: Optional[float]) -> str:
  return f'<td class="num">{"–" if x is None else f"{100 * x:.1f} %"}</td>'


def num(x: Any, key: Optional[str] = None) -> str:
  """A numeric cell; `key` tags it (data-key, data-value: the exact value)."""
  attrs = ' class="num"'
  if key is not None:
    attrs += f' data-key="{esc(key)}"'
    if isinstance(x, (int, float)) and not isinstance(x, bool):
      attrs += f' data-value="{esc(repr(x))}"'
  return f"<td{attrs}>{esc(fmt(x))}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
  """rows: lists of ready <td> cells (strings not starting with <td are escaped)."""
  head = "".join(f"<th>{esc(h)}</th>" for h in headers)
  body = []
  for row in rows:
    attrs = ""
    if isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], dict):
      attrs = "".join(f' {k}="{esc(v)}"' for k, v in row[0].items())
      row = row[1]
    cells = "".join(c if str(c).startswith("<td") else f"<td>{esc(c)}</td>" for c in row)
    body.append(f"<tr{attrs}>{cells}</tr>")
  return (f'<table class="{cls}"><thead><tr>{head}</tr></thead>'
          f'<tbody>{"".join(body)}</tbody></table>')


def badge(ok: Optional[bool], yes: str = "yes", no: str = "no") -> str:
  if ok is None:
    return '<span class="badge na">–</span>'
  return (f'<span class="badge ok">{esc(yes)}</span>' if ok
          else f'<span class="badge bad">{esc(no)}</span>')


def file_link(path: str, text: Optional[str] = None) -> str:
  return f'<a href="file://{esc(path)}">{esc(text or path)}</a>'


def section(anchor: str, title: str, body: str) -> str:
  return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1100px;padding:0 16px 48px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:20px 0 4px}h2{font-size:18px;border-bottom:2px solid #ddd;
 padding-bottom:4px;margin-top:32px}h3{font-size:15px;margin:20px 0 6px}
nav a{margin-right:14px}table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;
 background:#f6f6f8;border-radius:3px}code{padding:1px 4px}pre{padding:8px;overflow-x:auto;
 white-space:pre-wrap}.badge{display:inline-block;padding:1px 8px;border-radius:10px;
 font-weight:600;font-size:12px}.ok{background:#dff3e3;color:#116329}
.bad{background:#fde2e1;color:#a40e26}.na{background:#eee;color:#555}
.status{padding:10px 14px;border-radius:6px;margin:12px 0}.status.ok{border:1px solid #9fd4aa}
.status.bad{border:1px solid #f1a7a3}.muted{color:#666}.plot svg{max-width:100%;height:auto}
tr.failed td{background:#fde2e1}tr.pushed td{background:#fff8dc}
table.history,table.lineage{display:block;overflow-x:auto;max-width:100%}
"""


# -- sections ----------------------------------------------------------------

def _status(run: Optional[D.Run], failure: Optional[Dict[str, str]],
            log_path: Optional[str]) -> str:
  failed = run.failed() if run else []
  where = (failure or {}).get("node") or (failed[0] if failed else None)
  error = (failure or {}).get("error")
  if failure or failed:
    lines = [f"<strong>Run FAILED</strong>"
             + (f" at <strong data-key=\"failed_node\">{esc(where)}</strong>" if where else
                " before any component ran")]
    if error:
      lines.append(f'<pre data-key="error">{esc(error)}</pre>')
    else:
      lines.append('<p class="muted">ML Metadata records the failed execution but '
                   "not its error message: see the run's log in "
                   f"{esc(os.path.dirname(log_path) if log_path else 'DIR/logs')}.</p>")
    lines.append("<p>Components after it did not run; nothing was pushed by this "
                 "run, and the served versions stay.</p>")
    cls = "bad"
  elif run and run.unfinished():
    lines = [f"<strong>Run did not finish</strong>: "
             f"{esc(', '.join(run.unfinished()))} still recorded as running "
             "(interrupted?)."]
    cls = "bad"
  else:
    lines = ["<strong>Run succeeded</strong>"]
    cls = "ok"
  if log_path:
    lines.append(f"<p>Full log: {file_link(log_path)}</p>")
  body = f'<div class="status {cls}" data-status="{cls}">{"".join(lines)}</div>'
  if run:
    rows = []
    for node_id, n in sorted(run.nodes.items(), key=lambda kv: kv[1].execution.id):
      attrs = {"data-node": node_id, "data-state": n.state}
      if n.state == "failed":
        attrs["class"] = "failed"
      rows.append((attrs, [node_id, n.state, f'<td class="num">{n.seconds:.1f}</td>']))
    body += "<h3>Components</h3>" + table(["component", "state", "seconds"], rows)
  return body


def _data(run: D.Run, store) -> str:
  parts = []
  gen = run.node(D.EXAMPLE_GEN)
  examples = gen.output("examples") if gen else None
  if examples is not None:
    rows = [[split, num(D.prop(examples, f"num_examples_{split}"), f"examples.{split}")]
            for split in ("train", "eval")]
    catalogue = gen.output("catalogue")
    if catalogue is not None:
      rows.append(["catalogue (movies)",
                   num(D.prop(catalogue, "num_movies"), "catalogue.movies")])
    bad = D.prop(examples, "num_bad_rows", 0)
    if bad:
      rows.append(["skipped unparsable rows", num(bad, "examples.bad_rows")])
    dups = D.prop(examples, "num_duplicates_dropped", 0)
    if dups:
      rows.append(["duplicate ratings dropped (newest kept)",
                   num(dups, "examples.duplicates_dropped")])
    spans = D.prop(examples, "spans", "")
    parts.append(f"<p>Source: <code>{esc(D.prop(examples, 'source', ''))}</code>"
                 + (f"; spans read: <strong>{esc(spans)}</strong>" if spans else "")
                 + f"; split: {esc(D.prop(examples, 'split', ''))}</p>")
    parts.append(table(["split", "examples"], rows))
  else:
    parts.append('<p class="muted">No examples were ingested in this run.</p>')

  stats_node = run.node(D.STATISTICS_GEN)
  stats = stats_node.output("statistics") if stats_node else None
  parts.append("<h3>Statistics: train vs eval</h3>")
  if stats is not None and D.is_live(stats):
    parts.append(_statistics(S.compare_splits(stats)))
  else:
    parts.append('<p class="muted">No statistics in this run.</p>')

  parts.append("<h3>Validation (ExampleValidator → ValidationGate)</h3>")
  found = S.anomalies(run.node(D.EXAMPLE_VALIDATOR))
  gate = run.node(D.VALIDATION_GATE)
  if found is None:
    parts.append('<p class="muted">Not validated in this run.</p>')
  else:
    total = sum(len(v) for v in found.values())
    verdict = ("passed, no anomalies" if total == 0 else
               f"{total} anomal{'y' if total == 1 else 'ies'}: the ValidationGate "
               "stopped the run")
    parts.append(f'<p data-key="validation">{badge(total == 0, "passed", "failed")} '
                 f"{esc(verdict)}"
                 + (f" (gate: {esc(gate.state)})" if gate else "") + "</p>")
    rows = [[split, line] for split, lines in found.items() for line in lines]
    if rows:
      parts.append(table(["split", "anomaly"], rows, "anomalies"))

  drift = S.drift(run, store)
  if drift is not None:
    parts.append("<h3>Drift (newest span vs the one before: DriftGate)</h3>")
    parts.append(_drift(drift))
  return "".join(parts)


def _statistics(compared: Dict[str, Any]) -> str:
  splits = [s for s in ("train", "eval") if s in compared["num_examples"]]
  features = compared["features"]
  out = [
      '<p class="muted">From StatisticsGen (TFDV). TFDV\'s interactive Facets view '
      "(<code>tfdv.visualize_statistics</code>, "
      "<code>display_util.get_statistics_html</code>) is not embedded: it loads "
      "Facets from cdnjs.cloudflare.com and raw.githubusercontent.com when "
      "opened, and this report opens offline. The same statistics follow. In a "
      "notebook: <code>tfdv.visualize_statistics(tfdv.load_stats_binary(train), "
      "tfdv.load_stats_binary(eval))</code> with the FeatureStats.pb files of "
      "the StatisticsGen artifact.</p>"]
  numeric = [(n, per) for n, per in sorted(features.items())
             if any(v.get("kind") == S.NUMERIC for v in per.values())]
  strings = [(n, per) for n, per in sorted(features.items())
             if any(v.get("kind") == S.STRING for v in per.values())]
  if numeric:
    rows = []
    for name, per in numeric:
      for split in splits:
        s = per.get(split, {})
        key = f"stats.{split}.{name}"
        rows.append([name, split, num(s.get("count"), f"{key}.count"),
                     pct(s.get("missing_share")), num(s.get("mean"), f"{key}.mean"),
                     num(s.get("std")), num(s.get("zeros")), num(s.get("min")),
                     num(s.get("median")), num(s.get("max"))])
    out.append("<p>Numeric features</p>" + table(
        ["feature", "split", "count", "missing", "mean", "std dev", "zeros", "min",
         "median", "max"], rows, "stats"))
  if strings:
    rows = []
    for name, per in strings:
      for split in splits:
        s = per.get(split, {})
        top = ", ".join(f"{v} ({int(c)})" for v, c in s.get("top", []))
        rows.append([name, split, num(s.get("count"), f"stats.{split}.{name}.count"),
                     pct(s.get("missing_share")),
                     num(s.get("unique"), f"stats.{split}.{name}.unique"),
                     num(s.get("avg_length")), top])
    out.append("<p>String features</p>" + table(
        ["feature", "split", "count", "missing", "unique", "avg length",
         "top values (count)"], rows, "stats"))
  svg = P.histograms_plot(features, splits, "Numeric features: share of rows per bucket")
  if svg:
    out.append(f'<div class="plot">{svg}</div>')
  return "".join(out)


def _drift(drift: Dict[str, Any]) -> str:
  spans = ""
  if drift.get("current_span") is not None:
    spans = (f"span {drift['current_span']} vs span "
             f"{drift.get('previous_span', '?')}: ")
  state = drift["state"]
  drifted = [m for m in drift["measurements"]
             if m.get("threshold") is not None and m["distance"] > m["threshold"]]
  ok = state != "failed" and not drifted
  head = (f'<p data-key="drift">{badge(ok, "passed", "drift")} {esc(spans)}'
          + ("no feature beyond its threshold" if ok else
             f"{len(drifted)} feature(s) beyond threshold: the DriftGate stopped the run")
          + "</p>")
  rows = []
  for m in sorted(drift["measurements"], key=lambda m: m["feature"]):
    over = m.get("threshold") is not None and m["distance"] > m["threshold"]
    rows.append(({"class": "failed"} if over else {},
                 [m["feature"], m.get("comparator", ""),
                  num(m["distance"], f"drift.{m['feature']}.distance"),
                  num(m.get("threshold"), f"drift.{m['feature']}.threshold"),
                  "DRIFT" if over else "ok"]))
  body = head
  if rows:
    body += table(["feature", "comparator", "distance", "threshold", ""], rows)
  if drift.get("note"):
    body += f'<p class="muted">{esc(drift["note"])}</p>'
  return body


def _tensorboard(model_run_uri: str) -> str:
  return (f"<p>TensorBoard logs: {file_link(model_run_uri)}<br>"
          f"<code>{esc(TENSORBOARD)} --logdir {esc(model_run_uri)}</code> "
          "then open http://localhost:6006</p>")


def _trainer(store, stage: D.Stage, node: Optional[D.NodeRun]) -> str:
  if node is None:
    return '<p class="muted">Trainer did not run.</p>'
  parts = []
  model = node.output("model")
  made_by = D.producer(store, model) if model is not None else None
  seconds = (made_by.last_update_time_since_epoch - made_by.create_time_since_epoch) / 1e3 \
      if made_by is not None else node.seconds
  cached = node.state == "cached"
  parts.append(
      f'<p>Trainer <code>{esc(stage.trainer)}</code>: {esc(node.state)}'
      + (f" (reused the model of execution {made_by.id})" if cached and made_by else "")
      + f'; training time <span data-key="{stage.name}.train_seconds">'
      f"{seconds:.1f}</span> s (the Trainer component's time in ML Metadata)</p>")
  config = node.exec_property("custom_config")
  if config:
    parts.append(f"<p>custom_config: <code>{esc(config)}</code></p>")
  model_run = node.output("model_run")
  if model_run is None:
    return "".join(parts)
  warm = run_report._warm_start_line(model_run.uri)  # pylint: disable=protected-access
  if warm:
    parts.append(f'<p data-key="{stage.name}.warm_start">{esc(warm)}</p>')
  try:
    scalars = D.epoch_scalars(model_run.uri)
  except Exception as e:  # pylint: disable=broad-except
    scalars = {}
    parts.append(f'<p class="muted">TensorBoard logs unreadable: {esc(e)}</p>')
  losses = {run: series["epoch_loss"] for run, series in scalars.items()
            if series.get("epoch_loss")}
  if losses:
    epochs = max(len(v) for v in losses.values())
    parts.append(f'<div class="plot" data-key="{stage.name}.loss_plot" '
                 f'data-epochs="{epochs}">'
                 + P.loss_plot(losses, f"{stage.name}: loss per epoch") + "</div>")
    finals = [f"{run}/{tag} {series[-1][1]:.4f}" for run, tags in sorted(scalars.items())
              for tag, series in sorted(tags.items()) if series]
    parts.append(f'<p class="muted">last epoch: {esc(", ".join(finals))}</p>')
  else:
    parts.append('<p class="muted">No loss per epoch in the TensorBoard logs.</p>')
  parts.append(_tensorboard(model_run.uri))
  return "".join(parts)


def _retrieval_evaluation(evaluation) -> str:
  m = D.retrieval_metrics(evaluation) if D.is_live(evaluation) else None
  if not m:
    h = D.retrieval_headline(evaluation)
    if not h:
      return '<p class="muted">metrics unavailable</p>'
    return table(["metric", "model", "most-popular", "last blessed"],
                 [[h["metric"], num(h["model"], f"retrieval.model.{h['metric']}"),
                   num(h.get("popularity")), num(h.get("baseline"))]])
  columns = [(label, key) for label, key in (("model", "model"),
                                             ("most-popular", "popularity"),
                                             ("last blessed", "baseline_model"))
             if m.get(key)]
  groups = list(m["model"])
  out = []
  for group in groups:
    keys = sorted({k for _, c in columns for k in (m[c].get(group) or {})},
                  key=_metric_order)
    rows = [[k] + [num((m[c].get(group) or {}).get(k),
                       f"retrieval.{c}.{group}.{k}") for _, c in columns]
            for k in keys]
    out.append(f"<p>{esc(group)} (split {esc(m.get('eval_split', 'eval'))}, whole "
               "catalogue)</p>" + table(["metric"] + [l for l, _ in columns], rows))
  if m.get("counts"):
    out.append('<p class="muted">' + esc(", ".join(
        f"{k} {v}" for k, v in m["counts"].items())) + "</p>")
  return "".join(out)


def _metric_order(key: str):
  name, _, k = key.partition("@")
  digits = "".join(ch for ch in k if ch.isdigit())
  return (name, int(digits) if digits else 0, key)


def _ranking_evaluation(evaluation, run: D.Run) -> str:
  overall = D.ranking_metrics(evaluation)
  baselines = D.ranking_baselines(run)
  if not overall and not baselines:
    return '<p class="muted">metrics unavailable</p>'
  labels = list(overall)
  keys = sorted({k for v in overall.values() for k in v})
  headers = ["metric (eval split)"] + labels
  rows = [[k] + [num(overall[l].get(k), f"ranking.{l.replace(' ', '_')}.{k}")
                 for l in labels] for k in keys]
  out = table(headers, rows)
  if baselines:
    out += "<p>Baselines on the same eval split (fitted on the training split)</p>"
    out += table(["baseline", "RMSE"],
                 [[k.replace("_", " "), num(v, f"ranking.baseline.{k}")]
                  for k, v in baselines.items()])
  return out


def _blessing(node: D.NodeRun, stage: str, label: str = "Blessed") -> str:
  blessing = node.output("blessing")
  if blessing is None:
    return ""
  blessed = D.prop(blessing, "blessed", 0) == 1
  why = D.prop(blessing, "blessing_message", "") or ""
  if not why and stage == "ranking":
    evaluation = node.output("evaluation")
    verdict = D.ranking_validation(evaluation) if evaluation is not None else None
    if verdict is not None:
      why = ("TFMA thresholds met (RMSE bound and change vs the last blessed model)"
             if verdict == "" else "TFMA thresholds not met: " + verdict)
  return (f'<p data-key="{stage}.blessed" data-value="{int(blessed)}">{esc(label)}: '
          f"{badge(blessed)} {esc(why)}</p>")


def _pusher(node: Optional[D.NodeRun], stage: str) -> str:
  if node is None:
    return '<p class="muted">Pusher did not run.</p>'
  pushed = node.output("pushed_model")
  if pushed is None:
    return f"<p>Pusher: {esc(node.state)}</p>"
  if D.prop(pushed, "pushed", 0) == 1:
    again = " (cached: pushed by an earlier run)" if node.state == "cached" else ""
    return (f'<p data-key="{stage}.pushed" data-value="1">Pushed version '
            f"<strong>{esc(D.prop(pushed, 'pushed_version', '?'))}</strong> to "
            f"<code>{esc(D.prop(pushed, 'pushed_destination', '?'))}</code>{esc(again)}</p>")
  return (f'<p data-key="{stage}.pushed" data-value="0">Pushed: nothing (not blessed; '
          "the served version stays)</p>")


def _models(run: D.Run, store) -> str:
  parts = []
  for stage in D.stages():
    trainer, ev = run.node(stage.trainer), run.node(stage.evaluator)
    pusher = run.node(stage.pusher)
    if trainer is None and ev is None:
      continue
    body = [_trainer(store, stage, trainer)]
    if ev is not None:
      evaluation = ev.output("evaluation")
      if evaluation is not None:
        body.append("<h4>Evaluation</h4>")
        try:
          body.append(_retrieval_evaluation(evaluation) if stage.name == "retrieval"
                      else _ranking_evaluation(evaluation, run))
        except Exception as e:  # pylint: disable=broad-except
          body.append(f'<p class="muted">metrics unreadable: {esc(e)}</p>')
      two_stage = run.node(D.TWO_STAGE_EVALUATOR) if stage.name == "ranking" else None
      body.append(_blessing(ev, stage.name, "TFMA rating check" if two_stage else "Blessed"))
      if two_stage is not None:  # the blessing the ranking Pusher follows
        body.append(_blessing(two_stage, "ranking.two_stage", "Blessed (two-stage evaluation, "
                                                      "which the Pusher follows)"))
    else:
      body.append('<p class="muted">Evaluator did not run.</p>')
    body.append(_pusher(pusher, stage.name))
    parts.append(f'<div class="stage" id="stage-{stage.name}"><h3>'
                 f"{esc(stage.name.capitalize())}</h3>{''.join(body)}</div>")
  two = D.two_stage_metrics(run)
  if two:
    parts.append(two_stage_html(two))
  batch = run.node("BatchRecommender")
  recs = batch.output("recommendations") if batch else None
  if recs is not None:
    props = {k: D.prop(recs, k) for k in sorted(recs.custom_properties)
             if k not in ("tfx_version", "is_external")}
    parts.append("<h3>Batch recommendations</h3>" + table(
        ["property", "value"], [[k, v] for k, v in props.items()])
        + f"<p>{file_link(recs.uri)}</p>")
  if not parts:
    return '<p class="muted">No model was trained in this run.</p>'
  return "".join(parts)


def two_stage_html(two: Dict[str, Any]) -> str:
  """TwoStageEvaluator's metrics.json, every row and metric key present."""
  k = two.get("k")
  rows_in = {name: metrics for name, metrics in (two.get("rows") or {}).items()}
  keys = []
  for metrics in rows_in.values():
    for key in (metrics or {}):
      if key not in keys:
        keys.append(key)
  rows = []
  for name, metrics in rows_in.items():
    if metrics is None:
      rows.append([name] + ["(not computed)"] * len(keys))
    else:
      rows.append([name] + [num(metrics.get(key), f"two_stage.{name}.{key}")
                            for key in keys])
  out = [f'<div class="stage" id="stage-two-stage"><h3>Two-stage (retrieve → rank), '
         f"top {esc(k)}</h3>", table(["scorer"] + keys, rows)]
  rating = two.get("rating")
  if rating:
    out.append("<p>Rating</p>" + table(
        ["metric", "value"], [[key, num(v, f"two_stage.rating.{key}")]
                              for key, v in rating.items()]))
  blessing = two.get("blessing")
  if blessing:
    blessed = bool(blessing.get("blessed"))
    out.append(f'<p data-key="two_stage.blessed" data-value="{int(blessed)}">Blessed: '
               f"{badge(blessed)} {esc(blessing.get('message', ''))}</p>")
  out.append("</div>")
  return "".join(out)


def _history(runs: List[D.Run]) -> str:
  if not runs:
    return '<p class="muted">No runs recorded.</p>'
  heads = [D.headline(r) for r in runs]
  pushes = D.new_pushes(runs)
  labels = [_short(r.run_id) for r in runs]
  pushed_marks: Dict[str, Dict[int, str]] = {"retrieval": {}, "ranking": {}}
  for i, items in pushes.items():
    for stage, art in items:
      pushed_marks[stage][i] = f"v{D.prop(art, 'pushed_version', '?')}"
  col = lambda key: [h.get(key, math.nan) for h in heads]
  panels = []
  metric = next((h["retrieval.metric"] for h in heads if "retrieval.metric" in h), None)
  if metric:
    panels.append({"title": f"Retrieval {metric} (higher is better)", "ylabel": metric,
                   "main": "model",
                   "lines": {"model": col("retrieval.model"),
                             "most-popular": col("retrieval.most_popular")},
                   "pushed": pushed_marks["retrieval"]})
  if any("ranking.model" in h for h in heads):
    panels.append({"title": "Ranking RMSE (lower is better)", "ylabel": "RMSE",
                   "main": "model",
                   "lines": {"model": col("ranking.model"),
                             "global mean": col("ranking.global_mean"),
                             "user+item bias": col("ranking.user_item_bias")},
                   "pushed": pushed_marks["ranking"]})
  two_rows = sorted({key for h in heads for key in h
                     if key.startswith("two_stage.") and key != "two_stage.k"})
  if two_rows:
    k = next(h["two_stage.k"] for h in heads if "two_stage.k" in h)
    panels.append({"title": f"Two-stage ndcg@{k} (higher is better)",
                   "ylabel": f"ndcg@{k}", "main": "two_stage",
                   "lines": {key.split(".", 1)[1]: col(key) for key in two_rows}})
  out = []
  if panels:
    out.append(f'<div class="plot" data-key="history_plot" data-points="{len(runs)}">'
               + P.history_plot(panels, labels, "Headline metrics per run") + "</div>")
  headers = ["#", "run", "status"]
  keys = []
  if metric:
    headers += [f"retrieval {metric}", "most-popular"]
    keys += ["retrieval.model", "retrieval.most_popular"]
  if any("ranking.model" in h for h in heads):
    headers += ["ranking RMSE", "global mean", "user+item bias"]
    keys += ["ranking.model", "ranking.global_mean", "ranking.user_item_bias"]
  for key in two_rows:
    headers.append(f"ndcg {key.split('.', 1)[1]}")
    keys.append(key)
  headers.append("pushed")
  rows = []
  for i, (run, h) in enumerate(zip(runs, heads)):
    states = [n.state for n in run.nodes.values()]
    status = ("failed at " + ", ".join(run.failed()) if run.failed() else
              "did not finish" if run.unfinished() else
              f"ok ({states.count('complete')} computed, {states.count('cached')} cached)")
    pushed = ", ".join(f"{stage} v{D.prop(a, 'pushed_version', '?')}"
                       for stage, a in pushes.get(i, []))
    attrs = {"data-run": run.run_id}
    if pushed:
      attrs["class"] = "pushed"
    rows.append((attrs, [num(i + 1), run.run_id, status]
                 + [num(h.get(key, math.nan), f"history.{i + 1}.{key}") for key in keys]
                 + [pushed]))
  out.append(table(headers, rows, "history"))
  out.append('<p class="muted">Read from ML Metadata: one point per pipeline run of '
             "this output directory (a cached re-run repeats the numbers of the run "
             "it reused). ★ marks runs that pushed a new version.</p>")
  return "".join(out)


def _short(run_id: str) -> str:
  try:
    return datetime.datetime.fromisoformat(run_id).strftime("%m-%d %H:%M:%S")
  except ValueError:
    return run_id


def _lineage(pushes: List[D.Push]) -> str:
  if not pushes:
    return '<p class="muted">No version has been pushed from this output directory.</p>'
  rows = []
  for p in reversed(pushes):  # newest first
    data = "; ".join(f"{k}: {v}" for k, v in p.data.items())
    code = "; ".join(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
                     for k, v in p.code.items())
    rows.append(({"data-stage": p.stage, "data-version": p.version},
                 [p.stage, p.version, p.run_id,
                  p.destination + ("" if p.live else " (deleted)"),
                  data, json.dumps(p.trainer_config, sort_keys=True), code]))
  return table(["model", "version", "pushed by run", "destination",
                "data (MovieLensExampleGen)", "trainer custom_config", "code"],
               rows, "lineage")


# -- the whole report ----------------------------------------------------------

def build(output_dir: str, pipeline_name: str = configs.PIPELINE_NAME,
          failure: Optional[Dict[str, str]] = None, started_at: Optional[float] = None,
          log_path: Optional[str] = None):
  """(html, stamp): the report of the newest run of `output_dir`.

  failure: {"node": component id or None, "error": message} of a run that
  failed; started_at: when that run started (time.time()), so that a run
  that failed before registering in ML Metadata is not mistaken for the
  previous one.
  """
  paths = configs.output_paths(output_dir)
  store, runs = None, []
  if os.path.exists(paths["metadata_path"]):
    store = run_report.open_store(paths["metadata_path"])
    runs = D.load_runs(store, pipeline_name)
  run = runs[-1] if runs else None
  if run is not None and started_at is not None and run.started < started_at - 1:
    run = None  # this attempt never reached ML Metadata
  stamp = run.stamp if run else datetime.datetime.fromtimestamp(
      started_at or time.time()).strftime("%Y%m%d-%H%M%S")
  title = f"Run report: {pipeline_name}, run {run.run_id if run else stamp}"
  body = [f"<h1>{esc(title)}</h1>",
          f'<p class="muted">Output directory <code>{esc(paths["output_dir"])}</code>; '
          f"generated {esc(datetime.datetime.now().isoformat(timespec='seconds'))} from "
          f"ML Metadata ({esc(paths['metadata_path'])}).</p>",
          '<nav><a href="#status">Status</a><a href="#data">Data</a>'
          '<a href="#models">Models</a><a href="#history">History</a>'
          '<a href="#lineage">Lineage</a><a href="#tensorboard">TensorBoard</a></nav>',
          section("status", "Status", _status(run, failure, log_path))]
  if run is not None:
    body.append(section("data", "Data", _guarded(_data, run, store)))
    body.append(section("models", "Models", _guarded(_models, run, store)))
  else:
    body.append(section("data", "Data", '<p class="muted">This run recorded nothing.</p>'))
    body.append(section("models", "Models", '<p class="muted">No model was trained.</p>'))
  body.append(section("history", "History", _guarded(_history, runs)))
  body.append(section("lineage", "Lineage of pushed versions",
                      _guarded(lambda: _lineage(D.lineage(store, runs) if store else []))))
  body.append(section("tensorboard", "TensorBoard", _tensorboard_all(paths)))
  doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
         f"<title>{esc(title)}</title>"
         '<meta name="viewport" content="width=device-width, initial-scale=1">'
         f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
  return doc, stamp


def _tensorboard_all(paths: Dict[str, str]) -> str:
  root = paths["pipeline_root"]
  return ("<p>Each Trainer writes TensorBoard logs (loss and metrics per epoch) into its "
          "ModelRun artifact, <code>" + esc(os.path.join(root, "<Trainer id>", "model_run",
                                                         "<id>")) + "</code>. All "
          "runs of all trainers side by side:</p>"
          f"<pre>{esc(TENSORBOARD)} --logdir {esc(root)}</pre>"
          "<p>then open http://localhost:6006 (run from the repository root).</p>")


def _guarded(fn, *args) -> str:
  """A section that cannot be built says why instead of losing the report."""
  try:
    return fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("Run report: a section failed")
    return f'<p class="bad">This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>'


def write(output_dir: str, pipeline_name: str = configs.PIPELINE_NAME,
          failure: Optional[Dict[str, str]] = None, started_at: Optional[float] = None,
          log_path: Optional[str] = None) -> str:
  """Writes reports/run-<stamp>.html and reports/latest.html; returns the first."""
  doc, stamp = build(output_dir, pipeline_name, failure, started_at, log_path)
  out_dir = report_dir(output_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"run-{stamp}.html")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(doc)
  os.replace(tmp, path)
  latest_tmp = os.path.join(out_dir, f".{LATEST}.tmp")
  shutil.copyfile(path, latest_tmp)
  os.replace(latest_tmp, os.path.join(out_dir, LATEST))
  return path


def write_for_runner(output_dir: str, failed_node: Optional[str] = None,
                     error: Optional[BaseException] = None,
                     started_at: Optional[float] = None,
                     log_path: Optional[str] = None) -> Optional[str]:
  """write() for local_runner: never raises (a report problem does not change
  the run's outcome); returns the report's path, or None after a warning."""
  failure = None
  if error is not None:
    failure = {"node": failed_node, "error": f"{type(error).__name__}: {error}"}
  try:
    return write(output_dir, failure=failure, started_at=started_at, log_path=log_path)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("Run report failed")
    print(f"⚠ Run report failed (the run is not affected): {type(e).__name__}: {e}",
          file=sys.stderr)
    return None


def report_only(output_dir: str) -> int:
  """local_runner --report-only: the newest run's report, rebuilt; 0 / 1."""
  paths = configs.output_paths(output_dir)
  if not os.path.exists(paths["metadata_path"]):
    print(f"✘ No ML Metadata at {paths['metadata_path']}: nothing has run with "
          f"--output-dir {output_dir} yet.", file=sys.stderr)
    return 1
  path = write(output_dir)
  print(f"Run report: {path}\n  (latest: {os.path.join(report_dir(output_dir), LATEST)})")
  return 0
