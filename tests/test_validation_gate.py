"""Curated schemas + ValidationGate: clean data passes, bad data stops the run.

The end-to-end tests run the real pieces on small data: GZIP TFRecords of
contract tf.Examples in the ExampleGen layout, the stock StatisticsGen and
ExampleValidator executors, then the gate's executor.
"""
import json
import os
import shutil

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_transform.tf_metadata import schema_utils
from tfx.components.example_validator import executor as ev_executor
from tfx.components.statistics_gen import executor as sg_executor
from tfx.types import artifact_utils
from tfx.types import channel
from tfx.types import standard_artifacts

from common import features as F
from components import validation_gate as vg
from pipeline import schemas
from pipeline.schemas import curate
from tests import synthetic_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ML100K = os.path.join(REPO_ROOT, "..", "shared", "datasets", "ml-100k")
YEAR_2200 = 7258118400  # 2200-01-01 UTC


# --------------------------------------------------------------------------
# Helpers.

@pytest.fixture(scope="module")
def rows_100k(tmp_path_factory):
  """Clean 100k-like rows (synthetic GroupLens files parsed as TFDS does)."""
  path = str(tmp_path_factory.mktemp("ml100k"))
  synthetic_data.write_ml100k(path, num_users=30, ratings_per_user=20)
  return list(curate.ml100k_rows(path))


def _anomalies(rows, family):
  stats = curate.statistics_of_rows(rows)
  return tfdv.validate_statistics(stats, schemas.load_schema(family))


def _artifact(cls, uri):
  a = cls()
  a.uri = uri
  os.makedirs(uri, exist_ok=True)
  return a


def _validate_with_tfx(tmp_path, splits, family="100k"):
  """Writes `splits` {name: rows} as ExampleGen output and runs the stock
  StatisticsGen and ExampleValidator executors; returns ExampleAnomalies."""
  examples = _artifact(standard_artifacts.Examples, str(tmp_path / "examples"))
  examples.split_names = artifact_utils.encode_split_names(list(splits))
  for split, rows in splits.items():
    split_dir = os.path.join(examples.uri, f"Split-{split}")
    os.makedirs(split_dir)
    with tf.io.TFRecordWriter(os.path.join(split_dir, "data_tfrecord-0.gz"),
                              options="GZIP") as w:
      for row in rows:
        w.write(F.to_tf_example(row).SerializeToString())
  stats = _artifact(standard_artifacts.ExampleStatistics,
                    str(tmp_path / "statistics"))
  sg_executor.Executor().Do({"examples": [examples]}, {"statistics": [stats]},
                            {"exclude_splits": "[]"})
  schema = _artifact(standard_artifacts.Schema, str(tmp_path / "schema"))
  shutil.copy(schemas.schema_path(family),
              os.path.join(schema.uri, "schema.pbtxt"))
  anomalies = _artifact(standard_artifacts.ExampleAnomalies,
                        str(tmp_path / "anomalies"))
  ev_executor.Executor().Do({"statistics": [stats], "schema": [schema]},
                            {"anomalies": [anomalies]},
                            {"exclude_splits": "[]"})
  return anomalies


def _run_gate(tmp_path, anomalies, splits_to_check=None):
  result = _artifact(vg.DataValidationResult, str(tmp_path / "gate_result"))
  props = {}
  if splits_to_check is not None:
    props["splits_to_check"] = splits_to_check
  executor = vg.ValidationGate.EXECUTOR_SPEC.executor_class()
  executor.Do({"anomalies": [anomalies]}, {"result": [result]}, props)
  return result


def _train_eval(rows):
  cut = len(rows) * 4 // 5
  return {"train": list(rows[:cut]), "eval": list(rows[cut:])}


# --------------------------------------------------------------------------
# Schemas.

def test_schema_paths():
  for family in ("100k", "1m", "current"):
    assert os.path.isfile(schemas.schema_path(family))
    assert tfdv.load_schema_text(schemas.schema_path(family)).feature
  assert schemas.schema_path("custom") is None
  assert schemas.load_schema("custom") is None
  with pytest.raises(ValueError):
    schemas.schema_path("ml-7m")


@pytest.mark.parametrize("family", ["100k", "1m", "current"])
def test_schema_follows_transform_conventions(family):
  schema = schemas.load_schema(family)
  names = [f.name for f in schema.feature]
  assert names == curate.FAMILY_FEATURES[family]
  assert not schema.string_domain
  spec = schema_utils.schema_as_feature_spec(schema).feature_spec
  for name in names:
    feature = next(f for f in schema.feature if f.name == name)
    assert feature.presence.min_fraction == 1.0
    assert feature.presence.min_count == 1
    assert not feature.HasField("string_domain")
    assert not feature.HasField("domain")
    if F.FEATURES[name].varlen:
      assert not feature.HasField("shape")
      assert isinstance(spec[name], tf.io.VarLenFeature)
    else:
      assert [d.size for d in feature.shape.dim] == [1]
      assert spec[name] == tf.io.FixedLenFeature([1], spec[name].dtype)
    assert not feature.HasField("distribution_constraints")
    assert not feature.HasField("drift_comparator")
    assert not feature.HasField("skew_comparator")


