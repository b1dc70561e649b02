"""Runs the `cohort-bridge` CLI for an Airflow task and turns its exit code into what Airflow
should do: succeed, warn, retry or fail for good.

This module imports nothing from Airflow at module level, so the decision table, the command
lines and the runner are unit-tested without Airflow (tests/airflow/test_dags.py). The DAG files
next to it pass Airflow's exceptions in, or let `airflow_exceptions()` import them lazily.

Exit codes (README "Exit codes") and what a task does with them:

| code | meaning                                                  | task            |
| ---- | -------------------------------------------------------- | --------------- |
| 0    | done                                                     | success         |
| 1    | run failure: storage, query, partner down, retries spent | retry           |
| 2    | usage or configuration: flag, project file, SQL, secret  | fail, no retry  |
| 3    | sync: committed, some ids dead-lettered; ingest: some    | success, with a |
|      | input quarantined, the rest landed                       | warning (*)     |
| 4    | the partner refused permanently (401, 400 on create)     | fail, no retry  |
| 5    | another run holds the lock; nothing was done             | retry           |
| else | killed (negative: by a signal), a panic (101), ...       | retry (**)      |

(*) `on_partial="fail"` fails without retry instead; `"skip"` marks the task skipped. A retry
would not help: a rerun of `ingest` reads only files it has not read, so it would exit 0 and
hide the quarantine; a rerun of `sync` meets the same refused ids.
(**) Both commands resume after a crash (a sync's journal, an ingest's checkpoint).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from typing import Callable, Iterable, Mapping, Optional, Sequence

# Exit codes, as in src/error.rs (`exit::*`).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_PARTNER_REJECTED = 4
EXIT_LOCKED = 5

MEANING = {
    EXIT_OK: "done",
    EXIT_FAILURE: "run failure (storage, query, partner unreachable or retries exhausted)",
    EXIT_USAGE: "usage or configuration error (flag, project file, cohort SQL, missing secret)",
    EXIT_PARTIAL: "partial: committed, but some input was refused (dead letters) or quarantined",
    EXIT_PARTNER_REJECTED: "the partner refused permanently (HTTP 401, or 400 on creating the cohort)",
    EXIT_LOCKED: "another run holds the lock; nothing was done",
}

# What a task does.
SUCCESS = "success"
WARN = "warn"
RETRY = "retry"
FAIL = "fail"
SKIP = "skip"

PARTIAL_POLICIES = (WARN, FAIL, SKIP)

# Where the binary and the project file are, unless the worker's environment says otherwise
# (COHORT_BRIDGE_BIN, COHORT_BRIDGE_PROJECT; read when a task runs).
DEFAULT_BINARY = "cohort-bridge"
DEFAULT_PROJECT = "/srv/cohorts/cohort-bridge.toml"


def _binary_and_project(binary, project):
    return (binary or os.environ.get("COHORT_BRIDGE_BIN") or DEFAULT_BINARY,
            project or os.environ.get("COHORT_BRIDGE_PROJECT") or DEFAULT_PROJECT)

# Secrets: environment variable the CLI reads (named in cohort-bridge.toml) -> the Airflow
# Variable holding it. Fetched at run time only (never at parse time, never in the DAG file);
# Airflow masks their values in task logs because the names contain "api_key" / "secret".
SECRET_VARIABLES = {
    "BRAZE_PARTNER_API_KEY": "braze_partner_api_key",
    "BRAZE_CLIENT_SECRET": "braze_client_secret",
}

log = logging.getLogger("cohort_bridge")


class CohortBridgeError(Exception):
    """A run that failed in a way worth retrying (exit 1, 5, a crash). Airflow retries any
    exception that is not AirflowFailException, up to the task's `retries`."""

    def __init__(self, message: str, exit_code: Optional[int] = None, summaries=()):
        super().__init__(message)
        self.exit_code = exit_code
        self.summaries = list(summaries)


