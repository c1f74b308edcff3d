"""BatchRecommender (components/batch_recommender): batch = online, streamed.

The executor runs on the tiny trained models (the session fixture `models`
of tests/conftest.py) laid out as pushed versions, with PushedModel
artifacts as the stock Pusher records them; every user's batch rows are
compared with what the online Recommender serves for that user.
"""
import json
import os

import pyarrow.parquet as pq
import pytest
from tfx.types import standard_artifacts

from common import assets
from components.batch_recommender import executor as ex
from serving import recommender as rec_lib
from tests.test_serving import _push

K = 20


def _artifact(cls, uri, **props):
  a = cls()
  a.uri = str(uri)
  for key, value in props.items():
    if isinstance(value, int):
      a.set_int_custom_property(key, value)
    else:
      a.set_string_custom_property(key, value)
  return a


def _pushed(destination=None):
  if destination is None:
    return _artifact(standard_artifacts.PushedModel, "/unused/pushed", pushed=0)
  return _artifact(standard_artifacts.PushedModel, "/unused/pushed", pushed=1,
                   pushed_destination=str(destination))


def _run(tmp_path, retrieval_pushed, ranking_pushed=None, **props):
  inputs = {ex.RETRIEVAL_MODEL_KEY: [_artifact(standard_artifacts.Model, "/unused/r")],
            ex.RETRIEVAL_PUSHED_MODEL_KEY: [retrieval_pushed]}
  if ranking_pushed is not None:
    inputs[ex.RANKING_MODEL_KEY] = [_artifact(standard_artifacts.Model, "/unused/k")]
    inputs[ex.RANKING_PUSHED_MODEL_KEY] = [ranking_pushed]
  out = _artifact(standard_artifacts.Examples, tmp_path / "recommendations")
  ex.Executor().Do(inputs, {ex.RECOMMENDATIONS_KEY: [out]},
                   dict({ex.K_KEY: K, ex.N_CANDIDATES_KEY: 100}, **props))
  return out, pq.ParquetFile(ex.output_file(out))


def _by_user(table):
  rows = {}
  for row in table.to_pylist():
    rows.setdefault(row["user_id"], []).append(row)
  return rows


def _known_users(retrieval_dir):
  return list(assets.SeenTable.load(
      os.path.join(retrieval_dir, assets.ASSETS_EXTRA)).user_ids())


# --------------------------------------------------------------------------
# Fast: no models.

class _FakeRecommender:
  def recommend(self, user_id, k, n_candidates):
    del n_candidates
    n = 0 if user_id == "none" else k
    items = [{"movie_id": f"m{i}", "title": f"t{i}", "genres": ["Drama"],
              "score": 1.0 / (i + 1), "predicted_rating": None,
              "retrieval_rank": i + 1} for i in range(n)]
    return {"user_id": user_id, "known_user": not user_id.startswith("x"),
            "items": items, "partial": n < k}


def test_users_known_then_from_file_each_known_once(tmp_path):
  extra = tmp_path / "model" / "assets.extra"
  extra.mkdir(parents=True)
  assets.SeenTable.from_lists({"2": [0], "1": [], "3": [1, 0]}).write(str(extra))
  (extra / "user_features.jsonl").write_text(
      "".join(json.dumps({"user_id": u, "raw": {}}) + "\n" for u in "2134"))
  users_file = tmp_path / "users.txt"
  users_file.write_text("3\n\nx1\n  x2 \nx1\n")
  assert list(ex.iter_users(str(tmp_path / "model"), str(users_file))) == [
      ("1", False), ("2", False), ("3", False), ("4", False),
      ("x1", True), ("x2", True), ("x1", True)]
  assert [u for u, _ in ex.iter_users(str(tmp_path / "model"))] == list("1234")


def test_users_of_a_legacy_seen_jsonl_model(tmp_path):
  """Models exported before the .npy seen table (a rollback target)."""
  extra = tmp_path / "model" / "assets.extra"
  extra.mkdir(parents=True)
  (extra / assets.LEGACY_SEEN_FILE).write_text(
      "".join(json.dumps({"user_id": u, "movie_ids": ["m1"]}) + "\n" for u in "21"))
  assert [u for u, _ in ex.iter_users(str(tmp_path / "model"))] == ["1", "2"]


def test_streamed_in_row_groups_with_counts(tmp_path):
  path = str(tmp_path / "r.parquet")
  users = [(str(i), False) for i in range(23)] + [("none", False), ("x9", True)]
  counts = ex.write_recommendations(_FakeRecommender(), iter(users), path, k=3,
                                    n_candidates=10, chunk_users=5, log_every=7)
  f = pq.ParquetFile(path)
  assert f.schema_arrow == ex.SCHEMA
  assert f.metadata.num_row_groups == 5  # 25 users / 5 per chunk
  assert counts["num_users"] == 25 and counts["num_rows"] == 24 * 3
  assert counts["num_file_users"] == 1 and counts["num_known_users"] == 24
  assert counts["num_cold_start_users"] == 1 and counts["num_partial_users"] == 1
  rows = _by_user(f.read())
  assert "none" not in rows
  assert [r["rank"] for r in rows["x9"]] == [1, 2, 3]
  assert rows["x9"][0]["known_user"] is False and rows["x9"][0]["movie_id"] == "m0"


