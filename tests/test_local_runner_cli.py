"""local_runner.py's scheduling / retention / rollback flags from the outside.

Argument errors must be one clear line and exit code 2 (argparse), runtime
refusals exit 1 (or 75 when another runner holds the output directory),
never a traceback. These checks fail before the TFX import, so they are fast.
"""
import json
import os
import subprocess
import sys

import pytest

import local_runner
from pipeline import configs
from runners import local
from runners import retention
from runners import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=60):
  proc = subprocess.run([sys.executable, os.path.join(REPO, "local_runner.py"),
                         *args], capture_output=True, text=True, timeout=timeout,
                        cwd=REPO)
  assert "Traceback" not in proc.stderr, proc.stderr
  return proc


@pytest.mark.parametrize("args,message", [
    (["--schedule", "0 0 3 * * *"], "6 fields look like Kubeflow"),
    (["--schedule", "61 * * * *"], "out of range"),
    (["--schedule", "daily"], "cron needs 5 fields"),
    (["--every", "5x"], "use a number and a unit s/m/h/d"),
    (["--every", "24"], "use a number and a unit s/m/h/d"),
    (["--every", "1h", "--schedule", "0 3 * * *"], "not allowed with argument"),
    (["--rollback", "ranker"], "MODEL must be one of retrieval, ranking"),
    (["--rollback", "ranking=v2"], "VERSION must be an integer"),
    (["--rollback", "ranking", "--every", "1h"], "cannot be combined"),
    (["--keep-versions", "-1"], "expected a whole number >= 0"),
    (["--keep-runs", "ten"], "expected a whole number >= 0"),
    (["--max-runs", "2"], "only applies with --schedule or --every"),
])
def test_argument_errors_exit_2_with_a_clear_message(args, message):
  proc = _cli(*args)
  assert proc.returncode == 2
  assert message in proc.stderr


def test_rollback_without_pushed_versions_exits_1(tmp_path):
  proc = _cli("--rollback", "ranking", "--output-dir", str(tmp_path))
  assert proc.returncode == 1
  assert "Rollback failed: no pushed models" in proc.stderr
  os.makedirs(tmp_path / "serving" / "ranking" / "5")  # incomplete only
  proc = _cli("--rollback", "ranking", "--output-dir", str(tmp_path))
  assert proc.returncode == 1
  assert "no complete ranking versions" in proc.stderr
  proc = _cli("--rollback", "retrieval=3", "--output-dir", str(tmp_path))
  assert proc.returncode == 1 and "Rollback failed" in proc.stderr


def _push(out, model, version, text):
  d = os.path.join(out, "serving", model, str(version))
  os.makedirs(d)
  with open(os.path.join(d, "saved_model.pb"), "w") as f:
    f.write(text)


def test_rollback_serves_the_previous_version(tmp_path):
  out = str(tmp_path)
  _push(out, "ranking", 100, "good")
  _push(out, "ranking", 200, "bad")
  proc = _cli("--rollback", "ranking", "--output-dir", out)
  assert proc.returncode == 0, proc.stderr
  new = max(int(n) for n in os.listdir(os.path.join(out, "serving", "ranking"))
            if n.isdigit())
  assert f"version {new} is a copy of version 100" in proc.stdout
  assert f"now served: ranking version {new}" in proc.stdout
  d = os.path.join(out, "serving", "ranking", str(new))
  assert open(os.path.join(d, "saved_model.pb")).read() == "good"
  info = json.load(open(os.path.join(d, retention.ROLLBACK_FILE)))
  assert info["source_version"] == 100 and info["replaced_version"] == 200


def test_second_runner_on_the_same_output_dir_exits_75(tmp_path):
  out = str(tmp_path)
  with schedule.OutputDirLock(out):  # "a run is going"
    proc = _cli("--output-dir", out, "--data", "/nonexistent")
    assert proc.returncode == local_runner.EXIT_LOCKED
    assert "Not started" in proc.stderr and f"process {os.getpid()}" in proc.stderr
    _push(out, "ranking", 1, "a")
    _push(out, "ranking", 2, "b")
    proc = _cli("--rollback", "ranking", "--output-dir", out)
    assert proc.returncode == local_runner.EXIT_LOCKED
    assert "Not rolled back" in proc.stderr
  assert sorted(os.listdir(os.path.join(out, "serving", "ranking"))) == ["1", "2"]


def test_second_scheduler_exits_75(tmp_path):
  out = str(tmp_path)
  with schedule.OutputDirLock(out, schedule.SCHEDULER_LOCK_FILE, "scheduler"):
    proc = _cli("--output-dir", out, "--every", "1h")
    assert proc.returncode == local_runner.EXIT_LOCKED
    assert "scheduler lock" in proc.stderr and "One scheduler" in proc.stderr


