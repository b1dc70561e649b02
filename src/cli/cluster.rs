//! `cluster scheduler` and `cluster executor` (feature `ballista`): a Ballista cluster's roles
//! served by this binary, built on the Ballista scheduler and executor libraries of the version
//! the client speaks, so a cluster's nodes and its clients cannot drift apart. They read the
//! lake as stock Ballista nodes do: the non-secret `s3.*` settings travel with each query
//! (`lake::ballista`), credentials come from each node's own environment (`AWS_*`) and never
//! travel.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::object_store::{
    runtime_env_with_s3_support, session_config_with_s3_support, session_state_with_s3_support,
};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use clap::{Args, Subcommand};

use crate::error::{Error, Result, exit};

/// The stack of the runtime's threads for a cluster role: the scheduler plans deep queries on
/// them (the stock scheduler uses the same).
pub const STACK: usize = 32 * 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum ClusterRole {
    /// A Ballista scheduler: clients send it queries (`--engine ballista://HOST:PORT`),
    /// executors register with it.
    Scheduler(SchedulerArgs),
    /// A Ballista executor: registers with the scheduler and runs the tasks it is given.
    Executor(ExecutorArgs),
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// The address to listen on (`0.0.0.0` in a container).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// The port clients and executors connect to.
    #[arg(long, default_value_t = 50050)]
    port: u16,
    /// The host name this scheduler is reached by (default: localhost).
    #[arg(long)]
    external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor is taken as gone and its tasks are
    /// run elsewhere.
    #[arg(long, default_value_t = 60)]
    executor_timeout: u64,
}

#[derive(Args, Debug)]
pub struct ExecutorArgs {
    /// The scheduler to register with, HOST:PORT.
    #[arg(long)]
    scheduler: String,
    /// The address to listen on (`0.0.0.0` in a container).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// The Arrow Flight port other executors and the client fetch results from; the task gRPC
    /// port is the next one.
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// The host name the client and other executors reach this executor by (default: the
    /// address the scheduler sees it connect from).
    #[arg(long)]
    external_host: Option<String>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Where shuffle files go (default: a temporary folder).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
}

/// Runs a role until it is stopped (SIGTERM, Ctrl-C).
pub async fn run(role: ClusterRole) -> Result<i32> {
    match role {
        ClusterRole::Scheduler(a) => scheduler(a).await,
        ClusterRole::Executor(a) => executor(a).await,
    }
}

fn ballista(what: &str) -> impl Fn(ballista_core::error::BallistaError) -> Error + '_ {
    move |e| Error::Internal(format!("the Ballista {what}: {e}"))
}

fn address(flag: &str, host: &str, port: u16) -> Result<SocketAddr> {
    format!("{host}:{port}").parse().map_err(|e| {
        Error::config(
            None,
            format!("{flag} {host} with port {port}: not an IP address and port ({e})"),
        )
    })
}

async fn scheduler(a: SchedulerArgs) -> Result<i32> {
    let addr = address("--bind", &a.bind, a.port)?;
    let config = SchedulerConfig {
        bind_host: a.bind.clone(),
        bind_port: a.port,
        external_host: a.external_host.unwrap_or_else(|| "localhost".into()),
        executor_timeout_seconds: a.executor_timeout,
        expire_dead_executor_interval_seconds: a.executor_timeout.clamp(1, 15),
        no_executors_grace_period_seconds: a.executor_timeout,
        ..SchedulerConfig::default()
    }
    .with_override_config_producer(Arc::new(session_config_with_s3_support))
    .with_override_session_builder(Arc::new(session_state_with_s3_support));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista("scheduler"))?;
    tracing::info!(address = %addr, "Ballista scheduler listening");
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(ballista("scheduler"))?;
    Ok(exit::OK)
}

async fn executor(a: ExecutorArgs) -> Result<i32> {
    address("--bind", &a.bind, a.port)?;
    let (host, port) = a
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            Error::config(
                None,
                format!("--scheduler {}: write HOST:PORT", a.scheduler),
            )
        })?;
    if a.concurrency == Some(0) {
        return Err(Error::config(None, "--concurrency: at least 1"));
    }
    let grpc_port = a.port.checked_add(1).ok_or_else(|| {
        Error::config(None, "--port: the task port (PORT + 1) must be a port too")
    })?;
    let mut config = ExecutorProcessConfig {
        bind_host: a.bind.clone(),
        // Unset: the scheduler takes the address it sees the executor connect from.
        external_host: a.external_host,
        port: a.port,
        grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        // Wait for a scheduler that starts after this executor (a compose file, a pod).
        scheduler_connect_timeout_seconds: 60,
        work_dir: a.work_dir.map(|d| d.display().to_string()),
        executor_heartbeat_interval_seconds: a.heartbeat.max(1),
        print_thread_info: false,
        ..ExecutorProcessConfig::default()
    };
    if let Some(n) = a.concurrency {
        config.vcores = n;
    }
    config.override_config_producer = Some(Arc::new(session_config_with_s3_support));
    config.override_runtime_producer = Some(Arc::new(runtime_env_with_s3_support));
    tracing::info!(port = a.port, scheduler = %a.scheduler, "Ballista executor starting");
    start_executor_process(Arc::new(config))
        .await
        .map_err(ballista("executor"))?;
    Ok(exit::OK)
}
