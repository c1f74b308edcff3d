"""Two-stage serving (serving/): Recommender, `recommend` CLI, HTTP API.

Tiny retrieval and ranking models are trained once on the `tiny_transformed`
fixture (planted data: users rate their favourite genre 4-5, others 1-2) and
laid out as pushed versions `<serving>/{retrieval,ranking}/<version>`.
"""
import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from common import features as F
from common import versions
from serving import recommender as rec_lib

GENRE_NAME = {1: "Action", 2: "Adventure", 3: "Animation", 4: "Children",
              5: "Comedy", 6: "Crime"}  # planted u.item column → contract name


# --------------------------------------------------------------------------
# Fast unit tests (no models).

def test_normalize_features():
  out = rec_lib.normalize_features({"age": 30, "gender": "F", "occupation": "writer",
                                    "zip": "94110"})
  assert out == {F.RAW_USER_AGE: 30.0, F.USER_GENDER: 0,
                 F.USER_OCCUPATION_TEXT: "writer", F.USER_ZIP_CODE: "94110",
                 F.BUCKETIZED_USER_AGE: 25.0}
  assert rec_lib.normalize_features({F.USER_GENDER: 1}) == {F.USER_GENDER: 1}
  for bad in ({"movie_id": "1"}, {"colour": 1}, {"age": "old"}, {"gender": "x"},
              {"occupation": [1]}, {F.USER_GENDER: 1.5}, "age=3"):
    with pytest.raises(ValueError):
      rec_lib.normalize_features(bad)


def test_fuse_ranks_is_reciprocal_rank_fusion():
  # Candidates in retrieval order; the ranking model prefers the last ones.
  order = rec_lib.fuse_ranks(np.array([0.0, 1.0, 2.0, 3.0]), k=1)
  # fused: 1/(1+r) + 1/(1+k): [1/2+1/5, 1/3+1/4, 1/4+1/3, 1/5+1/2]; ties
  # keep retrieval order.
  assert order.tolist() == [0, 3, 1, 2]
  assert rec_lib.fuse_ranks(np.array([5.0, 4.0, 3.0])).tolist() == [0, 1, 2]


def test_fuse_ranks_weights_the_item_item_rank():
  ranking = np.array([5.0, 4.0, 3.0])  # agrees with retrieval
  item_item = np.array([0.0, 0.0, 1.0])  # ranks [2, 3, 1]
  # k=1, w=4: [1/2+1/2+4/3, 1/3+1/3+4/4, 1/4+1/4+4/2] = [2.33, 1.67, 2.5]
  assert rec_lib.fuse_ranks(ranking, item_item, k=1).tolist() == [2, 0, 1]
  # A small weight leaves the agreeing models' order alone.
  assert rec_lib.fuse_ranks(ranking, item_item, k=1,
                            item_item_weight=0.5).tolist() == [0, 1, 2]


def test_fuse_ranks_adds_the_predicted_rating_rank_with_its_weight():
  ranking = np.array([5.0, 4.0, 3.0])   # agrees with retrieval: ranks [1, 2, 3]
  rating = np.array([3.0, 4.0, 5.0])    # ranks [3, 2, 1]
  # k=1, v=0.5: [1/2+1/2+0.5/4, 1/3+1/3+0.5/3, 1/4+1/4+0.5/2] = [1.125, 0.83, 0.75]
  assert rec_lib.fuse_ranks(ranking, rating=rating, k=1).tolist() == [0, 1, 2]
  # A heavy weight puts the best-rated first: [1/2+1/2+4/4, 1/3+1/3+4/3,
  # 1/4+1/4+4/2] = [2.0, 2.0, 2.5], the tie in retrieval order.
  assert rec_lib.fuse_ranks(ranking, rating=rating, k=1,
                            rating_weight=4.0).tolist() == [2, 0, 1]
  # Weight 0 (or no ratings: implicit feedback) leaves it out.
  assert rec_lib.fuse_ranks(ranking, rating=rating, k=1,
                            rating_weight=0.0).tolist() == [0, 1, 2]


def fused_score(item) -> float:
  """The fusion score of a served item from its ranks (fuse_ranks' formula)."""
  score = (1 / (rec_lib.RRF_K + item["retrieval_rank"])
           + 1 / (rec_lib.RRF_K + item["ranking_rank"]))
  if item["item_item_rank"] is not None:
    score += rec_lib.ITEM_ITEM_WEIGHT / (rec_lib.RRF_K + item["item_item_rank"])
  if item["rating_rank"] is not None:
    score += rec_lib.RATING_WEIGHT / (rec_lib.RRF_K + item["rating_rank"])
  return score