def test_scheduler_runs_each_tick_in_a_child_and_survives_failures(
    tmp_path, monkeypatch, capsys):
  commands, codes = [], iter([1, 0])

  def fake_child(cmd):
    commands.append(cmd)
    return next(codes)

  monkeypatch.setattr(local, "_run_child", fake_child)
  argv = ["--output-dir", str(tmp_path), "--data", "some/data", "--every", "1s",
          "--max-runs", "2"]
  assert local_runner.main(argv) == 0
  out = capsys.readouterr().out
  assert "Scheduler: every 1s" in out
  assert "FAILED (exit 1)" in out and "the scheduler goes on" in out
  assert "Run 2" in out and "finished" in out
  assert "Next run at" in out
  # The child gets the same arguments plus the one-run flag.
  assert len(commands) == 2
  assert commands[0][1].endswith("local_runner.py")
  assert commands[0][2:] == argv + [local_runner.TICK_FLAG]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_while_waiting_stops_the_scheduler_cleanly(tmp_path, sig):
  import signal  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(
      [sys.executable, os.path.join(REPO, "local_runner.py"), "--output-dir",
       str(tmp_path), "--schedule", "0 0 1 1 *"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  try:
    lines = []
    while not any("Next run at" in l for l in lines):
      line = proc.stdout.readline()
      assert line, proc.stderr.read()
      lines.append(line)
    assert "-01-01 00:00:00" in lines[-1]
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=30)
  finally:
    proc.kill()
  assert proc.returncode == 0, err
  assert "Scheduler stopped." in out and "Traceback" not in err
  # Both locks are free again.
  with schedule.OutputDirLock(str(tmp_path), schedule.SCHEDULER_LOCK_FILE):
    pass


def test_child_run_flag_means_one_run_not_a_scheduler(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(local, "locked_run",
                      lambda args, paths: calls.append(args) or 0)
  monkeypatch.setattr(local, "run_schedule",
                      lambda *a: pytest.fail("a child must not schedule"))
  assert local_runner.main(["--output-dir", str(tmp_path), "--every", "1s",
                            local_runner.TICK_FLAG]) == 0
  assert len(calls) == 1


@pytest.mark.slow
def test_scheduler_end_to_end_with_a_failing_run(tmp_path):
  """A real child process per tick: the run fails (missing data), the
  scheduler reports it and stops after --max-runs with exit 0."""
  proc = _cli("--output-dir", str(tmp_path), "--data", str(tmp_path / "missing"),
              "--every", "1s", "--max-runs", "1", timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "Pipeline FAILED" in proc.stderr
  assert "FAILED (exit 1)" in proc.stdout and "Stopping after 1 run" in proc.stdout




@pytest.mark.slow
def test_retention_after_real_runs_then_a_cached_rerun(
    tmp_path, ml100k_dir, restore_logging, capsys):
  """Two forced runs with --keep-runs 1: the second prunes the first (its
  artifact folders go, MLMD says DELETED); a third, cached run still works."""
  from ml_metadata.proto import metadata_store_pb2 as pb  # pylint: disable=g-import-not-at-top
  from runners import run_report  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "out")
  base = ["--data", ml100k_dir, "--output-dir", out, "--no-retrieval",
          "--no-ranking", "--keep-runs", "1"]
  assert local_runner.main(base) == 0
  first = capsys.readouterr().out
  assert "Retention (keep 5 versions, 1 runs): nothing to delete." in first
  assert local_runner.main(base + ["--force"]) == 0
  second = capsys.readouterr().out
  assert "deleted Examples #" in second and "freed" in second
  store = retention._store(os.path.join(out, "metadata.db"))
  arts = store.get_artifacts()
  deleted = [a for a in arts if a.state == pb.Artifact.DELETED]
  assert deleted and all(not os.path.exists(a.uri) for a in deleted)
  live = [a for a in arts if a.state == pb.Artifact.LIVE]
  assert live and all(os.path.exists(a.uri) for a in live)
  assert len(os.listdir(os.path.join(out, "logs"))) == 1
  # Cached re-run: every component is served from the second run's outputs.
  assert local_runner.main(base) == 0
  third = capsys.readouterr().out
  assert "✔ Transform done" in third and "(cached)" in third
  assert run_report.latest_run_outputs(os.path.join(out, "metadata.db"),
                                       "movielens-two-stage")


def test_span_strategy_and_beam_flags_parse():
  args = local_runner.parse_args([
      "--data", "data/span-{SPAN}", "--rolling-spans", "3",
      "--drift-thresholds", '{"user_rating": 0.1, "user_id": null}',
      "--distribution-strategy", "mirrored",
      "--beam-args=--direct_num_workers=2"])
  assert args.rolling_spans == 3
  assert args.drift_thresholds == {"user_rating": 0.1, "user_id": None}
  assert args.distribution_strategy == "mirrored"
  # A span pattern is made absolute (the pipeline may run elsewhere), and
  # a user Beam flag replaces the same-named default.
  assert local.local_abspath(args.data) == os.path.abspath("data/span-{SPAN}")
  assert local.local_abspath("tfds:movielens/100k-ratings") == "tfds:movielens/100k-ratings"
  assert local.local_abspath("s3://b/ml/span-{SPAN}") == "s3://b/ml/span-{SPAN}"
  beam = configs.merged_beam_args(args.beam_args)
  assert "--direct_num_workers=2" in beam and "--direct_num_workers=1" not in beam


@pytest.mark.parametrize("flags, message", [
    (["--retrieval-config", '{"embeding_dim": 8}'], "did you mean embedding_dim"),
    (["--retrieval-config", "[1,2]"], "retrieval config"),
    (["--ranking-config", "not json"], "ranking config"),
    (["--ranking-epochs", "-1"], "epochs"),
])
def test_bad_trainer_settings_are_usage_errors_before_anything_runs(flags, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    local_runner.parse_args(["--output-dir", "x"] + flags)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


def test_an_unwritable_output_dir_is_one_line_not_a_traceback(tmp_path, capsys):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a folder")
  assert local_runner.main(["--output-dir", str(blocker / "out")]) == 1
  err = capsys.readouterr().err
  assert "cannot write to the output directory" in err and str(blocker) in err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1

