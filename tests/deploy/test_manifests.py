"""Checks of deploy/ (docker-compose.yml, k8s/) and of the Airflow cluster DAG's command lines,
as far as a machine without a Docker daemon or a Kubernetes cluster can: `python3
tests/deploy/test_manifests.py` (needs PyYAML; tests/deploy/run.sh finds a python that has it).

- Every YAML file under deploy/ (and the release workflow) parses.
- Our image: every service or container running it is the Dockerfile's build with
  FEATURES=ballista (compose) or the `-ballista` tag the release workflow pushes (k8s); other
  images are pinned to a release.
- Every `cohort-bridge` command line (compose `command`, k8s `args`, the Airflow DAGs' argv)
  uses only subcommands and flags the binary's `--help` lists, values among its possible
  values; `--engine` / `--scheduler` name the scheduler's host and port, the project's
  endpoints the services that serve them.
- Credentials: none in the project files; they reach each node from the environment or a
  Secret that is referenced, never committed; the scheduler and executors get no partner key.
- The projects (compose's deploy/project/, the k8s ConfigMap) pass `cohort-bridge check --all`
  against a small generated lake standing in for the object store, and their cohort SQL is the
  repository's queries/cohorts/.

The binary: $COHORT_BRIDGE_TEST_BIN, else $CARGO_TARGET_DIR/debug/cohort-bridge, else
~/.cache/cohort-bridge/target/debug/cohort-bridge (CI runs this after `cargo test
--all-features`, which builds it); its `cluster` subcommands are read from their `--help`.
Prints `N passed, M failed` last; exits non-zero on any failure.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROJECT = DEPLOY / "project"
AIRFLOW = ROOT / "examples" / "airflow"
TMP = Path(tempfile.mkdtemp(prefix="cohort-bridge-deploy-test-"))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import check, finish  # noqa: E402  (tests/checks.py)


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --- the files -----------------------------------------------------------------------------

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
RELEASE = ROOT / ".github" / "workflows" / "release.yml"


@check("every YAML file parses")
def _():
    assert COMPOSE in YAML_FILES and len(YAML_FILES) >= 5, YAML_FILES
    for p in YAML_FILES + [RELEASE]:
        docs = load_all(p)
        assert docs and all(isinstance(d, dict) for d in docs), p


compose = yaml.safe_load(COMPOSE.read_text())
services = compose["services"]
k8s_docs = [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in load_all(p)]
kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
by_kind = {}
for d in k8s_docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d


def dockerfile_instructions():
    out, cur = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        t = line.strip()
        if t.startswith("#") or (not t and not cur):
            continue
        if t.endswith("\\"):
            cur += t[:-1]
        else:
            out.append((cur + t).strip())
            cur = ""
    return [i for i in out if i]


DOCKERFILE = dockerfile_instructions()
WORKDIR = [i.split()[1] for i in DOCKERFILE if i.startswith("WORKDIR ")][-1]
ENTRYPOINT = [i for i in DOCKERFILE if i.startswith("ENTRYPOINT ")][-1]


def pod_spec(d):
    spec = d.get("spec", {})
    if d["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"] if "template" in spec else None


def all_containers():
    for d in k8s_docs:
        pod = pod_spec(d)
        if pod is None:
            continue
        for key in ("initContainers", "containers"):
            for c in pod.get(key, []):
                yield f"{d['kind']}/{d['metadata']['name']}/{c['name']}", c


# --- images --------------------------------------------------------------------------------

OUR_COMPOSE_IMAGE = "cohort-bridge:ballista"


def ours(service):
    return service.get("image") == OUR_COMPOSE_IMAGE


@check("Dockerfile: a FEATURES build argument reaching cargo build, default empty")
def _():
    assert 'ARG FEATURES=""' in DOCKERFILE, DOCKERFILE
    build = [i for i in DOCKERFILE if i.startswith("RUN cargo build --release --locked")]
    assert len(build) == 1 and '${FEATURES:+--features "$FEATURES"}' in build[0], build
    assert ENTRYPOINT == 'ENTRYPOINT ["/usr/local/bin/cohort-bridge"]', ENTRYPOINT


@check("compose: our image is the Dockerfile's build with FEATURES=ballista")
def _():
    mine = [n for n, s in services.items() if ours(s)]
    assert {"scheduler", "executor-1", "executor-2", "check", "sync", "seed", "emulator"} \
        <= set(mine), mine
    for name in mine:
        s = services[name]
        b = s.get("build")
        assert b, f"{name}: no build section"
        ctx = (COMPOSE.parent / b["context"]).resolve()
        assert ctx == ROOT and (ctx / b.get("dockerfile", "Dockerfile")).is_file(), (name, b)
        assert b.get("args", {}).get("FEATURES") == "ballista", (name, b)
        assert "entrypoint" not in s, f"{name}: our image's entrypoint is cohort-bridge"
    others = [s["image"] for s in services.values() if not ours(s)]
    assert others, services
    for image in others:  # pinned to a release, not a moving tag
        assert ":" in image and not image.endswith(":latest"), image
        assert "RELEASE." in image, image


@check("k8s: the image is the release workflow's -ballista push, resolved by kustomize")
def _():
    (img,) = kustomization["images"]
    assert img["name"] == "cohort-bridge", img
    assert re.fullmatch(r"ghcr\.io/[a-z0-9._-]+/cohort-bridge", img["newName"]), img
    assert img["newTag"].endswith("-ballista"), img
    wf = RELEASE.read_text()
    pushes = re.findall(r"(?m)ghcr\.io/\$\{\{ github\.repository \}\}:(.+)$", wf)
    assert "latest-ballista" in pushes and "${{ github.ref_name }}-ballista" in pushes, pushes
    assert img["newTag"] == "latest-ballista" or re.fullmatch(r"v\d+\.\d+\.\d+-ballista",
                                                              img["newTag"]), img
    steps = yaml.safe_load(wf)["jobs"]["image"]["steps"]
    ballista = [s for s in steps if "-ballista" in str(s.get("with", {}).get("tags", ""))]
    assert len(ballista) == 1 and "FEATURES=ballista" in ballista[0]["with"]["build-args"], \
        ballista
    assert "ghcr.io/<owner>/cohort-bridge" in (ROOT / "README.md").read_text()
    containers = list(all_containers())
    assert len(containers) >= 4, containers
    for where, c in containers:
        assert c["image"] == "cohort-bridge", (where, c["image"])
        assert c.get("command") in (None, ["/usr/local/bin/cohort-bridge"]), where


if shutil.which("kubectl"):
    @check("kubectl kustomize deploy/k8s renders, every image resolved")
    def _():
        out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        images = set(re.findall(r"(?m)^\s+image: (\S+)$", out.stdout))
        (img,) = kustomization["images"]
        assert images == {f"{img['newName']}:{img['newTag']}"}, images
else:
    print("kubectl not found: `kubectl kustomize deploy/k8s` NOT run")


# --- the CLI -------------------------------------------------------------------------------


def find_binary():
    for cand in [os.environ.get("COHORT_BRIDGE_TEST_BIN"),
                 os.environ.get("CARGO_TARGET_DIR") and
                 str(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "cohort-bridge"),
                 str(Path.home() / ".cache" / "cohort-bridge" / "target" / "debug" /
                     "cohort-bridge")]:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


BIN = find_binary()
_HELP = {}


def help_of(path):
    """{commands: {name}, flags: {--flag: (takes a value, possible values or None)},
    positionals: bool} from `cohort-bridge PATH... --help`."""
    key = tuple(path)
    if key in _HELP:
        return _HELP[key]
    out = subprocess.run([BIN, *path, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (path, out.stderr)
    spec = parse_help(out.stdout)
    _HELP[key] = spec
    return spec


def parse_help(text):
    section, commands, flags, positionals = None, set(), {}, False
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z ]*:$", line):
            section = line[:-1]
            continue
        if section == "Commands":
            m = re.match(r"^  (\S+)", line)
            if m and m.group(1) != "help":
                commands.add(m.group(1))
        elif section == "Arguments":
            positionals = positionals or bool(re.match(r"^  \S", line))
        elif section == "Options":
            m = re.match(r"^\s+(?:(-\w), )?(--[a-z0-9-]+)(?: <[^>]+>| \[<[^>]+>\])?", line)
            if m:
                takes = "<" in m.group(0)
                possible = re.search(r"\[possible values: ([^\]]+)\]", line)
                values = [v.strip() for v in possible.group(1).split(",")] if possible else None
                flags[m.group(2)] = (takes, values)
                if m.group(1):
                    flags[m.group(1)] = (takes, values)
    return {"commands": commands, "flags": flags, "positionals": positionals}


ENGINE_RE = re.compile(r"local|ballista://[A-Za-z0-9.-]+:\d{1,5}")


def check_argv(argv, where):
    """Raises AssertionError naming `where` for any subcommand, flag or value the CLI does
    not define; returns [(subcommand path), {flag: value}]."""
    path, spec, seen, i, argv = [], help_of([]), {}, 0, list(argv)
    while i < len(argv):
        t = argv[i]
        if t.startswith("-") and t != "-":
            name, eq, value = t.partition("=")
            assert name in spec["flags"], \
                f"{where}: `{name}` is not a flag of `cohort-bridge {' '.join(path)}`: {argv}"
            takes, possible = spec["flags"][name]
            if takes and not eq:
                assert i + 1 < len(argv), f"{where}: `{name}` needs a value: {argv}"
                i += 1
                value = argv[i]
            if possible:
                assert value in possible, f"{where}: {name} {value!r} not in {possible}"
            if name == "--engine":
                assert ENGINE_RE.fullmatch(value), f"{where}: --engine {value!r}"
            seen[name] = value if takes else True
        elif spec["commands"]:
            assert t in spec["commands"], \
                f"{where}: `{t}` is not a subcommand of `cohort-bridge {' '.join(path)}` " \
                f"({sorted(spec['commands'])}): {argv}"
            path.append(t)
            spec = help_of(path)
        else:
            assert spec["positionals"], f"{where}: `{t}`: `{' '.join(path)}` takes no " \
                f"argument: {argv}"
        i += 1
    assert path and not spec["commands"], f"{where}: no (complete) subcommand: {argv}"
    return path, seen


def compose_argv(service):
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(x) for x in cmd]


def cli_lines():
    """(where, argv without the binary) of every cohort-bridge command line we ship."""
    for name, s in services.items():
        if ours(s):
            yield f"compose:{name}", compose_argv(s)
    for where, c in all_containers():
        yield f"k8s:{where}", [str(a) for a in c["args"]]
    sys.path.insert(0, str(AIRFLOW))
    import cohort_bridge_runner as cb
    at = "2026-11-28T10:05:00+00:00"
    kw = {"binary": "cohort-bridge", "project": "/srv/cohorts/cohort-bridge.toml"}
    yield "airflow:sync", cb.sync_argv("c", at, **kw)[1:]
    yield "airflow:sync shard", cb.sync_argv("c", at, shard=(1, 4), **kw)[1:]
    yield "airflow:ingest", cb.ingest_argv("currents", **kw)[1:]
    engine = dag_constant(AIRFLOW / "cohort_bridge_sync_cluster.py", "ENGINE")
    yield "airflow:cluster shard", cb.sync_argv("c", at, shard=(1, 4), engine=engine, **kw)[1:]


def dag_constant(path, name):
    """A module-level string constant of a DAG file (read without importing Airflow), also
    when wrapped in a call such as cb.check_engine("...")."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            v = node.value
            while isinstance(v, ast.Call):
                v = v.args[0]
            return ast.literal_eval(v)
    raise AssertionError(f"{path.name}: no {name}")


