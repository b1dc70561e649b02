//! `--engine ballista://…` (feature `ballista`): a real Ballista scheduler and executor started
//! in this process (standalone mode, on loopback ports), and every query in `queries/` run
//! through the binary on both engines over the same lake: the rows must be the same. A cohort
//! synced through Ballista reaches the partner exactly as through the local engine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ballista::prelude::SessionConfigExt;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::prelude::SessionConfig;

use crate::incremental::{ACTIVE_7D, T1, active_7d};
use crate::support::*;

/// A scheduler and one executor on loopback, alive as long as the value.
struct Cluster {
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // As the stock `ballista-scheduler` binary runs (32 MiB): the scheduler decodes a
            // query's logical plan recursively on these threads, about 81 KiB of stack per
            // plan level in an unoptimized build, and lift.sql's plan is 39 levels deep. On
            // tokio's default 2 MiB the test process aborts with a stack overflow
            // (docs/upstream/ballista-deep-plan-stack.md).
            .thread_stack_size(32 << 20)
            .enable_all()
            .build()
            .unwrap();
        let port = runtime.block_on(async {
            let addr = ballista_scheduler::standalone::new_standalone_scheduler()
                .await
                .expect("scheduler");
            let url = format!("http://localhost:{}", addr.port());
            let mut client = None;
            for _ in 0..100 {
                match SchedulerGrpcClient::connect(url.clone()).await {
                    Ok(c) => {
                        client = Some(c);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            let client = client.expect("the scheduler accepts connections");
            let parallelism = SessionConfig::new_with_ballista().ballista_standalone_parallelism();
            ballista_executor::new_standalone_executor(
                client,
                parallelism,
                BallistaCodec::default(),
            )
            .await
            .expect("executor");
            addr.port()
        });
        Cluster {
            port,
            _runtime: runtime,
        }
    }

    fn engine(&self) -> String {
        format!("ballista://localhost:{}", self.port)
    }
}

fn query_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut files = Vec::new();
    for dir in ["cohorts", "analysis"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "sql") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// CSV output with its header first and the rows sorted (engines may order rows differently).
fn rows(run: &Run, what: &str) -> Vec<String> {
    assert_eq!(run.code(), 0, "{what}: {}", run.stderr());
    let out = run.stdout();
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines[1..].sort();
    lines
}

#[test]
fn every_query_gives_the_same_rows_on_ballista_and_locally() {
    let cluster = Cluster::start();
    every_query_on(&cluster.engine());
}

/// Every query in `queries/` through `engine` and locally over one lake: the rows must be the
/// same.
pub(crate) fn every_query_on(engine: &str) {
    // A copy of the shared test lake (ingest writes into the lake, and the other tests must not see
    // these events) where cohort `active` (a 30% holdout) was synced at T1 and its campaign
    // `camp-offline` (the project file's `[campaigns.camp-offline]`) went out an hour later: the
    // emulator's engagement export for the first 3,000 users, ingested. So `cohort_changes` has
    // rows (members_as_of.sql) and lift.sql has both arms.
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 500\nrequests_per_second = 5000",
        &[("active", crate::incremental::ACTIVE_7D)],
    );
    project.own_lake_with_source();
    let file = project.dir.path().join("cohort-bridge.toml");
    let toml = std::fs::read_to_string(&file).unwrap().replace(
        "name = \"Cohort active\"\n",
        "name = \"Cohort active\"\nholdout = 0.3\n",
    ) + "\n[campaigns.camp-offline]\ncohort = \"active\"\nfeature = \"offline_mode\"\n";
    std::fs::write(&file, toml).unwrap();
    let summary = project
        .run(&["sync", "active", "--at", crate::incremental::T1])
        .summary();
    assert!(summary["held_out"].as_u64().unwrap() > 0, "{summary}");
    project.export_and_ingest(3000, "2026-11-26T13:00:00Z");
    assert!(
        !lake().join("partner_events").exists(),
        "the shared lake is untouched"
    );

    let files = query_files();
    assert!(files.len() >= 6, "queries/: {files:?}");
    for file in &files {
        let f = file.to_str().unwrap();
        let name = file.file_name().unwrap().to_string_lossy();
        // Membership history is stamped with the commit's wall-clock time.
        let at = if name == "members_as_of.sql" {
            "2100-01-01T00:00:00Z"
        } else {
            "2026-11-27T12:00:00Z"
        };
        let args = ["query", "-f", f, "--format", "csv", "--at", at];
        let local = rows(
            &project.run(&[&["--engine", "local"][..], &args].concat()),
            &name,
        );
        let remote = rows(
            &project.run(&[&["--engine", engine][..], &args].concat()),
            &name,
        );
        assert!(local.len() > 1, "{name}: the fixture gives no rows");
        assert!(
            local == remote,
            "{name}: Ballista's rows differ from the local engine's"
        );
        eprintln!("{name}: {} rows, equal on both engines", local.len() - 1);
    }
}

/// A project whose one cohort, `active`, is `ACTIVE_7D`, delivering to `partner`.
pub fn active_project(partner: &Partner) -> Project {
    Project::new(
        &partner.handle.base_url(),
        "batch_size = 500\nrequests_per_second = 5000",
        &[("active", ACTIVE_7D)],
    )
}

/// Syncs `active_project`'s cohort with its query on `engine`: the partner holds exactly its
/// members.
pub fn sync_is_exact_on(engine: &str, project: &Project, partner: &Partner) {
    let summary = project
        .run(&["--engine", engine, "sync", "active", "--at", T1])
        .summary();
    let expected = active_7d(T1);
    assert_eq!(summary["members"], expected.len() as u64);
    assert!(
        partner.members("active") == expected,
        "the partner holds a different set"
    );
}

#[test]
fn a_cohort_synced_through_ballista_reaches_the_partner_exactly() {
    let cluster = Cluster::start();
    let partner = Partner::plain();
    sync_is_exact_on(&cluster.engine(), &active_project(&partner), &partner);
}

#[test]
fn an_unreachable_scheduler_is_a_clear_error() {
    let project = Project::new("http://127.0.0.1:9", "", &[]);
    let run = project.run(&[
        "--engine",
        "ballista://127.0.0.1:9",
        "query",
        "SELECT count(*) FROM users",
    ]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(run.stderr().contains("error:"), "{}", run.stderr());
}
