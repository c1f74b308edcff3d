"""DriftGate on TFDV statistics of small in-memory spans."""
import json
import os

import pandas as pd
import pytest

from components import drift_gate
from pipeline import configs
from tests import synthetic_data

SCHEMA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline",
                      "schemas", "movielens_100k.pbtxt")
COLUMNS = ["user_id", "movie_id", "user_rating", "raw_user_age",
           "user_occupation_text", "timestamp"]


def _stats(seed, invert=False, new_users=False):
  """TFDV statistics of one synthetic span (1500 ratings)."""
  import numpy as np
  import tensorflow_data_validation as tfdv
  rows = synthetic_data.raw_rows(synthetic_data.make_ratings(seed=seed))
  frame = pd.DataFrame({c: [r[c] for r in rows["ratings"]] for c in COLUMNS})
  frame["movie_genres"] = [np.array(r["movie_genres"])
                           for r in rows["ratings"]]
  if invert:
    frame["user_rating"] = 6.0 - frame["user_rating"]
  if new_users:  # a flood of new users: most ratings come from unseen ids
    frame.loc[frame.index[:1200], "user_id"] = [
        f"new{i % 3}" for i in range(1200)]
  return tfdv.generate_statistics_from_dataframe(frame)


def _schema():
  from tfx.utils import io_utils
  return io_utils.SchemaReader().read(SCHEMA)


@pytest.fixture(scope="module")
def stats():
  return {"previous": _stats(1), "similar": _stats(2),
          "inverted": _stats(2, invert=True),
          "new_users": _stats(2, new_users=True)}


def test_similar_spans_pass(stats):
  measured, notes = drift_gate.check_drift(
      stats["similar"], stats["previous"], _schema(), configs.DRIFT_THRESHOLDS)
  by_name = {m.feature: m for m in measured}
  assert set(by_name) == set(configs.DRIFT_THRESHOLDS)
  assert not notes
  assert not [m for m in measured if m.drifted], measured
  assert by_name["user_id"].comparator == drift_gate.L_INFINITY
  assert by_name["user_rating"].comparator == drift_gate.JENSEN_SHANNON
  assert by_name["movie_genres"].comparator == drift_gate.JENSEN_SHANNON


def test_inverted_ratings_drift(stats):
  measured, _ = drift_gate.check_drift(
      stats["inverted"], stats["previous"], _schema(), configs.DRIFT_THRESHOLDS)
  drifted = [m for m in measured if m.drifted]
  assert [m.feature for m in drifted] == ["user_rating"]
  assert drifted[0].distance > 0.2
  message = str(drift_gate.DataDriftError(drifted, "span 2 vs span 1"))
  assert "span 2 vs span 1" in message
  assert "feature 'user_rating': Jensen-Shannon distance" in message
  assert "> threshold 0.05" in message


def test_new_users_drift(stats):
  measured, _ = drift_gate.check_drift(
      stats["new_users"], stats["previous"], _schema(), configs.DRIFT_THRESHOLDS)
  drifted = {m.feature for m in measured if m.drifted}
  assert drifted == {"user_id"}


def test_thresholds_skip_unknown_and_disabled_features(stats):
  thresholds = {"user_rating": None, "no_such_feature": 0.1, "movie_id": 0.05}
  measured, notes = drift_gate.check_drift(
      stats["inverted"], stats["previous"], _schema(), thresholds)
  assert [m.feature for m in measured] == ["movie_id"]
  assert notes == ["'no_such_feature' is not in the schema: not checked"]


