"""The scheduler loop (fake clock, no waiting) and the output-dir lock."""
import datetime
import os
import subprocess
import sys
import textwrap

import pytest

from runners import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeTime:
  """clock() and sleep() over a virtual epoch-seconds time."""

  def __init__(self, now=1_000_000.0):
    self.now = now

  def clock(self):
    return self.now

  def sleep(self, seconds):
    assert seconds > 0
    self.now += seconds


def _local(ts):
  return datetime.datetime.fromtimestamp(ts).astimezone()


# ---------------------------------------------------------------------------
# Parsing.

@pytest.mark.parametrize("text,seconds", [
    ("30m", 1800), ("24h", 86400), ("1d", 86400), ("90s", 90), ("1.5h", 5400),
    (" 2h ", 7200)])
def test_parse_every(text, seconds):
  assert schedule.parse_every(text) == seconds


@pytest.mark.parametrize("text,message", [
    ("24", "use a number and a unit"), ("5x", "use a number and a unit"),
    ("h", "use a number and a unit"), ("-1h", "use a number and a unit"),
    ("", "use a number and a unit"), ("0s", "shorter than 1 second")])
def test_parse_every_errors(text, message):
  with pytest.raises(schedule.ScheduleError, match=message):
    schedule.parse_every(text)


def test_format_seconds():
  assert [schedule.format_seconds(s) for s in (86400, 7200, 1800, 90, 1.5)] == [
      "1d", "2h", "30m", "90s", "1.5s"]


def test_cron_next_after_is_in_local_time():
  cron = schedule.CronSchedule("30 3 * * *")
  start = _local(0).replace(year=2026, month=3, day=10, hour=12, minute=0)
  nxt = _local(cron.next_after(start.timestamp()))
  assert (nxt.day, nxt.hour, nxt.minute) == (11, 3, 30)
  # Strictly after: a tick exactly now is not returned again.
  assert cron.next_after(nxt.timestamp()) > nxt.timestamp()


@pytest.mark.parametrize("expr,message", [
    ("0 0 3 * * *", "6 fields look like Kubeflow"),
    ("* * *", "cron needs 5 fields"),
    ("61 * * * *", "out of range"),
    ("0 25 * * *", "out of range"),
    ("a b c d e", "invalid cron"),
])
def test_cron_errors(expr, message):
  with pytest.raises(schedule.ScheduleError, match=message):
    schedule.CronSchedule(expr)


def test_interval_is_anchored():
  every = schedule.IntervalSchedule(10, start=100)
  assert every.next_after(50) == 100
  assert every.next_after(100) == 110
  assert every.next_after(105) == 110
  assert every.next_after(131) == 140


# ---------------------------------------------------------------------------
# The loop.

def test_runs_on_every_tick_and_prints_next_run():
  t = FakeTime()
  starts, lines = [], []

  def run():
    starts.append(t.now)
    t.now += 3  # a run shorter than the interval
    return 0

  code = schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=t.now), run, clock=t.clock,
      sleep=t.sleep, say=lines.append, max_runs=3, run_first_now=True)
  assert code == 0
  assert [s - starts[0] for s in starts] == [0, 10, 20]
  assert sum("Next run at" in l for l in lines) == 2
  assert not any("skipped" in l for l in lines)


def test_ticks_during_a_long_run_are_skipped_not_queued():
  t = FakeTime(0)
  starts, lines = [], []
  durations = iter([25, 1, 1])

  def run():
    starts.append(t.now)
    t.now += next(durations)  # the first run spans 2.5 intervals
    return 0

  schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=0), run, clock=t.clock, sleep=t.sleep,
      say=lines.append, max_runs=3, run_first_now=True)
  assert starts == [0, 30, 40]  # ticks 10 and 20 were skipped, not run late
  skipped = [l for l in lines if l.startswith("skipped tick at")]
  assert len(skipped) == 2
  assert all(l.endswith("previous run still going") for l in skipped)


def test_many_skipped_ticks_are_summarized():
  t = FakeTime(0)
  lines = []

  def run():
    t.now += 1000
    return 0

  schedule.run_scheduled(
      schedule.IntervalSchedule(1, start=0), run, clock=t.clock, sleep=t.sleep,
      say=lines.append, max_runs=3, run_first_now=True)
  # After each of the first two runs: 3 ticks named, the rest summarized.
  assert sum(l.startswith("skipped tick at") for l in lines) == 3 * 2
  assert sum(l.startswith("skipped ") and "more tick(s)" in l for l in lines) == 2


