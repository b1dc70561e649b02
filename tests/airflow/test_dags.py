"""Tests of the Airflow example (examples/airflow/): `python3 tests/airflow/test_dags.py`.

Always (no Airflow needed): every file compiles, no DAG file holds a secret, and the runner
(cohort_bridge_runner.py) is unit-tested: the exit code -> task fate table, the command lines,
the ingest mode decision, and `run()` against fake commands (`sh -c 'echo {json}; exit N'`).

When `airflow` is importable (tests/airflow/run.sh installs it into a venv), also:
- DagBag: the folder loads without import errors; dag ids, task ids, the mapped shards,
  schedules, catchup, max_active_runs, retries, timeouts and params are as documented;
- `dag.test()` runs the DAGs against a fake `cohort-bridge` (a shell script that records its
  arguments and exits with the code it is told) on a throw-away sqlite database: the argv each
  task passes, the secrets arriving from Airflow Variables, and that exit 2 fails a task with
  no retry while exit 1 and 5 are retried. Set COHORT_BRIDGE_AIRFLOW_DAG_TEST=0 to skip these.

Airflow always runs with AIRFLOW_HOME in a temporary folder. Prints `N passed, M failed` last
and exits non-zero on any failure.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import json
import logging
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # leave no __pycache__ in examples/airflow/
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "examples" / "airflow"
DAG_FILES = ["cohort_bridge_sync.py", "cohort_bridge_ingest.py", "cohort_bridge_sync_cluster.py"]
UTC = dt.timezone.utc

# Airflow, if present, must never touch a real installation: a temporary home, no examples.
TMP = Path(tempfile.mkdtemp(prefix="cohort-bridge-airflow-test-"))
os.environ["AIRFLOW_HOME"] = str(TMP / "airflow-home")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{TMP / 'airflow.db'}"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True)
sys.path.insert(0, str(DAGS))

import cohort_bridge_runner as cb  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import check, finish  # noqa: E402  (tests/checks.py)


def expect_raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


class Fail(Exception):
    """Stands in for AirflowFailException."""


class Skip(Exception):
    """Stands in for AirflowSkipException."""


def run_sh(script, **kwargs):
    kwargs.setdefault("fail_exception", Fail)
    kwargs.setdefault("skip_exception", Skip)
    kwargs.setdefault("logger", quiet)
    return cb.run(["sh", "-c", script], **kwargs)


quiet = logging.getLogger("cohort_bridge.test")
quiet.addHandler(logging.NullHandler())
quiet.propagate = False

SYNC_OK = json.dumps({"cohort": "c", "outcome": "delivered", "members": 5, "adds": 2,
                      "removes": 1, "requests": 2, "seconds": 0.1})


def summary_line(code, **fields):
    return json.dumps({"cohort": "c", "outcome": "failed", "exit_code": code,
                       "error": f"boom {code}", **fields})


# --- without Airflow -----------------------------------------------------------------------


@check("every file compiles")
def _():
    files = sorted(DAGS.glob("*.py")) + sorted(Path(__file__).parent.glob("*.py"))
    assert len(files) >= 4, files
    for f in files:
        py_compile.compile(str(f), cfile=str(TMP / (f.name + "c")), doraise=True)
        ast.parse(f.read_text(), filename=str(f))


@check("no secret or secret variable name in the DAG files")
def _():
    for name in DAG_FILES:
        tree = ast.parse((DAGS / name).read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings:
                assert "BRAZE_" not in node.value and "var.value" not in node.value, \
                    f"{name}: {node.value!r}: secrets go through cohort_bridge_runner.secret_env"
    assert set(cb.SECRET_VARIABLES) == {"BRAZE_PARTNER_API_KEY", "BRAZE_CLIENT_SECRET"}


@check("exit code -> task fate")
def _():
    table = {0: cb.SUCCESS, 1: cb.RETRY, 2: cb.FAIL, 3: cb.WARN, 4: cb.FAIL, 5: cb.RETRY,
             101: cb.RETRY, -9: cb.RETRY, -15: cb.RETRY}
    for code, fate in table.items():
        assert cb.decide(code) == fate, (code, cb.decide(code), fate)
    assert cb.decide(3, on_partial="fail") == cb.FAIL
    assert cb.decide(3, on_partial="skip") == cb.SKIP
    assert cb.decide(2, on_partial="skip") == cb.FAIL
    expect_raises(ValueError, cb.decide, 3, on_partial="retry")


@check("JSON summaries are picked out of stdout")
def _():
    lines = ["", "not json", '{"cohort": "a", "members": 1}', "{broken", "[1, 2]",
             '  {"source": "currents", "events_added": 3}  ']
    assert cb.parse_summaries(lines) == [{"cohort": "a", "members": 1},
                                         {"source": "currents", "events_added": 3}]


@check("sync and ingest command lines")
def _():
    at = "2026-11-28T10:05:00+00:00"
    assert cb.sync_argv("paid", at, binary="cb", project="p.toml") == \
        ["cb", "--config", "p.toml", "sync", "paid", "--at", at]
    assert cb.sync_argv("big", at, shard=(3, 4), binary="cb", project="p.toml") == \
        ["cb", "--config", "p.toml", "sync", "big", "--shard", "3/4", "--at", at]
    for bad in [(4, 4), (-1, 4), (0, 0), ("1", 4)]:
        expect_raises(ValueError, cb.sync_argv, "big", at, shard=bad)
    assert cb.sync_argv("big", at, shard=(1, 4), binary="cb", project="p.toml",
                        engine="ballista://sched.internal:50050") == \
        ["cb", "--engine", "ballista://sched.internal:50050", "--config", "p.toml", "sync", "big",
         "--shard", "1/4", "--at", at]
    assert cb.sync_argv("c", at, binary="cb", project="p.toml", engine="local")[1:3] == \
        ["--engine", "local"]
    for bad in ["ballista://sched", "ballista://:50050", "http://sched:50050", "sched:50050",
                "ballista://sched:0", "ballista://sched:port", "ballista://a/b:1", ""]:
        expect_raises(ValueError, cb.sync_argv, "c", at, engine=bad)
    assert cb.ingest_argv("currents", binary="cb", project="p.toml") == \
        ["cb", "--config", "p.toml", "ingest", "--source", "currents"]
    assert cb.ingest_argv("currents", (dt.date(2026, 11, 1), dt.date(2026, 11, 3)),
                          binary="cb", project="p.toml")[-4:] == \
        ["--from", "2026-11-01", "--to", "2026-11-03"]


@check("ingest: the newest interval is incremental, older ones backfill their own day")
def _():
    start = dt.datetime(2026, 11, 27, 3, tzinfo=UTC)
    end = start + dt.timedelta(days=1)
    day = (dt.date(2026, 11, 27),) * 2

    def rng(now, run_type="scheduled", params=None, s=start, e=end):
        return cb.ingest_range(interval_start=s, interval_end=e, run_type=run_type, now=now,
                               params=params)

    assert rng(end + dt.timedelta(minutes=1)) is None  # the normal daily run
    assert rng(end + dt.timedelta(hours=23)) is None  # its retries
    assert rng(end + dt.timedelta(days=1, hours=1)) == day  # catch-up, or a cleared old run
    assert rng(end + dt.timedelta(minutes=1), run_type="backfill") == day

    class RunType:  # DagRunType is a str enum
        value = "backfill"
    assert rng(end + dt.timedelta(minutes=1), run_type=RunType()) == day
    assert rng(end, params={"from": "2026-11-01", "to": "2026-11-07"}) == \
        (dt.date(2026, 11, 1), dt.date(2026, 11, 7))
    assert rng(end, params={"from": None, "to": None}) is None
    expect_raises(ValueError, rng, end, params={"from": "2026-11-01"})
    expect_raises(ValueError, rng, end, params={"from": "2026-11-07", "to": "2026-11-01"})
    expect_raises(ValueError, rng, end, params={"from": "yesterday", "to": "2026-11-01"})
    # The day is the UTC date of the interval start, whatever zone the datetime carries.
    cet = dt.timezone(dt.timedelta(hours=1))
    late = dt.datetime(2026, 11, 27, 0, 30, tzinfo=cet)  # 2026-11-26T23:30Z
    assert cb.ingest_range(interval_start=late, interval_end=late + dt.timedelta(days=1),
                           run_type="backfill", now=end) == (dt.date(2026, 11, 26),) * 2


@check("run: exit 0 returns the summaries for XCom")
def _():
    r = run_sh(f"echo 'log line' >&2; echo '{SYNC_OK}'; exit 0", extra={"cohort": "c"})
    assert r["exit_code"] == 0 and r["outcome"] == cb.SUCCESS and not r["partial"]
    assert r["summaries"] == [json.loads(SYNC_OK)] and r["cohort"] == "c"
    assert r["argv"][:2] == ["sh", "-c"]
    json.dumps(r)  # an XCom must serialise


@check("run: exit 1 and 5 raise a retryable error, with the CLI's message")
def _():
    for code in (1, 5):
        e = expect_raises(cb.CohortBridgeError, run_sh,
                          f"echo '{summary_line(code)}'; exit {code}")
        assert e.exit_code == code and f"boom {code}" in str(e) and "retrying" in str(e), e
        assert e.summaries[0]["exit_code"] == code
        assert not isinstance(e, (Fail, Skip))


@check("run: exit 2 and 4 raise the fail exception (no retry)")
def _():
    for code in (2, 4):
        e = expect_raises(Fail, run_sh, f"echo '{summary_line(code)}'; exit {code}")
        assert f"exit {code}" in str(e) and f"boom {code}" in str(e), e
        assert "not retried" in str(e)


@check("run: exit 2 before any summary quotes the CLI's error line")
def _():
    e = expect_raises(Fail, run_sh,
                      "echo 'error: cohort-bridge.toml: unknown key `lake.urll`' >&2; exit 2")
    assert "unknown key `lake.urll`" in str(e), e


@check("run: exit 3 warns and succeeds by default; fail and skip on request")
def _():
    sync3 = json.dumps({"cohort": "c", "outcome": "delivered", "dead_letters": 7})
    ingest3 = json.dumps({"source": "currents", "mode": "incremental", "events_added": 10,
                          "quarantined_records": 2, "broken_files": 1})
    for line, needle in [(sync3, "dead_letters=7"), (ingest3, "quarantined_records=2")]:
        records = []

        class Capture(logging.Handler):
            def emit(self, record):
                records.append(record)
        logger = logging.getLogger(f"cohort_bridge.test.capture{len(line)}")
        logger.propagate = False
        logger.addHandler(Capture())
        r = run_sh(f"echo '{line}'; exit 3", logger=logger)
        assert r["outcome"] == cb.WARN and r["partial"] and r["exit_code"] == 3
        warnings = [x.getMessage() for x in records if x.levelno == logging.WARNING]
        assert any(needle in w for w in warnings), warnings
        assert needle in str(expect_raises(Fail, run_sh, f"echo '{line}'; exit 3",
                                           on_partial="fail"))
        expect_raises(Skip, run_sh, f"echo '{line}'; exit 3", on_partial="skip")


@check("run: a crash (signal, panic) is retried")
def _():
    e = expect_raises(cb.CohortBridgeError, run_sh, "kill -9 $$")
    assert e.exit_code == -9 and "SIGKILL" in str(e), e
    e = expect_raises(cb.CohortBridgeError, run_sh,
                      "echo \"thread 'main' panicked\" >&2; exit 101")
    assert e.exit_code == 101


@check("run: a missing binary fails without retry")
def _():
    e = expect_raises(Fail, cb.run, [str(TMP / "no-such-cohort-bridge"), "sync", "c"],
                      fail_exception=Fail, logger=quiet)
    assert "cannot run" in str(e)


@check("run: env is added to the environment; secrets from Variables")
def _():
    r = run_sh('echo "{\\"k\\": \\"$BRAZE_PARTNER_API_KEY\\", \\"home\\": \\"$HOME\\"}"',
               env={"BRAZE_PARTNER_API_KEY": "pk-123"})
    assert r["summaries"] == [{"k": "pk-123", "home": os.environ.get("HOME", "")}], r
    warnings = []

    class Capture(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())
    capture, saved = Capture(), os.environ.pop("BRAZE_CLIENT_SECRET", None)
    cb.log.addHandler(capture)
    cb.log.propagate = False
    try:
        got = cb.secret_env({"braze_partner_api_key": "pk", "braze_client_secret": None}.get)
    finally:
        cb.log.removeHandler(capture)
        cb.log.propagate = True
        if saved is not None:
            os.environ["BRAZE_CLIENT_SECRET"] = saved
    assert got == {"BRAZE_PARTNER_API_KEY": "pk"}, got
    assert any("braze_client_secret" in w for w in warnings), warnings


@check("run: lots of stderr does not block the pipes")
def _():
    r = run_sh("i=0; while [ $i -lt 5000 ]; do echo \"log line $i of the run\" >&2; "
               f"i=$((i+1)); done; echo '{SYNC_OK}'")
    assert r["summaries"] and r["exit_code"] == 0


@check("run: if the task is interrupted, the CLI is terminated")
def _():
    class Interrupt(BaseException):
        pass

    class Raiser(logging.Handler):
        def emit(self, record):
            if record.getMessage() == "{}":
                raise Interrupt()
    logger = logging.getLogger("cohort_bridge.test.interrupt")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(Raiser())
    logger.raiseExceptions = True
    pidfile = TMP / "child.pid"
    started = time.monotonic()
    try:
        cb.run(["sh", "-c", f"echo $$ > {pidfile}; echo '{{}}'; exec sleep 60"],
               fail_exception=Fail, logger=logger, terminate_grace=5)
    except Interrupt:
        pass
    else:
        raise AssertionError("the interruption was swallowed")
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"cohort-bridge stand-in {pid} still runs")


@check("shard totals add up and need every shard")
def _():
    results = [{"shard": k, "partial": k == 2,
                "summaries": [{"outcome": "delivered", "members": 10 + k, "adds": 1,
                               "removes": 0, "requests": 1, "dead_letters": int(k == 2)}]}
               for k in range(4)]
    t = cb.shard_totals("big", 4, results)
    assert (t["members"], t["adds"], t["requests"], t["dead_letters"]) == (46, 4, 4, 1), t
    assert t["partial"] and t["outcomes"] == {"delivered": 4}
    expect_raises(cb.CohortBridgeError, cb.shard_totals, "big", 4, results[:3])
    expect_raises(cb.CohortBridgeError, cb.shard_totals, "big", 4, results + results[:1])


# --- with Airflow --------------------------------------------------------------------------

try:
    import airflow
except ImportError:
    airflow = None

FAKE = """#!/bin/sh
# A stand-in for cohort-bridge: records its arguments and whether the secrets arrived, prints a
# summary line and exits with the code FAKE_CODES gives the first matching argument
# (e.g. "paid_active_30d=2,1/4=5,ingest=3"; default 0).
echo "$* key=${BRAZE_PARTNER_API_KEY:-unset} secret=${BRAZE_CLIENT_SECRET:-unset}" >> "$FAKE_LOG"
code=0
for kv in $(echo "$FAKE_CODES" | tr ',' ' '); do
  case " $* " in *" ${kv%%=*} "*) code=${kv#*=};; esac
done
# The subcommand and its cohort or source, wherever the global flags put them.
cmd= prev= name=
for a in "$@"; do
  case "$prev" in sync|--source) [ -z "$name" ] && name=$a;; esac
  case "$a" in sync|ingest) [ -z "$cmd" ] && cmd=$a;; esac
  prev=$a