# -- the executor on artifacts -----------------------------------------------
def _artifacts(tmp_path, splits):
  from tfx.types import artifact_utils
  from tfx.types import standard_artifacts
  from tfx.utils import io_utils
  statistics = standard_artifacts.ExampleStatistics()
  statistics.uri = str(tmp_path / "stats")
  statistics.split_names = artifact_utils.encode_split_names(list(splits))
  for name, value in splits.items():
    io_utils.write_bytes_file(
        os.path.join(statistics.uri, f"Split-{name}", "FeatureStats.pb"),
        value.SerializeToString())
  schema = standard_artifacts.Schema()
  schema.uri = str(tmp_path / "schema")
  io_utils.write_string_file(os.path.join(schema.uri, "schema.pbtxt"),
                             open(SCHEMA).read())
  examples = standard_artifacts.Examples()
  examples.span = 2
  examples.set_int_custom_property("current_span", 2)
  if "previous" in splits:
    examples.set_int_custom_property("previous_span", 1)
  result = drift_gate.DataDriftResult()
  result.uri = str(tmp_path / "result")
  return ({"statistics": [statistics], "schema": [schema],
           "examples": [examples]}, {"result": [result]}, result)


def _do(inputs, outputs, thresholds=None):
  drift_gate.Executor().Do(inputs, outputs, {
      "thresholds": json.dumps(thresholds or configs.DRIFT_THRESHOLDS)})


def test_executor_passes_and_records_distances(stats, tmp_path):
  inputs, outputs, result = _artifacts(
      tmp_path, {"current": stats["similar"], "previous": stats["previous"]})
  _do(inputs, outputs)
  assert result.get_int_custom_property("passed") == 1
  assert result.get_int_custom_property("checked") == 1
  assert result.get_int_custom_property("previous_span") == 1
  assert 0 <= result.get_float_custom_property("drift_user_rating") < 0.05
  with open(os.path.join(result.uri, "drift_result.json")) as f:
    saved = json.load(f)
  assert saved["passed"] and len(saved["measurements"]) == len(
      configs.DRIFT_THRESHOLDS)


def test_executor_fails_on_drift_naming_feature_distance_threshold(
    stats, tmp_path):
  inputs, outputs, _ = _artifacts(
      tmp_path, {"current": stats["inverted"], "previous": stats["previous"]})
  with pytest.raises(drift_gate.DataDriftError) as e:
    _do(inputs, outputs)
  message = str(e.value)
  assert "(span 2 vs span 1)" in message
  assert "feature 'user_rating'" in message and "threshold 0.05" in message
  assert [m.feature for m in e.value.drifted] == ["user_rating"]
  # A looser threshold for that feature lets the same data pass.
  _do(inputs, outputs, dict(configs.DRIFT_THRESHOLDS, user_rating=0.9))


def test_executor_without_previous_span_passes_with_a_note(stats, tmp_path):
  inputs, outputs, result = _artifacts(tmp_path, {"current": stats["similar"]})
  _do(inputs, outputs)
  assert result.get_int_custom_property("passed") == 1
  assert result.get_int_custom_property("checked") == 0
  assert "No previous span" in result.get_string_custom_property("note")


def test_executor_needs_a_current_split(stats, tmp_path):
  inputs, outputs, _ = _artifacts(tmp_path, {"train": stats["similar"]})
  with pytest.raises(ValueError, match="no split 'current'"):
    _do(inputs, outputs)


def test_component_definition():
  from tfx import types
  from tfx.types import standard_artifacts
  gate = drift_gate.DriftGate(
      statistics=types.Channel(type=standard_artifacts.ExampleStatistics),
      schema=types.Channel(type=standard_artifacts.Schema),
      thresholds={"user_rating": 0.1, "user_id": None})
  assert json.loads(gate.exec_properties["thresholds"]) == {"user_rating": 0.1}
  assert gate.outputs["result"].type_name == "components.DataDriftResult"
  assert drift_gate.DataDriftResult.PROPERTIES == {}
  with pytest.raises(ValueError, match="numbers >= 0"):
    drift_gate.DriftGate(
        statistics=types.Channel(type=standard_artifacts.ExampleStatistics),
        schema=types.Channel(type=standard_artifacts.Schema),
        thresholds={"user_rating": -1})
