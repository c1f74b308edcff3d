"""Span inputs: {SPAN} matching, RangeConfig windows, errors, ingestion, cache key."""
import json
import os

import pytest
import tensorflow as tf

from components.ingestion import IngestionError
from components.ingestion import detect_source_family
from components.ingestion import ingest
from components.ingestion import spans
from tests import synthetic_data

SMALL = dict(num_users=12, num_movies=24, ratings_per_user=5)  # 60 ratings


def _count(base_dir, split):
  paths = ingest.split_files(base_dir, split)
  return sum(1 for _ in tf.data.TFRecordDataset(paths, compression_type="GZIP"))


def _dirs(root, names):
  for name in names:
    os.makedirs(os.path.join(root, name))


# -- matching ----------------------------------------------------------------
def test_find_spans_matches_numbered_folders(tmp_path):
  _dirs(tmp_path, ["span-1", "span-2", "span-10", "other"])
  found = spans.find_spans(str(tmp_path / "span-{SPAN}"))
  assert found == {n: str(tmp_path / f"span-{n}") for n in (1, 2, 10)}


def test_find_spans_with_width_and_zips(tmp_path):
  for name in ("ml-001.zip", "ml-002.zip", "ml-7.zip"):
    (tmp_path / name).write_bytes(b"")
  found = spans.find_spans(str(tmp_path / "ml-{SPAN:3}.zip"))
  assert sorted(found) == [1, 2]  # ml-7.zip has not the width of 3
  assert spans.fill(str(tmp_path / "ml-{SPAN:3}.zip"), 4).endswith("ml-004.zip")


def test_no_span_matches_names_pattern_and_folder(tmp_path):
  _dirs(tmp_path, ["data-1"])
  pattern = str(tmp_path / "span-{SPAN}")
  with pytest.raises(IngestionError) as e:
    spans.find_spans(pattern)
  assert pattern in str(e.value) and f"nothing in {tmp_path} " in str(e.value)


def test_non_numeric_and_duplicate_spans_are_errors(tmp_path):
  _dirs(tmp_path, ["span-1", "span-latest"])
  with pytest.raises(IngestionError, match="'latest' is not a span number"):
    spans.find_spans(str(tmp_path / "span-{SPAN}"))
  os.rmdir(tmp_path / "span-latest")
  _dirs(tmp_path, ["span-01"])
  with pytest.raises(IngestionError, match="span 1 matches twice"):
    spans.find_spans(str(tmp_path / "span-{SPAN}"))


def test_malformed_patterns(tmp_path):
  with pytest.raises(IngestionError, match="Only one"):
    spans.find_spans(str(tmp_path / "{SPAN}" / "span-{SPAN}"))
  with pytest.raises(IngestionError, match="VERSION"):
    spans.find_spans(str(tmp_path / "span-{SPAN}-{VERSION}"))


# -- windows -----------------------------------------------------------------
@pytest.mark.parametrize("config,expected", [
    (None, [5]),
    ({"rolling_range": {"num_spans": 2}}, [4, 5]),
    ({"rolling_range": {"num_spans": 10}}, [1, 2, 4, 5]),
    ('{"rolling_range": {"num_spans": 3}}', [4, 5]),  # numbers: 3 is missing
    ({"rolling_range": {"num_spans": 10, "start_span_number": 2}}, [2, 4, 5]),
    ({"static_range": {"start_span_number": 1, "end_span_number": 3}}, [1, 2]),
])
def test_select_spans(config, expected):
  assert spans.select_spans([1, 2, 4, 5], config) == expected


def test_select_spans_errors():
  with pytest.raises(IngestionError, match=r"spans 7\.\.9 selects none"):
    spans.select_spans([1, 2], {"static_range": {"start_span_number": 7,
                                                 "end_span_number": 9}})
  with pytest.raises(IngestionError, match="num_spans must be >= 1"):
    spans.select_spans([1], {"rolling_range": {"num_spans": 0}})
  with pytest.raises(IngestionError, match="is not a RangeConfig"):
    spans.parse_range_config('{"rolling": 2}')


def test_previous_span_is_the_one_before_the_newest(tmp_path):
  _dirs(tmp_path, ["s1", "s3", "s4"])
  selection = spans.resolve(str(tmp_path / "s{SPAN}"))
  assert (selection.spans, selection.newest, selection.previous) == ([4], 4, 3)
  first = spans.resolve(str(tmp_path / "s{SPAN}"),
                        {"static_range": {"start_span_number": 1,
                                          "end_span_number": 1}})
  assert (first.newest, first.previous) == (1, None)


