//! A real cluster of separate processes (feature `ballista`): `cohort-bridge cluster scheduler`
//! and two `cohort-bridge cluster executor`s started as child processes of the built binary on
//! loopback. Every query in `queries/` gives the same rows through it as locally, `check` plans
//! every cohort through it, a cohort synced through it reaches the partner exactly, and an
//! executor killed mid-query leaves the user a correct result (the scheduler runs its tasks
//! again elsewhere) or a clear error — never wrong rows.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A free loopback port (and the next one, an executor's task port), as far as one can tell.
fn free_ports(n: u16) -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 60_000 && (1..=n).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The scheduler and two executors, killed when dropped.
struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    port: u16,
    _work: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let port = free_ports(0);
        let spawn = |args: &[String], log: &str| {
            Command::new(BIN)
                .args(args)
                .env("RUST_LOG", "warn,cohort_bridge=info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(work.path().join(log)).unwrap())
                .spawn()
                .expect("the binary starts")
        };
        let mut scheduler = spawn(
            &[
                "cluster".into(),
                "scheduler".into(),
                "--port".into(),
                port.to_string(),
                // An executor that stops heartbeating is taken as gone after 5 s.
                "--executor-timeout".into(),
                "5".into(),
            ],
            "scheduler.log",
        );
        wait_for_port(port, "the scheduler", &mut scheduler);
        let mut executors = Vec::new();
        for i in 0..2 {
            let flight = free_ports(1);
            let dir = work.path().join(format!("executor-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = spawn(
                &[
                    "cluster".into(),
                    "executor".into(),
                    "--scheduler".into(),
                    format!("127.0.0.1:{port}"),
                    "--port".into(),
                    flight.to_string(),
                    "--concurrency".into(),
                    "2".into(),
                    "--heartbeat".into(),
                    "1".into(),
                    "--work-dir".into(),
                    dir.display().to_string(),
                ],
                &format!("executor-{i}.log"),
            );
            wait_for_port(flight, "an executor", &mut child);
            executors.push(child);
        }
        // Registration follows the listening port by a heartbeat.
        std::thread::sleep(Duration::from_secs(2));
        Cluster {
            scheduler,
            executors,
            port,
            _work: work,
        }
    }

    fn engine(&self) -> String {
        format!("ballista://127.0.0.1:{}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_cluster_of_separate_processes_runs_every_query_plans_every_cohort_and_syncs() {
    let cluster = Cluster::start();
    let engine = cluster.engine();
    crate::ballista::every_query_on(&engine);

    // `check` plans every cohort through the cluster.
    let partner = Partner::plain();
    let project = crate::ballista::active_project(&partner);
    let check = project.run(&["--engine", &engine, "check"]);
    assert_eq!(check.code(), 0, "{}", check.stderr());
    assert!(
        check.stdout().contains("\"problems\":0"),
        "{}",
        check.stdout()
    );

    // A cohort synced through the cluster reaches the partner exactly.
    crate::ballista::sync_is_exact_on(&engine, &project, &partner);
}

/// A query heavy enough to be running when an executor dies (~1.5 s on two cores, debug): every
/// user's events joined with all their events, counted and counted distinct.
const HEAVY: &str = "SELECT count(*) AS n, count(DISTINCT concat(a.user_id, b.feature)) AS d \
    FROM events a JOIN events b ON a.user_id = b.user_id";

#[test]
fn an_executor_killed_mid_query_gives_the_right_rows_or_a_clear_error() {
    let mut cluster = Cluster::start();
    let project = Project::new("http://127.0.0.1:9", "", &[]);
    // Ballista 55's scheduler can wait forever for a stage whose executor died at the wrong
    // moment ("Can't find active stage to update stage outputs"): the client's bound turns that
    // into a clear error.
    let file = project.dir.path().join("cohort-bridge.toml");
    let toml = std::fs::read_to_string(&file).unwrap() + "\n[engine]\nquery_timeout = \"20s\"\n";
    std::fs::write(&file, toml).unwrap();
    let local = project.run(&["--engine", "local", "query", HEAVY, "--format", "csv"]);
    assert_eq!(local.code(), 0, "{}", local.stderr());
    let mut query = project
        .command(&[
            "--engine",
            &cluster.engine(),
            "query",
            HEAVY,
            "--format",
            "csv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        query.try_wait().unwrap().is_none(),
        "the query finished before the executor was killed: make HEAVY heavier"
    );
    let victim = &mut cluster.executors[1];
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    // Bounded: a query that never ends is a failure too (the scheduler takes the executor as
    // gone after 5 s without a heartbeat, then runs its tasks again).
    let started = Instant::now();
    while query.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = query.kill();
            panic!("the query neither finished nor failed within 120 s of losing an executor");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = query.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    match out.status.code() {
        Some(0) => {
            assert_eq!(
                stdout,
                local.stdout(),
                "the cluster answered after losing an executor, with other rows than the local engine"
            );
            eprintln!(
                "an executor killed mid-query: the scheduler ran its tasks again; rows equal"
            );
        }
        code => {
            assert!(
                stderr.contains("error:") && !stderr.contains("panicked"),
                "exit {code:?} without a clear error: {stderr}"
            );
            eprintln!("an executor killed mid-query: exit {code:?}, the user sees: {stderr}");
        }
    }
}