if BIN:
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    help_of([])
    print(f"binary: {BIN} ({version})")

    @check("the binary is built with the ballista feature, like the image")
    def _():
        assert "ballista" in version, version

    @check("every cohort-bridge command line uses only subcommands and flags the CLI defines")
    def _():
        lines = list(cli_lines())
        assert len(lines) >= 14, lines
        for where, argv in lines:
            check_argv(argv, where)

    @check("the command check refuses unknown subcommands, flags and values (self-test)")
    def _():
        good = ["--engine", "ballista://scheduler:50050", "sync", "--all"]
        check_argv(good, "self-test")
        check_argv(["cluster", "executor", "--scheduler", "s:1", "--port", "2"], "self-test")
        for bad in [["snyc", "--all"], ["sync", "--alll"], ["--log-format", "xml", "sync"],
                    ["--engine", "ballista://nowhere", "sync"], ["cluster"],
                    ["cluster", "executor", "--schedular", "s:1"],
                    ["cluster", "scheduler", "--port"], ["runs", "extra"]]:
            try:
                check_argv(bad, "self-test")
            except AssertionError:
                continue
            raise AssertionError(f"accepted {bad}")
else:
    @check("the binary exists (cargo build --all-features, or set COHORT_BRIDGE_TEST_BIN)")
    def _():
        raise AssertionError("no cohort-bridge binary: the command lines were NOT checked")