def test_request_time_is_a_context_feature():
  assert rec_lib.normalize_features({"timestamp": 881250949}) == {
      F.TIMESTAMP: 881250949}
  assert rec_lib.normalize_features({"time": 5}) == {F.TIMESTAMP: 5}
  for bad in ({"timestamp": -3}, {"timestamp": "yesterday"}, {"timestamp": 1.5}):
    with pytest.raises(ValueError):
      rec_lib.normalize_features(bad)


def test_complete_versions(tmp_path):
  base = tmp_path / "ranking"
  for v in ("1", "2", "10", "tmp", "3"):
    (base / v).mkdir(parents=True)
  for v in ("1", "2", "10", "tmp"):
    (base / v / "saved_model.pb").write_bytes(b"graph")
  assert rec_lib.complete_versions(str(tmp_path), "ranking") == [1, 2, 10]
  assert rec_lib.complete_versions(str(tmp_path), "retrieval") == []
  with pytest.raises(rec_lib.RecommenderError):
    rec_lib.Recommender(str(tmp_path))


# --------------------------------------------------------------------------
# Trained models.

def _push(models, serving_dir, model, version, complete=True, version_file=True):
  """models[model] as `<serving_dir>/<model>/<version>`, with the Pusher's
  VERSION.json (common/versions.py) unless version_file=False (a version
  pushed before VERSION.json existed); complete=False drops saved_model.pb."""
  dst = os.path.join(str(serving_dir), model, str(version))
  shutil.copytree(models[model], dst)
  if version_file:
    versions.write_version_file(dst, model)
  if not complete:
    os.remove(os.path.join(dst, "saved_model.pb"))
  return dst


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
  """An output dir with serving/{retrieval,ranking}/1 and its Recommender."""
  out = tmp_path_factory.mktemp("output")
  serving_dir = out / "serving"
  _push(models, serving_dir, "retrieval", 1)
  _push(models, serving_dir, "ranking", 1)
  return {"output_dir": str(out), "serving_dir": str(serving_dir),
          "rec": rec_lib.Recommender(str(out))}


def _train_seen(tiny):
  seen = {}
  for r in tiny["rows"]["train"]:
    seen.setdefault(r[F.USER_ID], set()).add(r[F.MOVIE_ID])
  return seen


@pytest.mark.slow
def test_known_user_gets_k_unseen_items_in_fused_order(served, tiny_transformed):
  rec = served["rec"]
  assert rec.serving_dir == served["serving_dir"]  # output dir → serving/
  seen = _train_seen(tiny_transformed)
  catalogue = {r[F.MOVIE_ID]: r[F.MOVIE_TITLE] for r in tiny_transformed["catalogue_rows"]}
  for user in ("1", "2", "17"):
    res = rec.recommend(user, k=10)
    assert res["model_versions"] == {"retrieval": 1, "ranking": 1}
    assert res["known_user"] and res["ranked"] and not res["partial"]
    items = res["items"]
    assert len(items) == 10
    ids = [it["movie_id"] for it in items]
    assert len(set(ids)) == 10
    assert not set(ids) & seen[user]
    # The fused order of the retrieval, ranking and item-item ranks.
    assert all(it["item_item_rank"] is not None for it in items)
    assert all(it["rating_rank"] is not None for it in items)
    fused = [fused_score(it) for it in items]
    assert fused == sorted(fused, reverse=True)
    for it in items:
      assert it["title"] == catalogue[it["movie_id"]]
      assert np.isfinite(it["score"]) and 1.0 <= it["predicted_rating"] <= 5.0
    assert json.loads(json.dumps(res)) == res


@pytest.mark.slow
def test_planted_genre_dominates(served, tiny_transformed):
  rec = served["rec"]
  planted = tiny_transformed["planted"]
  seen = _train_seen(tiny_transformed)
  cat_genre = {r[F.MOVIE_ID]: r[F.MOVIE_GENRES][0] for r in tiny_transformed["catalogue_rows"]}
  hits = possible = base = 0.0
  for u in range(1, planted["num_users"] + 1):
    fav = F.GENRE_ID[GENRE_NAME[int(planted["user_genre"][u - 1])]]
    unseen = [m for m in cat_genre if m not in seen.get(str(u), set())]
    n_fav = sum(cat_genre[m] == fav for m in unseen)
    items = rec.recommend(str(u), k=5)["items"]
    hits += sum(cat_genre[it["movie_id"]] == fav for it in items)
    possible += min(5, n_fav)
    base += 5 * n_fav / len(unseen)
  # Favourite-genre movies are rare among the unseen ones (most were rated),
  # yet they fill most of what they can of the top 5.
  assert hits >= 4 * base, (hits, base)
  assert hits >= 0.4 * possible, (hits, possible)