def test_schemas_are_what_curate_makes():
  """The checked-in files are exactly curate.py's output (no stray edits)."""
  inferred = tfdv.infer_schema(curate.statistics_of_rows(
      [curate.tfds_100k_row({
          "user_id": "1", "movie_id": "2", "movie_title": "A (1995)",
          "movie_genres": ["Comedy"], "user_rating": "4",
          "timestamp": "880000000", "user_gender": True,
          "bucketized_user_age": 25, "raw_user_age": 27,
          "user_occupation_label": "writer", "user_occupation_text": "writer",
          "user_zip_code": "12345"})]))
  for family in curate.FAMILY_FEATURES:
    with open(schemas.schema_path(family)) as f:
      assert f.read() == curate.schema_text(curate.curate(inferred, family),
                                            family)


def test_clean_100k_like_data_has_no_anomalies(rows_100k):
  anomalies = _anomalies(rows_100k, "100k")
  assert not anomalies.anomaly_info, anomalies
  assert not anomalies.HasField("dataset_anomaly_info")


@pytest.mark.parametrize("feature,value,short", [
    (F.USER_RATING, 7.0, "Out-of-range"),
    (F.USER_RATING, 0.0, "Out-of-range"),
    (F.USER_GENDER, 2, "Out-of-range"),
    (F.TIMESTAMP, YEAR_2200, "Out-of-range"),
    (F.TIMESTAMP, 880000000000, "Out-of-range"),  # milliseconds
    (F.MOVIE_GENRES, [3, 21], "Out-of-range"),
    (F.USER_OCCUPATION_LABEL, 22, "Out-of-range"),
    (F.RAW_USER_AGE, 150.0, "Out-of-range"),
    (F.BUCKETIZED_USER_AGE, 60.0, "Out-of-range"),
    (F.USER_ID, "", "Invalid values"),
    (F.MOVIE_ID, "tt0114709", "Invalid values"),
    (F.USER_RATING, None, ""),  # missing label
])
def test_bad_value_is_an_anomaly(rows_100k, feature, value, short):
  rows = [dict(r) for r in rows_100k]
  rows[7][feature] = value
  anomalies = _anomalies(rows, "100k")
  assert list(anomalies.anomaly_info) == [feature]
  assert anomalies.anomaly_info[feature].short_description.startswith(short)


def test_new_legitimate_data_has_no_anomalies(rows_100k):
  """Unseen ids, titles, zips, occupations, an empty genre list: all fine."""
  rows = [dict(r) for r in rows_100k]
  rows[0].update(user_id="999999", movie_id="424242", movie_title="New (2031)",
                 user_zip_code="K1A 0B1", user_occupation_text="astronaut",
                 movie_genres=[], timestamp=1900000000)
  rows[1].update(movie_genres=list(range(21)), raw_user_age=1.0,
                 bucketized_user_age=1.0, user_rating=1.0)
  assert not _anomalies(rows, "100k").anomaly_info


def test_1m_schema_accepts_1m_data(rows_100k):
  rows = [dict(r, raw_user_age=None, timestamp=r[F.TIMESTAMP] + 10**8)
          for r in rows_100k]  # 1m has no raw age, ratings of 2000-2003
  assert not _anomalies(rows, "1m").anomaly_info
  # 100k data (with raw_user_age) is not 1m data.
  assert list(_anomalies(rows_100k, "1m").anomaly_info) == [F.RAW_USER_AGE]


def test_current_schema_accepts_half_stars_without_demographics(rows_100k):
  keep = set(curate.FAMILY_FEATURES["current"])
  rows = [{k: v for k, v in r.items() if k in keep} for r in rows_100k]
  rows[0][F.USER_RATING] = 3.5
  rows[1][F.USER_RATING] = 0.5
  rows[2][F.MOVIE_GENRES] = [F.GENRE_ID["(no genres listed)"]]
  rows[3][F.MOVIE_GENRES] = [F.GENRE_ID["IMAX"], F.GENRE_ID["Documentary"]]
  rows[4][F.TIMESTAMP] = 1700000000  # 2023
  assert not _anomalies(rows, "current").anomaly_info
  rows[5][F.USER_RATING] = 5.5
  assert list(_anomalies(rows, "current").anomaly_info) == [F.USER_RATING]
  # Demographics are not part of the current family.
  rows[5] = dict(rows_100k[5])
  assert F.USER_GENDER in _anomalies(rows, "current").anomaly_info


