"""Scheduled local runs: cron / fixed-interval ticks and an output-dir lock.

`local_runner.py --schedule "0 3 * * *"` or `--every 24h` keeps running in
the foreground and calls the pipeline on every tick, one run at a time:

* A tick that comes while a run is still going is skipped, not queued: a
  late model is worth less than the next scheduled one, and queued runs
  would pile up behind a slow one forever. There is no catch-up after the
  machine slept either (the same rule as the Kubeflow schedule).
* A failed run is reported and the loop goes on: the next tick may see fixed
  data. Only start-up errors end the scheduler with a non-zero exit.
* Ctrl-C while waiting stops at once; Ctrl-C during a run lets the run finish
  (a second Ctrl-C aborts it), so no run is left half-written by accident.

`OutputDirLock` (fcntl.flock on `<output>/runner.lock`) keeps two runners
(a crontab entry overlapping a manual run, two schedulers) from writing one
output directory at once. The kernel drops the lock when its holder dies, so
a crashed run never leaves a stale lock behind. flock is advisory and local:
it does not protect an output directory shared over NFS between machines.

Everything time-related is injected (`clock`, `sleep`) so the loop is tested
without waiting.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import math
import os
import re
import signal
import sys
import time
from typing import Callable, Optional

LOCK_FILE = "runner.lock"
SCHEDULER_LOCK_FILE = "scheduler.lock"
EXIT_LOCKED = 75  # EX_TEMPFAIL: "try again later" (what a crontab run gets)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_SLEEP = 60.0  # re-read the clock at least this often (suspend, clock changes)


class ScheduleError(ValueError):
  """A --schedule / --every value that cannot be used (message says why)."""


def _fmt(t: float) -> str:
  return datetime.datetime.fromtimestamp(t).astimezone().strftime(
      "%Y-%m-%d %H:%M:%S %Z")


# ---------------------------------------------------------------------------
# Schedules: next_after(t) is the first tick strictly after t (epoch seconds).

class CronSchedule:
  """Standard 5-field cron (minute hour day month weekday) in local time.

  Local time because that is what crontab means; croniter handles DST.
  """

  def __init__(self, expr: str):
    from croniter import croniter  # pylint: disable=g-import-not-at-top
    fields = expr.split()
    if len(fields) != 5:
      hint = (" (6 fields look like Kubeflow's seconds-first cron: drop the "
              "seconds)" if len(fields) == 6 else "")
      raise ScheduleError(
          f"cron needs 5 fields (minute hour day-of-month month day-of-week), "
          f"got {len(fields)} in {expr!r}{hint}; e.g. \"0 3 * * *\" = 03:00 daily")
    if not croniter.is_valid(expr):
      raise ScheduleError(
          f"invalid cron expression {expr!r}: a field is out of range or "
          "malformed (minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-6)")
    self._croniter = croniter
    self.expr = expr

  def next_after(self, t: float) -> float:
    start = datetime.datetime.fromtimestamp(t).astimezone()
    return self._croniter(self.expr, start).get_next(float)

  def __str__(self):
    return f"cron {self.expr!r} (local time)"


class IntervalSchedule:
  """Every `seconds`, anchored at `start` (the first run is at start).

  Anchored, not "interval after the last run ended": runs stay on a fixed
  grid however long each one takes.
  """

  def __init__(self, seconds: float, start: float = 0.0):
    self.seconds = float(seconds)
    self.start = start

  def next_after(self, t: float) -> float:
    if t < self.start:
      return self.start
    k = math.floor((t - self.start) / self.seconds) + 1
    return self.start + k * self.seconds

  def __str__(self):
    return f"every {format_seconds(self.seconds)}"


def parse_every(text: str) -> float:
  """'30m' / '24h' / '1d' / '90s' / '1.5h' → seconds (ScheduleError if bad)."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
  if not m:
    raise ScheduleError(
        f"cannot read interval {text!r}: use a number and a unit s/m/h/d, "
        "e.g. 30m, 24h, 1d")
  seconds = float(m.group(1)) * _UNITS[m.group(2)]
  if seconds < 1:
    raise ScheduleError(f"interval {text!r} is shorter than 1 second")
  return seconds


def format_seconds(seconds: float) -> str:
  for unit in ("d", "h", "m"):
    if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
      return f"{int(seconds // _UNITS[unit])}{unit}"
  return f"{seconds:g}s"


# ---------------------------------------------------------------------------
# Inter-process lock.

class LockBusy(Exception):
  """Another process holds the lock; str() names it when it can."""


class OutputDirLock:
  """Exclusive, non-blocking flock on `<output_dir>/<name>`.

      with OutputDirLock(out):   # raises LockBusy if another runner has it
        run()

  The holder writes its pid, start time and command line into the file, so
  the process that is turned away can say who is in the way.
  """

  def __init__(self, output_dir: str, name: str = LOCK_FILE, what: str = "run"):
    self.path = os.path.join(output_dir, name)
    self.what = what
    self._fd: Optional[int] = None

  def acquire(self) -> "OutputDirLock":
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise LockBusy(self._busy_message()) from None
    holder = {"pid": os.getpid(), "since": _fmt(time.time()),
              "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fd, self._fd = self._fd, None
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)

  def _busy_message(self) -> str:
    who = "another process"
    try:
      with open(self.path, encoding="utf-8") as f:
        h = json.loads(f.read() or "{}")
      if h.get("pid"):
        who = f"process {h['pid']} (since {h.get('since')}: {h.get('command')})"
    except (OSError, ValueError):
      pass
    return (f"{who} holds the {self.what} lock of "
            f"{os.path.dirname(self.path)} ({self.path})")

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