@pytest.mark.slow
def test_unknown_user_with_features(served):
  rec = served["rec"]
  res = rec.recommend("no-such-user", k=7, features={
      "age": 30, "gender": "F", "occupation": "writer", "zip": "10037"})
  assert not res["known_user"] and len(res["items"]) == 7
  assert res["num_unseen"] == rec.catalogue_size
  bare = rec.recommend("no-such-user", k=7)
  assert len(bare["items"]) == 7
  with pytest.raises(ValueError):
    rec.recommend("1", k=0)
  with pytest.raises(ValueError):
    rec.recommend("1", k=rec.catalogue_size + 1)
  with pytest.raises(ValueError):
    rec.recommend("1", features={"movie_id": "3"})


@pytest.mark.slow
def test_fewer_than_k_unseen_is_reported(served, tiny_transformed):
  rec = served["rec"]
  n_seen = len(_train_seen(tiny_transformed)["1"])
  k = rec.catalogue_size - n_seen + 5
  res = rec.recommend("1", k=k, n_candidates=10)
  assert res["partial"] and len(res["items"]) == rec.catalogue_size - n_seen
  assert "only" in res["message"]
  assert res["num_unseen"] == len(res["items"])


@pytest.mark.slow
def test_versions_reload_pin_incomplete_and_no_ranking(models, tmp_path):
  serving_dir = tmp_path / "serving"
  _push(models, serving_dir, "retrieval", 1)
  # Retrieval only: retrieval order, said so.
  rec = rec_lib.Recommender(str(serving_dir), check_interval=0,
                            background_reload=False)
  res = rec.recommend("1", k=5)
  assert res["model_versions"] == {"retrieval": 1, "ranking": None}
  assert not res["ranked"] and "retrieval order" in res["message"]
  scores = [it["score"] for it in res["items"]]
  assert scores == sorted(scores, reverse=True) and len(scores) == 5
  retrieval_order = [it["movie_id"] for it in res["items"]]
  # New versions are picked up without a restart; incomplete ones are not.
  _push(models, serving_dir, "ranking", 1)
  _push(models, serving_dir, "retrieval", 2)
  assert rec.recommend("1", k=5)["model_versions"] == {"retrieval": 2, "ranking": 1}
  _push(models, serving_dir, "retrieval", 3, complete=False)
  _push(models, serving_dir, "ranking", 4, complete=False)
  res = rec.recommend("1", k=5)
  assert res["model_versions"] == {"retrieval": 2, "ranking": 1} and res["ranked"]
  # rank=False: the retrieval order despite the ranking model (v2 holds the
  # same retrieval model as v1).
  unranked = rec.recommend("1", k=5, rank=False)
  assert not unranked["ranked"] and unranked["message"] is None
  assert [it["movie_id"] for it in unranked["items"]] == retrieval_order
  assert all(it["predicted_rating"] is None for it in unranked["items"])
  # A pinned version is honoured while newer ones exist.
  pinned = rec_lib.Recommender(str(serving_dir), version=1, check_interval=0)
  assert pinned.recommend("1", k=3)["model_versions"] == {"retrieval": 1, "ranking": 1}
  with pytest.raises(rec_lib.RecommenderError):
    rec_lib.Recommender(str(serving_dir), version=3)  # incomplete
  # Background reload (the default): a later request sees the new version.
  rec.background_reload, rec.check_interval = True, 0.2
  _push(models, serving_dir, "ranking", 5)
  deadline = time.time() + 60
  while rec.recommend("1", k=3)["model_versions"]["ranking"] != 5:
    assert time.time() < deadline, "new ranking version not picked up"
    time.sleep(0.2)
  # close(): waits for a reload in progress, then stops watching.
  _push(models, serving_dir, "ranking", 6)
  time.sleep(0.3)
  rec.recommend("1", k=3)  # starts a reload thread
  rec.close()
  assert rec._reload_thread is None or not rec._reload_thread.is_alive()  # pylint: disable=protected-access
  closed_version = rec.versions["ranking"]
  assert closed_version in (5, 6)
  _push(models, serving_dir, "ranking", 7)
  time.sleep(0.3)
  assert rec.recommend("1", k=3)["model_versions"]["ranking"] == closed_version