@pytest.mark.skipif(not os.path.isdir(ML100K),
                    reason="GroupLens ml-100k not at ../shared/datasets")
def test_real_ml100k_has_no_anomalies():
  rows = list(curate.ml100k_rows(ML100K))
  assert len(rows) == 100000
  anomalies = _anomalies(rows, "100k")
  assert not anomalies.anomaly_info, anomalies
  assert not anomalies.HasField("dataset_anomaly_info")


# --------------------------------------------------------------------------
# The gate, on the output of the stock StatisticsGen + ExampleValidator.

def test_gate_passes_clean_data(tmp_path, rows_100k):
  anomalies = _validate_with_tfx(tmp_path, _train_eval(rows_100k))
  assert anomalies.get_json_value_custom_property("blessed") == {
      "train": 1, "eval": 1}
  result = _run_gate(tmp_path, anomalies)
  assert result.get_int_custom_property("passed") == 1
  assert artifact_utils.decode_split_names(
      result.get_string_custom_property("split_names")) == [
      "train", "eval"]
  with open(os.path.join(result.uri, vg.RESULT_FILE_NAME)) as f:
    written = json.load(f)
  assert written["passed"] is True
  assert written["splits_checked"] == ["train", "eval"]
  assert written["anomaly_counts"] == {"train": 0, "eval": 0}


@pytest.mark.parametrize("feature,value,expected", [
    (F.USER_RATING, 7.0, "Unexpectedly high value: 7"),
    (F.USER_GENDER, 2, "Unexpectedly large value: 2"),
    (F.TIMESTAMP, YEAR_2200, f"Unexpectedly large value: {YEAR_2200}"),
])
def test_gate_stops_bad_data(tmp_path, rows_100k, feature, value, expected):
  splits = _train_eval(rows_100k)
  splits["eval"][3] = dict(splits["eval"][3], **{feature: value})
  anomalies = _validate_with_tfx(tmp_path, splits)
  with pytest.raises(vg.DataValidationError) as info:
    _run_gate(tmp_path, anomalies)
  message = str(info.value)
  assert message.startswith(
      "Data validation failed; Transform and training will not run.\n")
  assert f"  split eval: feature '{feature}': Out-of-range values (" in message
  assert expected in message
  assert "split train" not in message
  assert list(info.value.failures) == ["eval"]
  assert not os.path.exists(
      os.path.join(str(tmp_path / "gate_result"), vg.RESULT_FILE_NAME))
  # Checking only the clean split passes; the default checks every split.
  assert _run_gate(tmp_path, anomalies, ["train"]).get_int_custom_property("passed") == 1


def test_gate_lists_every_split_and_feature(tmp_path, rows_100k):
  splits = _train_eval(rows_100k)
  splits["train"][0] = dict(splits["train"][0], user_gender=2)
  splits["eval"][0] = dict(splits["eval"][0], user_rating=7.0,
                           timestamp=YEAR_2200)
  anomalies = _validate_with_tfx(tmp_path, splits)
  with pytest.raises(vg.DataValidationError) as info:
    _run_gate(tmp_path, anomalies)
  failures = info.value.failures
  assert set(failures) == {"train", "eval"}
  assert [l.split(":")[0] for l in failures["eval"]] == [
      "feature 'timestamp'", "feature 'user_rating'"]
  assert failures["train"][0].startswith("feature 'user_gender'")


# --------------------------------------------------------------------------
# The gate on hand-made anomalies artifacts (no Beam).

def _anomalies_artifact(tmp_path, per_split, blessed=None):
  a = _artifact(standard_artifacts.ExampleAnomalies, str(tmp_path / "anom"))
  a.split_names = artifact_utils.encode_split_names(list(per_split))
  for split, proto in per_split.items():
    if proto is None:
      continue
    d = os.path.join(a.uri, f"Split-{split}")
    os.makedirs(d)
    with open(os.path.join(d, vg.ANOMALIES_FILE_NAME), "wb") as f:
      f.write(proto.SerializeToString())
  if blessed is not None:
    a.set_json_value_custom_property(vg.BLESSED_PROPERTY, blessed)
  return a