def decide(exit_code: int, on_partial: str = WARN) -> str:
    """The task's fate for an exit code: SUCCESS, WARN, RETRY, FAIL or SKIP."""
    if on_partial not in PARTIAL_POLICIES:
        raise ValueError(f"on_partial must be one of {PARTIAL_POLICIES}, not {on_partial!r}")
    if exit_code == EXIT_OK:
        return SUCCESS
    if exit_code == EXIT_PARTIAL:
        return on_partial
    if exit_code in (EXIT_USAGE, EXIT_PARTNER_REJECTED):
        return FAIL
    return RETRY  # 1, 5, killed by a signal, a panic: transient or resumable


def airflow_exceptions():
    """(AirflowFailException, AirflowSkipException), from wherever this Airflow keeps them."""
    try:  # Airflow 3 (the Task SDK)
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    except ImportError:  # Airflow 2
        from airflow.exceptions import AirflowFailException, AirflowSkipException
    return AirflowFailException, AirflowSkipException


def parse_summaries(stdout_lines: Iterable[str]) -> list:
    """The JSON objects among stdout's lines (one per cohort for `sync`, per source for
    `ingest`); anything else is ignored."""
    out = []
    for line in stdout_lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


# --- command lines -------------------------------------------------------------------------


def sync_argv(cohort: str, at: str, shard: Optional[tuple] = None, *, binary: str = None,
              project: str = None, engine: Optional[str] = None) -> list:
    """`cohort-bridge [--engine E] --config P sync COHORT [--shard K/N] --at AT`; `engine` is
    `local` or `ballista://HOST:PORT` (a cluster's scheduler), else the project's `engine.url`."""
    binary, project = _binary_and_project(binary, project)
    argv = [binary]
    if engine is not None:
        argv += ["--engine", check_engine(engine)]
    argv += ["--config", project, "sync", cohort]
    if shard is not None:
        k, n = shard
        if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
            raise ValueError(f"shard must be K/N with 0 <= K < N, not {k}/{n}")
        argv += ["--shard", f"{k}/{n}"]
    return argv + ["--at", at]


# A sync DAG's `default_args`. Exit 1 (transient) and 5 (lock held) are retried; 2 and 4 never
# are (AirflowFailException). A constant delay: `retry_exponential_backoff` is a flag in Airflow 2
# but a multiplier in 3.3 (True = 1 = constant). Three tries 5 minutes apart outlast a dead run's
# lock (10 min). A killed run resumes at its next try; the whole slot stays under the hour.
SYNC_DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": _dt.timedelta(minutes=5),
    "execution_timeout": _dt.timedelta(minutes=45),
}


def logical_time(context: Mapping) -> str:
    """A task's `--at`: the slot's data_interval_end, else its logical date, else now (UTC)."""
    for key in ("data_interval_end", "logical_date"):
        t = context.get(key)
        if t is not None:
            return t.isoformat()
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def check_engine(engine: str) -> str:
    """`local` or `ballista://HOST:PORT`, as `--engine` takes it; anything else is a ValueError
    when the DAG file is parsed rather than exit 2 in every task."""
    if engine == "local":
        return engine
    scheme = "ballista://"
    host, sep, port = engine[len(scheme):].rpartition(":")
    if not engine.startswith(scheme) or not sep or not host or "/" in host \
            or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"engine must be `local` or `ballista://HOST:PORT`, not {engine!r}")
    return engine


def ingest_argv(source: str, date_range: Optional[tuple] = None, *, binary: str = None,
                project: str = None) -> list:
    """`cohort-bridge --config P ingest --source S [--from D1 --to D2]`."""
    binary, project = _binary_and_project(binary, project)
    argv = [binary, "--config", project, "ingest", "--source", source]
    if date_range is not None:
        argv += ["--from", date_range[0].isoformat(), "--to", date_range[1].isoformat()]
    return argv


def _date(value, what: str) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{what}: `{value}` is not a date (YYYY-MM-DD)") from None