@pytest.mark.slow
def test_cli_user_json_and_batch(served, tmp_path, capsys):
  from serving import cli  # pylint: disable=g-import-not-at-top
  assert cli.main(["user", "1", "--output-dir", served["output_dir"], "--k", "4",
                   "--json"]) == 0
  res = json.loads(capsys.readouterr().out)
  assert res["user_id"] == "1" and len(res["items"]) == 4
  table = cli._table(res)  # pylint: disable=protected-access
  assert "movie_id" in table and len(table.strip().splitlines()) == 6
  users = tmp_path / "users.txt"
  users.write_text("1\n2\n\nnobody\n")
  out = tmp_path / "out.jsonl"
  assert cli.main(["batch", "--users-file", str(users), "--out", str(out),
                   "--output-dir", served["serving_dir"], "--k", "3"]) == 0
  lines = [json.loads(l) for l in out.read_text().splitlines()]
  assert [l["user_id"] for l in lines] == ["1", "2", "nobody"]
  assert all(len(l["items"]) == 3 for l in lines)
  assert "3/3" in capsys.readouterr().err


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served):
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving import http  # pylint: disable=g-import-not-at-top
  port = _free_port()
  config = uvicorn.Config(http.create_app(served["rec"]), host="127.0.0.1",
                          port=port, log_level="warning")
  srv = uvicorn.Server(config)
  thread = threading.Thread(target=srv.run, daemon=True)
  thread.start()
  deadline = time.time() + 30
  while not srv.started:
    assert time.time() < deadline and thread.is_alive(), "server did not start"
    time.sleep(0.05)
  yield f"http://127.0.0.1:{port}"
  srv.should_exit = True
  thread.join(10)


@pytest.mark.slow
def test_http_get_post_healthz(server, served, tiny_transformed):
  import httpx  # pylint: disable=g-import-not-at-top
  seen = _train_seen(tiny_transformed)
  with httpx.Client(base_url=server, timeout=30) as c:
    r = c.get("/recommend", params={"user_id": "42", "k": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "42"
    assert body["model_versions"] == {"retrieval": 1, "ranking": 1}
    assert len(body["items"]) == 6
    for it in body["items"]:
      assert {"movie_id", "title", "score", "predicted_rating"} <= set(it)
      assert it["movie_id"] not in seen["42"]
    r = c.post("/recommend", json={"user_id": "new-user", "k": 4, "features": {
        "age": 25, "gender": "M", "occupation": "student", "zip": "94110"}})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 4 and not r.json()["known_user"]
    r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json()["model_versions"] == {"retrieval": 1, "ranking": 1}


@pytest.mark.slow
def test_http_bad_requests_are_4xx_with_message(server, served):
  import httpx  # pylint: disable=g-import-not-at-top
  size = served["rec"].catalogue_size
  bad_gets = [{"user_id": "1", "k": 0}, {"user_id": "1", "k": -3},
              {"user_id": "1", "k": size + 1}, {"user_id": "1", "k": 5000},
              {"user_id": "1", "k": "ten"}, {"k": 5}, {"user_id": ""},
              {"user_id": "1", "n_candidates": 0}, {"user_id": "1", "age": 3}]
  bad_posts = [{"k": 5}, {"user_id": "1", "k": "5"}, {"user_id": "1", "k": 0},
               {"user_id": ["1"]}, {"user_id": "1", "features": "age=3"},
               {"user_id": "1", "features": {"age": "old"}},
               {"user_id": "1", "features": {"movie_id": "3"}},
               {"user_id": "1", "colour": "red"}, [1, 2], {"user_id": None}]
  with httpx.Client(base_url=server, timeout=30) as c:
    responses = [c.get("/recommend", params=p) for p in bad_gets]
    responses += [c.post("/recommend", json=p) for p in bad_posts]
    responses.append(c.post("/recommend", content=b"{not json",
                            headers={"content-type": "application/json"}))
    responses.append(c.post("/recommend", content=b""))
    for req, r in zip(bad_gets + bad_posts + ["malformed", "empty"], responses):
      assert 400 <= r.status_code < 500, (req, r.status_code, r.text)
      assert r.json()["detail"], (req, r.text)
    assert c.get("/healthz").status_code == 200  # still serving