def test_pipeline_has_it_after_both_pushers_unless_switched_off(tmp_path):
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from tests import synthetic_data  # pylint: disable=g-import-not-at-top
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  args = ("t", str(tmp_path / "root"), data, str(tmp_path / "serving"))
  p = pipeline_lib.create_pipeline(*args, batch_recommendations_k=7)
  node = p.components[-1]
  assert node.id == "BatchRecommender"
  assert {n.id for n in node.upstream_nodes} == {
      "RetrievalTrainer", "RetrievalPusher", "RankingTrainer", "RankingPusher"}
  assert node.exec_properties[ex.K_KEY] == 7
  assert node.exec_properties[ex.SERVING_DIR_KEY] == str(tmp_path / "serving")
  off = pipeline_lib.create_pipeline(*args, batch_recommendations=False)
  assert "BatchRecommender" not in [c.id for c in off.components]
  retrieval_only = pipeline_lib.create_pipeline(*args, enable_ranking=False)
  assert {n.id for n in retrieval_only.components[-1].upstream_nodes} == {
      "RetrievalTrainer", "RetrievalPusher"}


# --------------------------------------------------------------------------
# Trained models (the `models` fixture of tests/conftest.py).

@pytest.mark.slow
def test_batch_equals_online_for_every_user_plus_users_file(models, tmp_path):  # pylint: disable=redefined-outer-name
  serving = tmp_path / "serving"
  rdir = _push(models, serving, "retrieval", 1)
  kdir = _push(models, serving, "ranking", 1)
  users_file = tmp_path / "users.txt"
  users_file.write_text("1\nnew-a\n\nnew-b\n")  # "1" is known: written once
  out, f = _run(tmp_path, _pushed(rdir), _pushed(kdir),
                users_file=str(users_file), serving_dir=str(serving),
                chunk_users=16, log_every=10)
  known = _known_users(rdir)
  assert len(known) > 16
  assert out.get_int_custom_property("generated") == 1
  assert out.get_int_custom_property("num_users") == len(known) + 2
  assert out.get_int_custom_property("num_file_users") == 2
  assert out.get_int_custom_property("num_cold_start_users") == 2
  assert out.get_string_custom_property("retrieval_source") == ex.PUSHED_IN_RUN
  assert out.get_string_custom_property("ranking_model_dir") == kdir
  assert out.get_string_custom_property("payload_format") == "FORMAT_PARQUET"
  assert f.metadata.num_row_groups > 1  # streamed in chunks
  table = f.read()
  assert out.get_int_custom_property("num_rows") == table.num_rows
  rows = _by_user(table)
  assert list(rows) == known + ["new-a", "new-b"]  # order: model's, then file's

  online = rec_lib.Recommender(str(serving), check_interval=float("inf"),
                               background_reload=False)
  try:
    for user, got in rows.items():
      res = online.recommend(user, k=K, n_candidates=100)
      assert res["ranked"] and len(got) == len(res["items"]) == K
      assert [r["rank"] for r in got] == list(range(1, K + 1))
      assert all(r["known_user"] == res["known_user"] for r in got)
      assert res["known_user"] == (user in known)
      # ids, order, retrieval scores and predicted ratings: exactly equal.
      assert [{c: r[c] for c in ex.ITEM_COLUMNS} for r in got] == [
          {c: it.get(c) for c in ex.ITEM_COLUMNS} for it in res["items"]], user
  finally:
    online.close()


@pytest.mark.slow
def test_nothing_pushed_is_skipped_and_one_push_uses_the_served_other(
    models, tmp_path):  # pylint: disable=redefined-outer-name
  serving = tmp_path / "serving"
  _push(models, serving, "retrieval", 1)
  _push(models, serving, "ranking", 1)
  out, f = _run(tmp_path / "a", _pushed(), _pushed(), serving_dir=str(serving))
  assert out.get_int_custom_property("generated") == 0
  assert "no model was pushed" in out.get_string_custom_property("skip_reason")
  assert f.read().num_rows == 0 and f.schema_arrow == ex.SCHEMA

  # Only ranking pushed (v2): retrieval is the one still served (v1).
  kdir = _push(models, serving, "ranking", 2)
  out, f = _run(tmp_path / "b", _pushed(), _pushed(kdir), serving_dir=str(serving),
                k=5)
  assert out.get_int_custom_property("generated") == 1
  assert out.get_string_custom_property("retrieval_source") == ex.SERVED
  assert out.get_string_custom_property("retrieval_model_dir") == str(
      serving / "retrieval" / "1")
  assert out.get_string_custom_property("ranking_source") == ex.PUSHED_IN_RUN
  rows = _by_user(f.read())
  online = rec_lib.Recommender(str(serving), check_interval=float("inf"),
                               background_reload=False)
  try:
    assert online.versions == {"retrieval": 1, "ranking": 2}
    for user in list(rows)[:5]:
      items = online.recommend(user, k=5)["items"]
      assert [r["movie_id"] for r in rows[user]] == [it["movie_id"] for it in items]
      assert [r["predicted_rating"] for r in rows[user]] == [
          it["predicted_rating"] for it in items]
  finally:
    online.close()