def ingest_range(*, interval_start, interval_end, run_type: str, now: _dt.datetime,
                 params: Optional[Mapping] = None,
                 catch_up_after: _dt.timedelta = _dt.timedelta(days=1)) -> Optional[tuple]:
    """Which days a run of the daily ingest DAG (re)ingests: None for an incremental run (every
    new file, whatever day its events fall on), or (from, to) for a backfill that replaces
    exactly those `event_date` days.

    - `params` `from`/`to` (a manual trigger with a config): that range, one backfill.
    - a backfill run (`airflow dags backfill`, `airflow backfill create`): its interval's day.
    - a run that starts more than `catch_up_after` after its interval ended, so a newer interval
      has closed since: catch-up after a pause or outage, or an old run cleared to redo its day:
      its interval's day.
    - otherwise the normal daily run: incremental. It also picks up late files of earlier days,
      which a one-day backfill of the newest day would leave for later.

    The interval's day is `data_interval_start`'s UTC date (`{{ data_interval_start | ds }}`);
    the DAG's timetable makes the interval one day long.
    """
    params = params or {}
    p_from, p_to = params.get("from"), params.get("to")
    if p_from or p_to:
        if not (p_from and p_to):
            raise ValueError("params `from` and `to` go together (a backfill of days from..to)")
        d1, d2 = _date(p_from, "params.from"), _date(p_to, "params.to")
        if d1 > d2:
            raise ValueError(f"params.from {d1} is after params.to {d2}")
        return (d1, d2)
    day = _date(_as_utc(interval_start), "data_interval_start")
    if str(getattr(run_type, "value", run_type)).lower() == "backfill":
        return (day, day)
    if interval_end is not None and now - _as_utc(interval_end) > catch_up_after:
        return (day, day)
    return None


def _as_utc(t):
    if isinstance(t, _dt.datetime) and t.tzinfo is not None:
        return t.astimezone(_dt.timezone.utc)
    return t


def shard_totals(cohort: str, shards: int, results: Sequence[Mapping]) -> dict:
    """Adds up the summaries of a sharded cohort's shard tasks (each a `run()` result) and
    checks that every shard 0..N-1 reported exactly once."""
    keys = ("members", "adds", "removes", "removes_held_back", "dead_letters", "requests",
            "retries", "batches")
    totals = {k: 0 for k in keys}
    seen = []
    outcomes = {}
    for r in results:
        seen.append(r.get("shard"))
        for s in r.get("summaries", []):
            for k in keys:
                totals[k] += int(s.get(k) or 0)
            outcomes[s.get("outcome", "?")] = outcomes.get(s.get("outcome", "?"), 0) + 1
    if sorted(x for x in seen if x is not None) != list(range(shards)) or None in seen:
        raise CohortBridgeError(f"{cohort}: expected shards 0..{shards - 1}, got {seen}")
    return {"cohort": cohort, "shards": shards, "outcomes": outcomes, **totals,
            "partial": any(r.get("partial") for r in results)}


def secret_env(get_variable: Callable[[str], Optional[str]],
               variables: Mapping[str, str] = None) -> dict:
    """{ENV_VAR: value} for the secrets whose Airflow Variable is set. An unset one is left to
    the worker's environment; if that lacks it too, the CLI exits 2 naming the variable."""
    env = {}
    for env_name, var_name in (variables or SECRET_VARIABLES).items():
        value = get_variable(var_name)
        if value:
            env[env_name] = value
        elif not os.environ.get(env_name):
            log.warning("Airflow Variable %s is not set and %s is not in the environment",
                        var_name, env_name)
    return env


# --- the runner ----------------------------------------------------------------------------