# --- how the pieces reach each other ---------------------------------------------------------


def flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


@check("compose: the engine, the executors, the lake and the partner point at their services")
def _():
    sched = compose_argv(services["scheduler"])
    assert sched[:2] == ["cluster", "scheduler"], sched
    sched_at = f"scheduler:{flag(sched, '--port')}"
    execs = [n for n, s in services.items() if ours(s) and compose_argv(s)[:2] ==
             ["cluster", "executor"]]
    assert len(execs) == 2, execs
    for n in execs:
        assert flag(compose_argv(services[n]), "--scheduler") == sched_at, (n, sched_at)
        assert flag(compose_argv(services[n]), "--bind") == "0.0.0.0", n
    for n in ("check", "sync"):
        argv = compose_argv(services[n])
        assert flag(argv, "--engine") == f"ballista://{sched_at}", (n, argv, sched_at)
        assert services[n]["working_dir"] == WORKDIR, n
        assert services[n]["volumes"] == [f"./project:{WORKDIR}:ro"], n
    assert compose_argv(services["check"])[-2:] == ["check", "--all"], services["check"]
    assert compose_argv(services["sync"])[-2:] == ["sync", "--all"], services["sync"]
    dep = lambda a, b: services[a]["depends_on"][b]["condition"]  # noqa: E731
    assert dep("sync", "check") == "service_completed_successfully"
    assert dep("check", "seed") == "service_completed_successfully"
    assert dep("seed", "bucket") == "service_completed_successfully"
    for n, s in services.items():
        for d in s.get("depends_on", {}):
            assert d in services, (n, d)
    project = tomllib.loads((PROJECT / "cohort-bridge.toml").read_text())
    lake = project["lake"]["url"]
    bucket = re.search(r"mc mb --ignore-existing lake/(\S+)",
                       services["bucket"]["entrypoint"][-1]).group(1)
    assert lake.startswith(f"s3://{bucket}/"), (lake, bucket)
    assert flag(compose_argv(services["seed"]), "--out") == lake
    assert services["seed"]["environment"]["AWS_ENDPOINT"] == \
        project["lake"]["options"]["aws_endpoint"] == "http://minio:9000"
    assert "server" in services["minio"]["command"]
    emu = compose_argv(services["emulator"])
    assert project["destinations"]["braze"]["base_url"] == \
        f"http://emulator:{flag(emu, '--port')}", emu
    assert flag(emu, "--host") == "0.0.0.0"


