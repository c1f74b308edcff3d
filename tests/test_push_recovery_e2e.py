"""A run killed while pushing: the next run finishes the push (slow).

The baseline resolvers read what the ServingPushers served, not what the
evaluators blessed, so the rerun resolves the same baseline as the killed
run: trainers and evaluators come from the TFX cache and only the Pusher
whose execution never completed runs again.
"""
import json
import os

import pytest

import local_runner
from common import versions
from tests import synthetic_data


@pytest.mark.slow
def test_a_push_killed_before_its_rename_is_finished_by_the_next_run(
    tmp_path, restore_logging, capsys, monkeypatch):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data, num_users=120, num_movies=360,
                              ratings_per_user=30)
  out = str(tmp_path / "out")
  args = ["--data", data, "--output-dir", out, "--no-ranking",
          "--retrieval-config", json.dumps(synthetic_data.E2E_RETRIEVAL_CONFIG)]
  model_dir = os.path.join(out, "serving", versions.RETRIEVAL)

  def killed(*_args, **_kwargs):
    raise RuntimeError("simulated kill between the copy and the rename")
  monkeypatch.setattr(versions, "publish_dir", killed)
  assert local_runner.main(args) != 0
  first = capsys.readouterr().out
  assert "RetrievalEvaluator done" in first, first
  # The copy is hidden; nothing torn is visible to serving.
  assert versions.version_dirs(model_dir) == ([], [])
  assert any(n.startswith(versions.PUSHING_PREFIX) for n in os.listdir(model_dir))

  monkeypatch.undo()
  assert local_runner.main(args) == 0
  second = capsys.readouterr().out
  for node in ("RetrievalTrainer", "RetrievalEvaluator"):
    assert f"{node} done in" in second and "(cached)" in second.split(
        f"{node} done in", 1)[1].splitlines()[0], second
  assert "RetrievalPusher done in" in second
  assert "(cached)" not in second.split("RetrievalPusher done in", 1)[1].splitlines()[0]
  complete, incomplete = versions.version_dirs(model_dir)
  assert len(complete) == 1 and not incomplete, second
  # Retention removed the killed push's hidden copy.
  assert os.listdir(model_dir) == [str(complete[0])]