# -- ingestion ---------------------------------------------------------------
def test_ingest_rolling_window_union_and_drift_splits(tmp_path):
  pattern = synthetic_data.write_spans(str(tmp_path / "in"), (1, 2, 3),
                                       **SMALL)
  out = tmp_path / "out"
  summary = ingest.ingest(
      pattern, examples_dir=str(out / "e"), catalogue_dir=str(out / "c"),
      drift_dir=str(out / "d"), range_config={"rolling_range": {"num_spans": 2}})
  assert summary.spans == [2, 3] and summary.span == 3
  assert summary.previous_span == 2
  # The union of 2 spans x 60 ratings, a (user, movie) pair rated in both
  # once (its newest rating: duplicates.py).
  pairs = set()
  for span in (2, 3):
    with open(tmp_path / "in" / f"span-{span}" / "u.data") as f:
      pairs |= {tuple(line.split("\t")[:2]) for line in f if line.strip()}
  assert 60 < len(pairs) < 120
  assert sum(summary.num_examples.values()) == len(pairs)
  assert summary.num_duplicates == 120 - len(pairs)
  assert summary.num_drift_examples == {"current": 60, "previous": 60}
  assert _count(str(out / "d"), "current") == 60
  assert _count(str(out / "d"), "previous") == 60
  assert summary.source_family == "100k"
  assert detect_source_family(pattern) == "100k"


def test_ingest_first_span_has_no_previous(tmp_path):
  pattern = synthetic_data.write_spans(str(tmp_path / "in"), (1,), **SMALL)
  out = tmp_path / "out"
  summary = ingest.ingest(pattern, examples_dir=str(out / "e"),
                          catalogue_dir=str(out / "c"),
                          drift_dir=str(out / "d"))
  assert (summary.spans, summary.previous_span) == ([1], None)
  assert summary.num_drift_examples == {"current": 60}
  assert not ingest.split_files(str(out / "d"), "previous")


def test_catalogue_is_the_union_newest_span_wins(tmp_path):
  pattern = synthetic_data.write_spans(str(tmp_path / "in"), (1, 2), **SMALL)
  newest = tmp_path / "in" / "span-2" / "u.item"
  lines = newest.read_bytes().splitlines(keepends=True)
  # Span 2 renames movie 2 and drops the last (never rated) movie.
  fields = lines[1].split(b"|")
  fields[1] = b"Renamed (1999)"
  lines[1] = b"|".join(fields)
  newest.write_bytes(b"".join(lines[:-1]))
  out = tmp_path / "out"
  summary = ingest.ingest(pattern, examples_dir=str(out / "e"),
                          catalogue_dir=str(out / "c"),
                          range_config={"rolling_range": {"num_spans": 2}})
  assert summary.num_movies == 24 + 3  # the dropped movie is still there
  titles = {}
  paths = ingest.split_files(str(out / "c"), "catalogue")
  for record in tf.data.TFRecordDataset(paths, compression_type="GZIP"):
    ex = tf.train.Example.FromString(record.numpy()).features.feature
    titles[ex["movie_id"].bytes_list.value[0]] = (
        ex["movie_title"].bytes_list.value[0])
  assert titles[b"2"] == b"Renamed (1999)"


def test_data_config_spans(tmp_path):
  for span, rows in ((1, ["u1,i1,4", "u2,i2,5"]), (2, ["u1,i3,3"])):
    (tmp_path / f"events-{span}.csv").write_text(
        "user,item,stars\n" + "\n".join(rows) + "\n")
  config = tmp_path / "data.yaml"
  config.write_text("interactions:\n  path: events-{SPAN}.csv\n  columns:\n"
                    "    user: user\n    item: item\n    rating: stars\n")
  out = tmp_path / "out"
  summary = ingest.ingest(
      data_config=str(config), examples_dir=str(out / "e"),
      catalogue_dir=str(out / "c"), drift_dir=str(out / "d"),
      eval_fraction=0.5, range_config={"rolling_range": {"num_spans": 2}})
  assert summary.spans == [1, 2] and summary.source_family == "custom"
  assert sum(summary.num_examples.values()) == 3
  assert summary.num_movies == 3  # items seen in either span
  assert summary.num_drift_examples == {"current": 1, "previous": 2}


def test_spans_of_different_formats_are_an_error(tmp_path):
  synthetic_data.write_spans(str(tmp_path), (1,), **SMALL)
  os.makedirs(tmp_path / "span-2")
  (tmp_path / "span-2" / "ratings.csv").write_text(
      "userId,movieId,rating,timestamp\n1,1,4,1\n")
  (tmp_path / "span-2" / "movies.csv").write_text(
      "movieId,title,genres\n1,A (1995),Drama\n")
  with pytest.raises(IngestionError, match="same format"):
    ingest.ingest(str(tmp_path / "span-{SPAN}"),
                  examples_dir=str(tmp_path / "e"),
                  catalogue_dir=str(tmp_path / "c"),
                  range_config={"rolling_range": {"num_spans": 2}})


def test_range_config_without_pattern_is_an_error(ml100k_dir, tmp_path):
  with pytest.raises(IngestionError, match="no {SPAN} pattern"):
    ingest.ingest(ml100k_dir, examples_dir=str(tmp_path / "e"),
                  catalogue_dir=str(tmp_path / "c"),
                  range_config={"rolling_range": {"num_spans": 2}})