@check("k8s: selectors, the Service, ports, the engine URL and the executors' scheduler agree")
def _():
    for kind in ("Deployment",):
        for name, d in by_kind[kind].items():
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert sel.items() <= labels.items(), name
    sched = by_kind["Deployment"]["cohort-bridge-scheduler"]
    svc = by_kind["Service"]["cohort-bridge-scheduler"]
    assert svc["spec"]["selector"].items() <= \
        sched["spec"]["template"]["metadata"]["labels"].items()
    (c,) = sched["spec"]["template"]["spec"]["containers"]
    port = flag(c["args"], "--port")
    assert c["args"][:2] == ["cluster", "scheduler"] and flag(c["args"], "--bind") == "0.0.0.0"
    assert [p["containerPort"] for p in c["ports"]] == [int(port)]
    (sp,) = svc["spec"]["ports"]
    assert sp["port"] == int(port), sp
    assert sched["spec"]["replicas"] == 1
    at = f"cohort-bridge-scheduler:{port}"
    ex = by_kind["Deployment"]["cohort-bridge-executor"]
    assert ex["spec"]["replicas"] == 2
    (e,) = ex["spec"]["template"]["spec"]["containers"]
    assert e["args"][:2] == ["cluster", "executor"], e["args"]
    assert flag(e["args"], "--scheduler") == at, (e["args"], at)
    flight = int(flag(e["args"], "--port"))
    assert sorted(p["containerPort"] for p in e["ports"]) == [flight, flight + 1]
    work = flag(e["args"], "--work-dir")
    assert any(m["mountPath"] == work for m in e["volumeMounts"]), work
    for d in k8s_docs:  # USER in the Dockerfile is a name; runAsNonRoot needs a number
        if pod_spec(d) is not None:
            sc = pod_spec(d)["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, d["metadata"]
    assert "USER nonroot" in DOCKERFILE
    cron = by_kind["CronJob"]["cohort-bridge-sync"]
    assert len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cron)
    assert pod["restartPolicy"] == "Never"
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    for c in (init, main):
        assert flag(c["args"], "--engine") == f"ballista://{at}", (c["args"], at)
    assert init["args"][-2:] == ["check", "--all"], init["args"]
    assert main["args"][-2:] == ["sync", "--all"], main["args"]
    rules = cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 4]}} in rules
    for res in kustomization["resources"]:
        assert (K8S / res).is_file(), res
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