# ---------------------------------------------------------------------------
# The loop.

class StopRequest:
  """Ctrl-C / SIGTERM handling for the loop.

  While waiting for a tick, a signal stops the scheduler at once. During a
  run the first signal only asks to stop after it (a TFX run interrupted
  half-way leaves artifacts in limbo); a second one aborts the run.
  """

  def __init__(self, say: Callable[[str], None]):
    self.say = say
    self.requested = False
    self.in_run = False
    self._saved = {}

  def install(self) -> "StopRequest":
    for sig in (signal.SIGINT, signal.SIGTERM):
      self._saved[sig] = signal.signal(sig, self._handle)
    return self

  def uninstall(self) -> None:
    for sig, handler in self._saved.items():
      signal.signal(sig, handler)
    self._saved.clear()

  def _handle(self, signum, frame):
    del frame
    if self.in_run and not self.requested:
      self.requested = True
      self.say(f"{signal.Signals(signum).name}: stopping after the current run "
               "finishes (Ctrl-C again to abort it now)")
      return
    raise KeyboardInterrupt


def run_scheduled(schedule, run_once: Callable[[], int], *,
                  clock: Callable[[], float] = time.time,
                  sleep: Callable[[float], None] = time.sleep,
                  say: Callable[[str], None] = print,
                  max_runs: Optional[int] = None,
                  stop: Optional[StopRequest] = None,
                  run_first_now: bool = False) -> int:
  """Calls run_once() on every tick of `schedule` until stopped.

  Args:
    schedule: CronSchedule / IntervalSchedule (anything with next_after(t)).
    run_once: one pipeline run; returns an exit code. Exceptions and non-zero
      codes are reported and the loop goes on. EXIT_LOCKED means another
      runner had the output directory: reported as a skipped tick.
    clock, sleep: time source and sleeper (injected by tests).
    say: where status lines go.
    max_runs: stop after this many attempted runs (tests, smoke checks).
    stop: signal state; a run in progress finishes when stop is requested.
    run_first_now: run immediately at start instead of waiting for a tick.

  Returns:
    0 when stopped by max_runs or a signal between runs, 130 when a signal
    aborted a run.
  """
  stop = stop or StopRequest(say)
  runs = 0
  due = clock() if run_first_now else schedule.next_after(clock())
  try:
    while True:
      if not run_first_now or runs:
        say(f"Next run at {_fmt(due)} ({schedule})")
      while True:  # wait for `due`, re-reading the clock now and then
        left = due - clock()
        if left <= 0:
          break
        sleep(min(left, _MAX_SLEEP))
        if stop.requested:
          say("Scheduler stopped.")
          return 0
      say(f"Tick at {_fmt(due)}: starting run {runs + 1}")
      stop.in_run = True
      started = clock()
      try:
        code = run_once()
      except KeyboardInterrupt:
        say("Run aborted; scheduler stopped.")
        return 130
      except Exception as e:  # pylint: disable=broad-except
        code = 1
        say(f"Run {runs + 1} (tick {_fmt(due)}) raised {type(e).__name__}: {e}")
      finally:
        stop.in_run = False
      runs += 1
      took = clock() - started
      if code == EXIT_LOCKED:
        say(f"skipped tick at {_fmt(due)}: another runner holds the output "
            "directory")
      elif code:
        say(f"Run {runs} (tick {_fmt(due)}) FAILED (exit {code}) after "
            f"{took:.0f}s; the scheduler goes on")
      else:
        say(f"Run {runs} (tick {_fmt(due)}) finished in {took:.0f}s")
      if stop.requested:
        say("Scheduler stopped after the run, as asked.")
        return 0
      if max_runs is not None and runs >= max_runs:
        say(f"Stopping after {runs} run(s) (--max-runs).")
        return 0
      due = _skip_missed(schedule, due, clock(), say)
  except KeyboardInterrupt:  # while waiting: nothing is running
    say("Scheduler stopped.")
    return 0


def _skip_missed(schedule, last_due: float, now: float, say) -> float:
  """The first tick at or after `now`; ticks that passed during the run are
  reported as skipped (at most a few lines for many)."""
  missed, capped, last = 0, False, None
  due = schedule.next_after(last_due)
  while due < now:
    missed += 1
    if missed <= 3:
      say(f"skipped tick at {_fmt(due)}: previous run still going")
    last = due
    if missed >= 10000:  # a tiny interval after a very long run: stop counting
      capped, due = True, schedule.next_after(now)
      break
    due = schedule.next_after(due)
  if missed > 3:
    more = f"over {missed - 3}" if capped else str(missed - 3)
    say(f"skipped {more} more tick(s) up to {_fmt(last)}: previous run still going")
  return due