# -- component and executor --------------------------------------------------
def test_component_with_spans(tmp_path):
  from components.ingestion import MovieLensExampleGen
  pattern = synthetic_data.write_spans(str(tmp_path), (1, 2), **SMALL)
  gen = MovieLensExampleGen(source=pattern,
                            range_config={"rolling_range": {"num_spans": 2}})
  assert gen.uses_spans
  assert set(gen.outputs) == {"examples", "catalogue", "drift_examples"}
  assert gen.exec_properties["range_config"] == (
      '{"rolling_range":{"num_spans":2}}')
  with pytest.raises(ValueError, match="needs a {SPAN} pattern"):
    MovieLensExampleGen(source=str(tmp_path / "span-1"),
                        range_config={"rolling_range": {"num_spans": 2}})
  assert not MovieLensExampleGen(source=str(tmp_path / "span-1")).uses_spans


def test_fingerprint_covers_every_span(tmp_path):
  from components.ingestion.component import source_fingerprint
  pattern = synthetic_data.write_spans(str(tmp_path), (1, 2), **SMALL)
  before = source_fingerprint(pattern)
  assert before
  # A new span changes it even though the default window reads one span ...
  synthetic_data.write_ml100k(str(tmp_path / "span-3"), seed=3, **SMALL)
  with_new = source_fingerprint(pattern)
  assert with_new != before
  # ... and so does a change inside an old span.
  with open(tmp_path / "span-1" / "u.data", "a") as f:
    f.write("1\t1\t3\t880000000\n")
  assert source_fingerprint(pattern) != with_new


def test_executor_sets_span_properties(tmp_path):
  from tfx.types import artifact_utils
  from tfx.types import standard_artifacts
  from components.ingestion import executor
  pattern = synthetic_data.write_spans(str(tmp_path / "in"), (4, 5, 6),
                                       **SMALL)
  arts = {}
  for key in ("examples", "catalogue", "drift_examples"):
    arts[key] = standard_artifacts.Examples()
    arts[key].uri = str(tmp_path / key)
  executor.Executor().Do(
      {}, {k: [a] for k, a in arts.items()},
      {"source": pattern, "split": "random", "eval_fraction": 0.2,
       "range_config": '{"rolling_range": {"num_spans": 2}}'})
  examples, drift = arts["examples"], arts["drift_examples"]
  assert examples.span == 6 and arts["catalogue"].span == 6
  assert examples.get_string_custom_property("spans") == "5,6"
  assert artifact_utils.decode_split_names(drift.split_names) == [
      "current", "previous"]
  assert drift.span == 6
  assert drift.get_int_custom_property("current_span") == 6
  assert drift.get_int_custom_property("previous_span") == 5
  assert drift.get_int_custom_property("num_examples_current") == 60


# -- pipeline wiring ---------------------------------------------------------
def test_pipeline_gates_transform_on_drift_only_for_spans(tmp_path):
  from pipeline import configs
  from pipeline import pipeline as pipeline_lib
  pattern = synthetic_data.write_spans(str(tmp_path / "data"), (1, 2), **SMALL)
  p = pipeline_lib.create_pipeline(
      "t", str(tmp_path / "root"), pattern, str(tmp_path / "serving"),
      rolling_spans=2, drift_thresholds={"user_rating": 0.2, "user_id": None})
  by_id = {c.id: c for c in p.components}
  drift = by_id["DriftGate"]
  assert "DriftStatisticsGen" in by_id and "ImportSchemaGen" in by_id
  assert {n.id for n in by_id["Transform"].upstream_nodes} >= {
      "ValidationGate", "DriftGate"}
  assert "ValidationGate" in {n.id for n in drift.upstream_nodes}
  thresholds = json.loads(drift.exec_properties["thresholds"])
  assert thresholds["user_rating"] == 0.2 and "user_id" not in thresholds
  assert thresholds["movie_id"] == configs.DRIFT_THRESHOLDS["movie_id"]
  assert json.loads(by_id["MovieLensExampleGen"].exec_properties[
      "range_config"]) == {"rolling_range": {"num_spans": 2}}

  plain = pipeline_lib.create_pipeline(
      "t", str(tmp_path / "root"), str(tmp_path / "data" / "span-1"),
      str(tmp_path / "serving"))
  ids = [c.id for c in plain.components]
  assert "DriftGate" not in ids and "DriftStatisticsGen" not in ids
  with pytest.raises(ValueError, match="not both"):
    pipeline_lib.create_pipeline(
        "t", str(tmp_path / "root"), pattern, str(tmp_path / "serving"),
        rolling_spans=2, range_config={"rolling_range": {"num_spans": 2}})


def test_span_pipeline_compiles_for_kubeflow(tmp_path):
  import yaml
  import kubeflow_runner
  pattern = synthetic_data.write_spans(str(tmp_path / "data"), (1, 2), **SMALL)
  out = str(tmp_path / "pipeline.yaml")
  assert kubeflow_runner.main(["--pipeline-root", "gs://bucket/root",
                               "--data", pattern, "--output", out]) == 0
  with open(out) as f:
    spec = yaml.safe_load(f)
  spec = spec.get("pipelineSpec", spec)
  tasks = spec["root"]["dag"]["tasks"]
  assert "DriftGate" in tasks["Transform"]["dependentTasks"]
  assert "ValidationGate" in tasks["DriftGate"]["dependentTasks"]
  assert "components.DataDriftResult" in yaml.safe_dump(spec)