# --- credentials ---------------------------------------------------------------------------

SECRET_WORDS = ("secret", "password", "token", "access_key", "key_id", "session")


def projects():
    """(where, parsed project, {relative path: SQL text}) of both deploy projects."""
    text = (PROJECT / "cohort-bridge.toml").read_text()
    sql = {str(p.relative_to(PROJECT)): p.read_text() for p in PROJECT.rglob("*.sql")}
    yield "deploy/project", text, sql
    cm = by_kind["ConfigMap"]["cohort-bridge-project"]["data"]
    pod = pod_spec(by_kind["CronJob"]["cohort-bridge-sync"])
    (vol,) = [v for v in pod["volumes"] if "configMap" in v]
    assert vol["configMap"]["name"] == "cohort-bridge-project"
    items = {i["key"]: i["path"] for i in vol["configMap"]["items"]}
    assert set(items) == set(cm), (items, list(cm))
    assert items["cohort-bridge.toml"] == "cohort-bridge.toml"
    for c in pod["containers"] + pod["initContainers"]:
        assert {"name": vol["name"], "mountPath": WORKDIR, "readOnly": True} \
            in c["volumeMounts"], c["name"]
    yield "k8s ConfigMap", cm["cohort-bridge.toml"], \
        {items[k]: v for k, v in cm.items() if k.endswith(".sql")}