def test_gate_fails_without_evidence(tmp_path):
  from tensorflow_metadata.proto.v0 import anomalies_pb2
  clean = anomalies_pb2.Anomalies()
  empty = anomalies_pb2.Anomalies(data_missing=True)
  dataset = anomalies_pb2.Anomalies()
  dataset.dataset_anomaly_info.short_description = "Low num examples"
  dataset.dataset_anomaly_info.description = "1 < 10"
  a = _anomalies_artifact(
      tmp_path, {"train": clean, "eval": None, "empty": empty,
                 "small": dataset, "unblessed": clean},
      blessed={"train": 1, "unblessed": 0})
  with pytest.raises(vg.DataValidationError) as info:
    _run_gate(tmp_path, a)
  failures = info.value.failures
  assert set(failures) == {"eval", "empty", "small", "unblessed"}
  assert "no readable anomalies file" in failures["eval"][0]
  assert failures["empty"] == ["no data (the split has no examples)"]
  assert failures["small"] == ["dataset: Low num examples (1 < 10)"]
  assert "not blessed" in failures["unblessed"][0]
  with pytest.raises(vg.DataValidationError, match="not validated"):
    _run_gate(tmp_path, a, ["train", "test"])
  assert _run_gate(tmp_path, a, ["train"]).get_int_custom_property("passed") == 1
  # KubeflowV2 hands list parameters over as JSON text.
  assert _run_gate(tmp_path, a, '["train"]').get_int_custom_property(
      "passed") == 1
  with pytest.raises(vg.DataValidationError, match="not validated"):
    _run_gate(tmp_path, a, '["train", "test"]')


def test_component_wiring():
  from tfx.components import Transform
  anomalies = channel.Channel(type=standard_artifacts.ExampleAnomalies)
  gate = vg.ValidationGate(anomalies=anomalies, splits_to_check=["train"])
  assert gate.id == "ValidationGate"
  assert gate.outputs["result"].type is vg.DataValidationResult
  assert gate.exec_properties["splits_to_check"] == ["train"]
  assert "splits_to_check" not in vg.ValidationGate(
      anomalies=anomalies).exec_properties
  transform = Transform(
      examples=channel.Channel(type=standard_artifacts.Examples),
      schema=channel.Channel(type=standard_artifacts.Schema),
      module_file="transform/preprocessing.py")
  transform.add_upstream_node(gate)
  assert gate in transform.upstream_nodes
  assert transform in gate.downstream_nodes


# --------------------------------------------------------------------------
# In a real pipeline run (LocalDagRunner + MLMD): the gate stops what follows.

def _pipeline_run(root, rows):
  from ml_metadata import metadata_store
  from tfx.components import ExampleValidator, ImportExampleGen, StatisticsGen
  from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
  from tfx.orchestration import metadata
  from tfx.orchestration import pipeline as tfx_pipeline
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner

  data = os.path.join(root, "data")
  os.makedirs(data)
  with tf.io.TFRecordWriter(os.path.join(data, "ratings.gz"),
                            options="GZIP") as w:
    for row in rows:
      w.write(F.to_tf_example(row).SerializeToString())
  example_gen = ImportExampleGen(input_base=data)
  statistics = StatisticsGen(examples=example_gen.outputs["examples"])
  schema = ImportSchemaGen(schema_file=schemas.schema_path("100k"))
  validator = ExampleValidator(statistics=statistics.outputs["statistics"],
                               schema=schema.outputs["schema"])
  # A list parameter, as the local orchestrator stores it (IR, MLMD).
  gate = vg.ValidationGate(anomalies=validator.outputs["anomalies"],
                           splits_to_check=["train", "eval"])
  # Stands in for Transform: anything made to wait for the gate.
  after = StatisticsGen(examples=example_gen.outputs["examples"]).with_id(
      "AfterGate")
  after.add_upstream_node(gate)
  db = metadata.sqlite_metadata_connection_config(os.path.join(root, "m.db"))
  error = None
  try:
    LocalDagRunner().run(tfx_pipeline.Pipeline(
        pipeline_name="gate", pipeline_root=os.path.join(root, "out"),
        components=[example_gen, statistics, schema, validator, gate, after],
        metadata_connection_config=db))
  except vg.DataValidationError as e:
    error = e
  store = metadata_store.MetadataStore(db)
  results = store.get_artifacts_by_type(vg.DataValidationResult.TYPE_NAME)
  ran_after = os.path.isdir(os.path.join(root, "out", "AfterGate"))
  return error, results, ran_after


@pytest.mark.slow
def test_gate_in_a_pipeline_run(tmp_path, rows_100k):
  error, results, ran_after = _pipeline_run(str(tmp_path / "good"), rows_100k)
  assert error is None
  assert ran_after
  assert len(results) == 1
  assert results[0].custom_properties["passed"].int_value == 1
  assert json.loads(results[0].custom_properties["split_names"].string_value) == [
      "train", "eval"]

  bad = [dict(r) for r in rows_100k]
  bad[5][F.USER_RATING] = 7.0
  error, results, ran_after = _pipeline_run(str(tmp_path / "bad"), bad)
  assert error is not None
  assert "feature 'user_rating': Out-of-range values" in str(error)
  assert not ran_after
  assert not results