def test_failed_runs_do_not_stop_the_loop():
  t = FakeTime(0)
  outcomes = iter([RuntimeError("boom"), 1, 0])
  lines = []

  def run():
    t.now += 1
    outcome = next(outcomes)
    if isinstance(outcome, Exception):
      raise outcome
    return outcome

  code = schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=0), run, clock=t.clock, sleep=t.sleep,
      say=lines.append, max_runs=3, run_first_now=True)
  assert code == 0
  assert any("raised RuntimeError: boom" in l for l in lines)
  assert any("FAILED (exit 1)" in l and "goes on" in l for l in lines)
  assert any(l.startswith("Run 3") and "finished" in l for l in lines)


def test_cron_waits_for_the_first_tick():
  start = _local(0).replace(year=2026, month=3, day=10, hour=2, minute=59,
                            second=30, microsecond=0).timestamp()
  t = FakeTime(start)
  starts = []

  def run():
    starts.append(t.now)
    return 0

  schedule.run_scheduled(schedule.CronSchedule("0 3 * * *"), run, clock=t.clock,
                         sleep=t.sleep, say=lambda _: None, max_runs=2)
  assert [(_local(s).day, _local(s).hour, _local(s).minute) for s in starts] == [
      (10, 3, 0), (11, 3, 0)]


def test_locked_output_dir_is_reported_as_a_skipped_tick():
  t = FakeTime(0)
  lines = []

  def run():
    return schedule.EXIT_LOCKED

  schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=0), run, clock=t.clock, sleep=t.sleep,
      say=lines.append, max_runs=1, run_first_now=True)
  assert any(l.startswith("skipped tick at") and "another runner" in l
             for l in lines)


def test_stop_requested_during_a_run_stops_after_it():
  t = FakeTime(0)
  lines = []
  stop = schedule.StopRequest(lines.append)
  runs = []

  def run():
    runs.append(t.now)
    stop._handle(2, None)  # Ctrl-C while the run is going: noted, not raised
    t.now += 1
    return 0

  code = schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=0), run, clock=t.clock, sleep=t.sleep,
      say=lines.append, stop=stop, run_first_now=True)
  assert code == 0 and runs == [0]
  assert any("stopping after the current run" in l for l in lines)


def test_ctrl_c_while_waiting_stops_at_once():
  t = FakeTime(0)

  def sleep(_):
    raise KeyboardInterrupt

  code = schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=5), lambda: 0, clock=t.clock,
      sleep=sleep, say=lambda _: None)
  assert code == 0


def test_second_ctrl_c_aborts_the_run():
  stop = schedule.StopRequest(lambda _: None)

  def run():
    stop._handle(2, None)
    stop._handle(2, None)  # raises KeyboardInterrupt
    return 0

  t = FakeTime(0)
  code = schedule.run_scheduled(
      schedule.IntervalSchedule(10, start=0), run, clock=t.clock, sleep=t.sleep,
      say=lambda _: None, stop=stop, run_first_now=True)
  assert code == 130


# ---------------------------------------------------------------------------
# Lock across processes (real flock).

_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from runners import schedule
    lock = schedule.OutputDirLock({out!r}).acquire()
    print("locked", flush=True)
    sys.stdin.readline()  # hold until the test says so
    lock.release()
    print("released", flush=True)
""")


def test_lock_contention_between_processes(tmp_path):
  out = str(tmp_path / "out")
  holder = subprocess.Popen(
      [sys.executable, "-c", _HOLDER.format(repo=REPO, out=out)],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(schedule.LockBusy) as busy:
      schedule.OutputDirLock(out).acquire()
    assert f"process {holder.pid}" in str(busy.value)
    assert "runner.lock" in str(busy.value)
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    with schedule.OutputDirLock(out):  # free again
      pass
  finally:
    holder.kill()
    holder.wait()


def test_lock_is_dropped_when_the_holder_dies(tmp_path):
  out = str(tmp_path / "out")
  holder = subprocess.Popen(
      [sys.executable, "-c", _HOLDER.format(repo=REPO, out=out)],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  holder.kill()  # no release: the kernel drops the flock
  holder.wait()
  with schedule.OutputDirLock(out):
    pass


def test_run_and_scheduler_locks_are_independent(tmp_path):
  out = str(tmp_path)
  with schedule.OutputDirLock(out, schedule.SCHEDULER_LOCK_FILE, "scheduler"):
    with schedule.OutputDirLock(out):  # the scheduler's own runs still lock
      with pytest.raises(schedule.LockBusy, match="run lock"):
        schedule.OutputDirLock(out).acquire()