@check("the projects: no credential; cohort SQL present and equal to queries/cohorts/")
def _():
    for where, text, sql in projects():
        p = tomllib.loads(text)
        for k in p["lake"].get("options", {}):
            assert not any(w in k.lower() for w in SECRET_WORDS), (where, k)
        for name, d in p["destinations"].items():
            for k, v in d.items():
                if any(w in k for w in ("key", "secret")):
                    assert k.endswith("_env") and re.fullmatch(r"[A-Z][A-Z0-9_]*", v), \
                        (where, name, k)
        assert len(p["cohorts"]) >= 2, where
        for name, c in p["cohorts"].items():
            path = c.get("sql", f"queries/cohorts/{name}.sql")
            assert path in sql, (where, name, path, list(sql))
            repo = ROOT / "queries" / "cohorts" / Path(path).name
            assert sql[path] == repo.read_text(), f"{where}: {path} differs from {repo}"


@check("credentials reach the nodes from the environment or referenced Secrets only")
def _():
    for n, s in services.items():
        env = s.get("environment", {})
        for k, v in env.items():
            if any(w in k.lower() for w in ("secret", "password", "key_id", "api_key")):
                assert re.fullmatch(r"\$\{[A-Z_]+(:-[^}]*)?\}", str(v)), (n, k, v)
        argv = compose_argv(s) if ours(s) else []
        if argv[:1] == ["cluster"]:  # the cluster reads the lake; it never sees partner keys
            assert "AWS_ACCESS_KEY_ID" in env and not any(k.startswith("BRAZE_") for k in env), n
    assert "AWS_ACCESS_KEY_ID" in services["sync"]["environment"]
    assert "BRAZE_PARTNER_API_KEY" in services["sync"]["environment"]
    assert "Secret" not in by_kind, "a Secret is committed in deploy/k8s"
    for p in [COMPOSE, *K8S.glob("*.yaml")]:
        assert not re.search(r"(?i)^\s*(data|stringData):\s*$\n\s+AWS_", p.read_text(), re.M), p
    refs = set()
    for where, c in all_containers():
        names = {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
        keys = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})}
        assert "cohort-bridge-lake" in names, where
        if "cluster" in c["args"]:
            assert not keys, f"{where}: the cluster gets no partner key"
        refs |= names | keys
    assert refs == {"cohort-bridge-lake", "cohort-bridge-partner"}, refs
    doc = (K8S / "kustomization.yaml").read_text()
    for r in refs:
        assert f"kubectl create secret generic {r}" in doc, r


# --- the projects run ----------------------------------------------------------------------


def local_copy(where, text, sql, lake):
    """The project with its lake replaced by a local folder."""
    out = TMP / re.sub(r"\W+", "-", where)
    out.mkdir()
    text, n = re.subn(r'(?m)^url = "s3://[^"]*"$', f'url = "{lake}"', text, count=1)
    assert n == 1, where
    text = re.sub(r"(?m)^options = \{[^}]*\}\n", "", text, count=1)
    (out / "cohort-bridge.toml").write_text(text)
    for path, body in sql.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(body)
    return out


if BIN:
    @check("both projects pass `cohort-bridge check --all` over a generated lake")
    def _():
        lake = TMP / "lake"
        out = subprocess.run([BIN, "generate", "--out", str(lake), "--users", "2000", "--days",
                              "20"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        for where, text, sql in projects():
            proj = local_copy(where, text, sql, lake)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("AWS_", "BRAZE_", "COHORT_BRIDGE_"))}
            out = subprocess.run([BIN, "--engine", "local", "--config",
                                  str(proj / "cohort-bridge.toml"), "check", "--all"],
                                 capture_output=True, text=True, timeout=300, env=env)
            assert out.returncode == 0, (where, out.stdout[-2000:], out.stderr[-3000:])


shutil.rmtree(TMP, ignore_errors=True)
finish()