def _set_parent_death_signal():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the CLI gets SIGTERM if the task process dies (e.g. killed by the scheduler after
    execution_timeout), rather than running on unsupervised; the next try resumes it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
        on_partial: str = WARN, fail_exception=None, skip_exception=None,
        logger: logging.Logger = None, terminate_grace: float = 30.0,
        extra: Optional[Mapping] = None) -> dict:
    """Runs the CLI, streams its stderr (logs) and stdout (JSON summaries) into `logger`, and
    returns {"argv", "exit_code", "outcome", "partial", "summaries", ...extra} (Airflow pushes
    the return value to XCom), or raises:

    - `fail_exception` (AirflowFailException) for exit 2 and 4: the task fails, no retry;
    - `CohortBridgeError` for exit 1, 5 and crashes: Airflow retries;
    - `skip_exception` (AirflowSkipException) for exit 3 when on_partial="skip".

    `env` is added to this process's environment. If this process is interrupted (timeout,
    SIGTERM), the CLI is terminated (then killed after `terminate_grace` seconds).
    """
    logger = logger or log
    decide(0, on_partial)  # validates on_partial before anything runs
    if fail_exception is None or (on_partial == SKIP and skip_exception is None):
        fail_default, skip_default = airflow_exceptions()
        fail_exception = fail_exception or fail_default
        skip_exception = skip_exception or skip_default
    argv = [str(a) for a in argv]
    full_env = dict(os.environ)
    full_env.update(env or {})
    logger.info("running: %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=full_env, text=True, encoding="utf-8", errors="replace", bufsize=1,
            preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,
        )
    except OSError as e:  # not installed on this worker, not executable: a human's job
        raise fail_exception(f"cannot run {argv[0]}: {e}") from e

    stderr_tail = deque(maxlen=20)

    def pump_stderr():
        for line in proc.stderr:
            line = line.rstrip("\n")
            stderr_tail.append(line)
            (logger.error if line.startswith("error:") else logger.info)("%s", line)

    pump = threading.Thread(target=pump_stderr, name="cohort-bridge-stderr", daemon=True)
    pump.start()
    stdout_lines = []
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            stdout_lines.append(line)
            logger.info("%s", line)
        code = proc.wait()
    except BaseException:
        _stop(proc, terminate_grace, logger)
        raise
    finally:
        pump.join(timeout=5)
    summaries = parse_summaries(stdout_lines)
    result = {
        "argv": argv,
        "exit_code": code,
        "outcome": decide(code, on_partial),
        "partial": code == EXIT_PARTIAL,
        "summaries": summaries,
        **(extra or {}),
    }
    fate = result["outcome"]
    if fate == SUCCESS:
        return result
    message = _message(code, summaries, stderr_tail)
    if fate == WARN:
        logger.warning("%s; the task succeeds: look at the reasons "
                       "(dead_letters/*.parquet, _quarantine/<table>/<run>/quarantine.jsonl)",
                       message)
        return result
    if fate == SKIP:
        raise skip_exception(message)
    if fate == FAIL:
        raise fail_exception(message + "; not retried: a human must fix this")
    raise CohortBridgeError(message + "; retrying", exit_code=code, summaries=summaries)


def _message(code: int, summaries: list, stderr_tail) -> str:
    if code < 0:
        try:
            what = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
    else:
        what = f"exit {code}: {MEANING.get(code, 'unexpected exit code')}"
    errors = [s["error"] for s in summaries if s.get("error")]
    if not errors:  # failed before any summary (project file, flags): the CLI's own words
        errors = [line for line in stderr_tail if line.startswith("error:")][-1:]
    counts = [f"{s.get('cohort') or s.get('source')}: dead_letters={s['dead_letters']}"
              for s in summaries if s.get("dead_letters")]
    counts += [f"{s.get('source')}: quarantined_records={s.get('quarantined_records', 0)}, "
               f"broken_files={s.get('broken_files', 0)}"
               for s in summaries if s.get("quarantined_records") or s.get("broken_files")]
    return "cohort-bridge " + "; ".join([what] + errors + counts)


def _stop(proc: subprocess.Popen, grace: float, logger) -> None:
    if proc.poll() is not None:
        return
    logger.warning("stopping cohort-bridge (pid %s); the next try resumes its work", proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
