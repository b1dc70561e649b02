//! The `cohort-bridge` command line. `main` only parses flags, sets up logging and the runtime,
//! dispatches to the command (`cohort_bridge::cli`, one file per command, the only code that
//! writes to stdout) and maps its `Result` to a documented exit code, printing the error once.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use cohort_bridge::cli;
use cohort_bridge::error::{Error, exit};

/// jemalloc (see Cargo.toml for the measurement that chose it).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--version`: the version, the commit it was built from and the optional features built in
/// (written by build.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("COHORT_BRIDGE_COMMIT"),
    ", features: ",
    env!("COHORT_BRIDGE_FEATURES"),
    ")"
);

/// Sync SQL-defined cohorts from a Parquet lake to a marketing-automation partner (Braze).
#[derive(Parser, Debug)]
#[command(name = "cohort-bridge", version, long_version = LONG_VERSION, about)]
struct Cli {
    /// The project file.
    #[arg(
        long,
        global = true,
        env = "COHORT_BRIDGE_CONFIG",
        default_value = "cohort-bridge.toml"
    )]
    config: PathBuf,
    /// Log format on stderr: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Where queries run: `local`, or `ballista://HOST:PORT` (a Ballista scheduler; builds
    /// with the `ballista` feature). Overrides the project's `engine.url`.
    #[arg(long, global = true, env = "COHORT_BRIDGE_ENGINE")]
    engine: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Deliver cohorts to their destination; one JSON summary line per cohort on stdout.
    Sync(cli::sync::SyncArgs),
    /// A cohort's state: `show` it, `unlock` a lock whose run is gone, `repair` a state file
    /// that is missing or unreadable.
    State {
        #[command(subcommand)]
        action: cli::state::StateAction,
    },
    /// Validate the project file and plan every cohort's SQL against the real tables, without
    /// running anything; lists every problem. Exit 2 if there is any.
    Check(cli::check::CheckArgs),
    /// Scaffold a project in DIR (default: here): a commented cohort-bridge.toml, example
    /// cohorts and an analysis query, a .gitignore for local state, and a small sample lake;
    /// never overwrites.
    Init(cli::init::InitArgs),
    /// Print a shell completion script, e.g. `source <(cohort-bridge completions bash)`.
    Completions(cli::completions::CompletionsArgs),
    /// Print the man page (roff), e.g. `cohort-bridge man > cohort-bridge.1`.
    Man,
    /// Partner event files (Currents Avro or NDJSON) into the lake as `partner_events`,
    /// partitioned by event_date; `--from/--to` backfills (replaces) those days.
    Ingest(cli::ingest::IngestArgs),
    /// Read-only SQL over the lake (every table, `partner_events`, `runs`), with $run_date and
    /// $run_ts bound from --at.
    Query(cli::query::QueryArgs),
    /// One self-contained HTML report of the lake: cohort sizes and changes, delivery, ingest
    /// volume, the engagement funnel and the lift against holdouts (charts, tables, CSV).
    Report(cli::report::ReportArgs),
    /// Write the emulator's Currents-style engagement export (Avro) for the first N users of a
    /// generated lake (the same --ids shape), as the partner would after a sync (for trying
    /// `ingest` and benchmarks).
    ExportEngagement(cli::export_engagement::ExportEngagementArgs),
    /// The run history (the `runs` table of the state area), newest first.
    Runs(cli::runs::RunsArgs),
    /// Write a deterministic synthetic lake (users, and events partitioned by event_date).
    Generate(cli::generate::GenerateArgs),
    /// Run a Braze-compatible partner emulator over HTTP (for demos, tests and benchmarks).
    Emulator(Box<cli::emulator::EmulatorArgs>),
    /// From a fresh clone: generate a small lake, start the emulator, sync the example cohorts
    /// and check the partner holds exactly what each cohort query returns.
    Demo,
    /// A Ballista cluster's roles from this binary (feature `ballista`): `cluster scheduler`,
    /// `cluster executor --scheduler HOST:PORT`.
    #[cfg(feature = "ballista")]
    Cluster {
        #[command(subcommand)]
        role: cli::cluster::ClusterRole,
    },
    /// The HTTP floor of a sync (benchmarks): a cohort's requests for IDS synthetic members,
    /// bodies encoded before the clock starts.
    #[command(hide = true)]
    HttpFloor { cohort: String, ids: usize },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cohort_bridge::redact::register_env();
    init_logging(cli.log_format);
    if let Some(engine) = &cli.engine {
        cohort_bridge::config::override_engine(engine.clone());
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(feature = "ballista")]
    if matches!(cli.command, Command::Cluster { .. }) {
        builder.thread_stack_size(cli::cluster::STACK);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE as u8);
        }
    };
    let code = runtime.block_on(run(cli));
    runtime.shutdown_background();
    ExitCode::from(code as u8)
}

/// Runs the command; its exit code, or the error's (printed once, scrubbed of secrets).
async fn run(cli: Cli) -> i32 {
    let config = cli.config.as_path();
    let result: Result<i32, Error> = match cli.command {
        Command::Sync(a) => cli::sync::run(config, a).await,
        Command::State { action } => cli::state::run(config, action).await,
        Command::Ingest(a) => cli::ingest::run(config, a).await,
        Command::Query(a) => cli::query::run(config, a).await,
        Command::Report(a) => cli::report::run(config, a).await,
        Command::ExportEngagement(a) => cli::export_engagement::run(config, a).await,
        #[cfg(feature = "ballista")]
        Command::Cluster { role } => cli::cluster::run(role).await,
        Command::Runs(a) => cli::runs::run(config, a).await,
        Command::Check(a) => cli::check::run(config, a).await,
        Command::Init(a) => cli::init::run(a).await,
        Command::Completions(a) => cli::completions::run(a, Cli::command()),
        Command::Man => cli::man::run(Cli::command()),
        Command::Generate(a) => cli::generate::run(a).await,
        Command::Emulator(a) => cli::emulator::run(*a).await,
        Command::Demo => cli::demo::run(config).await,
        Command::HttpFloor { cohort, ids } => {
            cli::http_floor::http_floor(config, &cohort, ids).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cohort_bridge::redact::scrub(&e.to_string()));
            e.exit_code()
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,cohort_bridge=info"));
    // Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(filter)
        .with_writer(cohort_bridge::redact::Stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