done
if [ "$cmd" = sync ]; then
  echo "{\\"cohort\\":\\"$name\\",\\"outcome\\":\\"delivered\\",\\"members\\":10,\\"adds\\":2,\\"removes\\":1,\\"requests\\":2,\\"dead_letters\\":0}"
else
  echo "{\\"source\\":\\"$name\\",\\"outcome\\":\\"ingested\\",\\"events_added\\":3,\\"quarantined_records\\":0,\\"broken_files\\":0}"
fi
[ "$code" = 0 ] || echo "error: fake failure $code" >&2
exit $code
"""

if airflow is not None:
    print(f"Airflow {airflow.__version__} ({sys.executable}): DagBag and dag.test checks")
    fake = TMP / "bin" / "cohort-bridge"
    fake.parent.mkdir()
    fake.write_text(FAKE)
    fake.chmod(0o755)
    os.environ["COHORT_BRIDGE_BIN"] = str(fake)  # read when the DAG files are parsed
    os.environ["COHORT_BRIDGE_PROJECT"] = "/srv/cohorts/cohort-bridge.toml"
    os.environ["FAKE_LOG"] = str(TMP / "fake.log")
    # Airflow Variables from the environment: no database needed to read them.
    os.environ["AIRFLOW_VAR_BRAZE_PARTNER_API_KEY"] = "pk-from-variable"
    os.environ["AIRFLOW_VAR_BRAZE_CLIENT_SECRET"] = "cs-from-variable"
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
    except ImportError:
        from airflow.models.dagbag import DagBag
    kwargs = {"include_examples": False} \
        if "include_examples" in inspect.signature(DagBag.__init__).parameters else {}
    bag = DagBag(dag_folder=str(DAGS), **kwargs)

    def cron(dag):
        tt = dag.timetable
        return getattr(tt, "expression", None) or getattr(tt, "_expression", None)

    @check("DagBag: no import errors, the three DAGs")
    def _():
        assert not bag.import_errors, bag.import_errors
        assert sorted(bag.dag_ids) == ["cohort_bridge_ingest", "cohort_bridge_sync",
                                       "cohort_bridge_sync_cluster"], bag.dag_ids

    @check("DagBag: the cluster DAG (every cohort in shards, paused on creation)")
    def _():
        import cohort_bridge_sync_cluster as m
        dag = bag.dags["cohort_bridge_sync_cluster"]
        assert sorted(t.task_id for t in dag.tasks) == sorted(
            f"sync_{c}.{t}" for c in m.COHORTS for t in ("shard", "total"))
        assert len(m.COHORTS) >= 2 and m.SHARDS >= 2
        assert m.ENGINE.startswith("ballista://") and cb.check_engine(m.ENGINE) == m.ENGINE
        assert cron(dag) == "5 * * * *", cron(dag)
        assert dag.catchup is False and dag.max_active_runs == 1
        # Not both sync DAGs on the same cohorts: this one starts paused.
        assert dag.is_paused_upon_creation is True
        for c in m.COHORTS:
            shard = dag.get_task(f"sync_{c}.shard")
            assert type(shard).__name__ == "DecoratedMappedOperator", type(shard)
            assert shard.op_kwargs_expand_input.value == {"shard": list(range(m.SHARDS))}
            assert shard.partial_kwargs["op_kwargs"] == {"cohort": c, "shards": m.SHARDS}
            assert dag.get_task(f"sync_{c}.total").upstream_task_ids == {f"sync_{c}.shard"}
        for t in dag.tasks:
            want = 0 if t.task_id.endswith(".total") else 3
            assert t.retries == want, (t.task_id, t.retries)
            assert t.execution_timeout == dt.timedelta(minutes=45), t.task_id

    @check("DagBag: the sync DAG (tasks, shards, schedule, retries)")
    def _():
        import cohort_bridge_sync as m
        dag = bag.dags["cohort_bridge_sync"]
        assert sorted(t.task_id for t in dag.tasks) == sorted(
            [f"sync_{c}" for c in m.COHORTS]
            + [f"sync_{c}.{t}" for c in m.SHARDED_COHORTS for t in ("shard", "total")])
        assert m.COHORTS and m.SHARDED_COHORTS and m.SHARDS >= 2
        assert cron(dag) == "5 * * * *", cron(dag)
        assert dag.catchup is False and dag.max_active_runs == 1
        for c in m.SHARDED_COHORTS:
            shard = dag.get_task(f"sync_{c}.shard")
            assert type(shard).__name__ == "DecoratedMappedOperator", type(shard)
            assert shard.op_kwargs_expand_input.value == {"shard": list(range(m.SHARDS))}
            assert shard.partial_kwargs["op_kwargs"] == {"cohort": c, "shards": m.SHARDS}
            assert dag.get_task(f"sync_{c}.total").upstream_task_ids == {f"sync_{c}.shard"}
            assert f"sync_{c}" in dag.task_group_dict
        for t in dag.tasks:
            want = 0 if t.task_id.endswith(".total") else 3
            assert t.retries == want, (t.task_id, t.retries)
            assert want == 0 or t.retry_delay == dt.timedelta(minutes=5), t.retry_delay
            assert t.execution_timeout == dt.timedelta(minutes=45), t.task_id

    @check("DagBag: the ingest DAG (interval timetable, catch-up, params)")
    def _():
        dag = bag.dags["cohort_bridge_ingest"]
        assert [t.task_id for t in dag.tasks] == ["ingest_currents"]
        assert type(dag.timetable).__name__ == "CronDataIntervalTimetable", dag.timetable
        assert cron(dag) == "0 3 * * *", cron(dag)
        assert dag.catchup is True and dag.max_active_runs == 1
        t = dag.get_task("ingest_currents")
        assert t.retries == 3 and t.execution_timeout == dt.timedelta(hours=4)
        assert t.retry_delay == dt.timedelta(minutes=15)
        assert t.max_active_tis_per_dag == 1
        assert set(dag.params.keys()) == {"from", "to"}
        assert dag.params["from"] is None and dag.params["to"] is None

    def dag_test(dag, when, run_conf=None):
        """dag.test() at a logical date, with instant retries; returns ({task: state}, calls)."""
        for t in dag.tasks:
            t.retry_delay = dt.timedelta(0)
            t.retry_exponential_backoff = False
        log = Path(os.environ["FAKE_LOG"])
        log.unlink(missing_ok=True)
        params = inspect.signature(dag.test).parameters
        date_kw = "logical_date" if "logical_date" in params else "execution_date"
        dr = dag.test(**{date_kw: when}, run_conf=run_conf)
        states = {}
        for ti in dr.get_task_instances():
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[key] = str(getattr(ti.state, "value", ti.state))
        calls = log.read_text().splitlines() if log.exists() else []
        return dr, states, calls

    db_ready = []
    if os.environ.get("COHORT_BRIDGE_AIRFLOW_DAG_TEST", "1") != "0":
        @check("airflow db migrate (sqlite, temporary)")
        def _():
            out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                                 capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            db_ready.append(True)
    else:
        print("COHORT_BRIDGE_AIRFLOW_DAG_TEST=0: dag.test checks skipped")

    if db_ready:
        import cohort_bridge_sync as sync_module
        AT = dt.datetime(2026, 11, 28, 10, 5, tzinfo=UTC)

        @check("dag.test: the sync DAG, every cohort and shard delivered")
        def _():
            os.environ["FAKE_CODES"] = ""
            dr, states, calls = dag_test(bag.dags["cohort_bridge_sync"], AT)
            assert str(getattr(dr.state, "value", dr.state)) == "success", (dr.state, states)
            assert set(states.values()) == {"success"}, states
            n = sync_module.SHARDS
            want = sorted(
                [f"--config /srv/cohorts/cohort-bridge.toml sync {c} --at {AT.isoformat()}"
                 for c in sync_module.COHORTS]
                + [f"--config /srv/cohorts/cohort-bridge.toml sync {c} --shard {k}/{n} "
                   f"--at {AT.isoformat()}" for c in sync_module.SHARDED_COHORTS
                   for k in range(n)])
            got = sorted(c.split(" key=")[0] for c in calls)
            assert got == want, (got, want)
            assert all(c.endswith("key=pk-from-variable secret=cs-from-variable")
                       for c in calls), calls

        @check("dag.test: the cluster DAG, every cohort in shards through --engine ballista://")
        def _():
            import cohort_bridge_sync_cluster as m
            os.environ["FAKE_CODES"] = ""
            dr, states, calls = dag_test(bag.dags["cohort_bridge_sync_cluster"], AT)
            assert str(getattr(dr.state, "value", dr.state)) == "success", (dr.state, states)
            assert set(states.values()) == {"success"}, states
            n = m.SHARDS
            want = sorted(
                f"--engine {m.ENGINE} --config /srv/cohorts/cohort-bridge.toml sync {c} "
                f"--shard {k}/{n} --at {AT.isoformat()}" for c in m.COHORTS for k in range(n))
            got = sorted(c.split(" key=")[0] for c in calls)
            assert got == want, (got, want)
            assert all(c.endswith("key=pk-from-variable secret=cs-from-variable")
                       for c in calls), calls

        @check("dag.test: exit 2 fails at once, exit 1 and 5 are retried")
        def _():
            paid, sessions = sync_module.COHORTS[:2]
            big = sync_module.SHARDED_COHORTS[0]
            n = sync_module.SHARDS
            os.environ["FAKE_CODES"] = f"{paid}=2,{sessions}=1,1/{n}=5"
            dr, states, calls = dag_test(bag.dags["cohort_bridge_sync"],
                                         AT + dt.timedelta(hours=1))
            assert str(getattr(dr.state, "value", dr.state)) == "failed", dr.state
            tries = {c: sum(1 for x in calls if f" sync {c} " in x) for c in (paid, sessions)}
            shard1 = sum(1 for x in calls if f"--shard 1/{n} " in x)
            assert tries == {paid: 1, sessions: 4} and shard1 == 4, (tries, shard1, calls)
            assert states[f"sync_{paid}"] == "failed"
            assert states[f"sync_{sessions}"] == "failed"
            assert states[f"sync_{big}.shard[1]"] == "failed"
            assert states[f"sync_{big}.shard[0]"] == "success"
            assert states[f"sync_{big}.total"] == "upstream_failed", states

        @check("dag.test: an old ingest interval backfills its day; exit 3 succeeds")
        def _():
            os.environ["FAKE_CODES"] = "ingest=3"
            dr, states, calls = dag_test(bag.dags["cohort_bridge_ingest"],
                                         dt.datetime(2026, 11, 20, 3, tzinfo=UTC))
            day = dr.data_interval_start.astimezone(UTC).date().isoformat()
            assert dr.data_interval_end - dr.data_interval_start == dt.timedelta(days=1)
            assert states == {"ingest_currents": "success"}, states
            assert [c.split(" key=")[0] for c in calls] == [
                "--config /srv/cohorts/cohort-bridge.toml ingest --source currents "
                f"--from {day} --to {day}"], calls

        @check("dag.test: the newest ingest interval is incremental; params give a range")
        def _():
            os.environ["FAKE_CODES"] = ""
            now = dt.datetime.now(UTC).replace(microsecond=0)
            dr, states, calls = dag_test(bag.dags["cohort_bridge_ingest"], now)
            assert now - dr.data_interval_end < dt.timedelta(days=1), dr.data_interval_end
            assert states == {"ingest_currents": "success"}, states
            assert [c.split(" key=")[0] for c in calls] == [
                "--config /srv/cohorts/cohort-bridge.toml ingest --source currents"], calls
            dr, states, calls = dag_test(bag.dags["cohort_bridge_ingest"],
                                         now - dt.timedelta(days=1),
                                         run_conf={"from": "2026-11-01", "to": "2026-11-07"})
            assert states == {"ingest_currents": "success"}, states
            assert calls[0].split(" key=")[0].endswith(
                "ingest --source currents --from 2026-11-01 --to 2026-11-07"), calls
else:
    print("Airflow is not importable with this python: the DagBag and dag.test checks did NOT "
          "run, only the Airflow-free ones (tests/airflow/run.sh installs Airflow in a venv)")

shutil.rmtree(TMP, ignore_errors=True)
finish()
