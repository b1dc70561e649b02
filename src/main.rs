//! The `cohort-bridge` command line. `main` only parses flags, sets up logging and the runtime,
//! and maps a `Result` to a documented exit code, printing the error once.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use cohort_bridge::commands;
use cohort_bridge::error::{Error, exit};
use cohort_bridge::synth::IdShape;

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

/// Where a run's metrics go (OpenMetrics; see README "Metrics for schedulers").
#[derive(Args, Debug)]
struct MetricsArgs {
    /// After each cohort or source, merge its figures into this OpenMetrics file (replaced
    /// atomically; for node_exporter's textfile collector name it `*.prom`).
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// Also POST them to this Prometheus Pushgateway (e.g. http://pushgateway:9091), grouped
    /// by job `cohort_bridge` and the cohort and destination, or the source.
    #[arg(long, value_name = "URL")]
    metrics_push: Option<reqwest::Url>,
}

impl From<MetricsArgs> for cohort_bridge::metrics::MetricsOut {
    fn from(a: MetricsArgs) -> Self {
        cohort_bridge::metrics::MetricsOut {
            file: a.metrics_file,
            push: a.metrics_push,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Deliver cohorts to their destination; one JSON summary line per cohort on stdout.
    Sync {
        /// Cohort names from the project file.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        cohorts: Vec<String>,
        /// Every cohort of the project file, one after the other.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: AtArg,
        /// Never draw a progress bar (it is only drawn on a terminal anyway).
        #[arg(long)]
        no_progress: bool,
        /// Compute and print the change (members, adds, removes, requests, samples); send
        /// nothing, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Re-send every member, not only the adds (repair after loss at the partner).
        #[arg(long)]
        full: bool,
        /// Send removals even when the query returned no rows or they exceed
        /// `state.max_removal_share` of the cohort.
        #[arg(long)]
        allow_mass_removal: bool,
        /// Deliver only shard K of N (0-based): the members whose stable hash of user_id
        /// is K mod N, with their own plan, journal, lock and snapshot. Run N of these (on N
        /// machines) for the whole cohort; each uses 1/N of the destination's rate limit.
        #[arg(long, value_name = "K/N")]
        shard: Option<cohort_bridge::cohort::shard::Shard>,
        /// Requests per second for this run, overriding the destination's
        /// `requests_per_second` (and a shard's 1/N share of it).
        #[arg(long, value_name = "R")]
        requests_per_second: Option<f64>,
        /// The destination's base_url, partner or workspace key changed but it is the same
        /// workspace: keep the committed state (what it holds) and send only the change.
        #[arg(long, conflicts_with = "new_workspace")]
        rebind: bool,
        /// The destination is a new, empty workspace: send every member (the old state is kept
        /// under replaced/).
        #[arg(long)]
        new_workspace: bool,
        /// Sync at an `--at` earlier than the last committed run's: the partner is rolled back
        /// to the cohort as it was then (refused without this flag).
        #[arg(long)]
        allow_rewind: bool,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// A cohort's state: `show` it, `unlock` a lock whose run is gone, `repair` a state file
    /// that is missing or unreadable.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Validate the project file and plan every cohort's SQL against the real tables, without
    /// running anything; lists every problem. Exit 2 if there is any.
    Check {
        /// Only these cohorts (default: every cohort).
        #[arg(conflicts_with = "all")]
        cohorts: Vec<String>,
        /// Every cohort (the default; for symmetry with `sync --all`).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: AtArg,
    },
    /// Scaffold a project in DIR (default: here): a commented cohort-bridge.toml, example
    /// cohorts and an analysis query, a .gitignore for local state, and a small sample lake;
    /// never overwrites.
    Init {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Do not generate the sample lake (point [lake] url at yours).
        #[arg(long)]
        no_sample: bool,
    },
    /// Print a shell completion script, e.g. `source <(cohort-bridge completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `cohort-bridge man > cohort-bridge.1`.
    Man,
    /// Partner event files (Currents Avro or NDJSON) into the lake as `partner_events`,
    /// partitioned by event_date; `--from/--to` backfills (replaces) those days.
    Ingest {
        /// Only this source (default: every `[sources.*]`).
        #[arg(long)]
        source: Option<String>,
        /// First event_date to backfill (inclusive); needs --to.
        #[arg(long, requires = "to")]
        from: Option<NaiveDate>,
        /// Last event_date to backfill (inclusive); needs --from.
        #[arg(long, requires = "from")]
        to: Option<NaiveDate>,
        /// Make progress durable (switch the days being written, record the files done) at
        /// most every this many seconds; a run that dies resumes from there. 0: after every file.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        checkpoint_every: u64,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Read-only SQL over the lake (every table, `partner_events`, `runs`), with $run_date and
    /// $run_ts bound from --at.
    Query {
        /// The SQL (or use -f FILE).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        sql: Option<String>,
        /// A SQL file, e.g. queries/analysis/push_open_to_feature.sql.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
        /// Write to this file instead of stdout (required for parquet).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        at: AtArg,
    },
    /// One self-contained HTML report of the lake: cohort sizes and changes, delivery, ingest
    /// volume, the engagement funnel and the lift against holdouts (charts, tables, CSV).
    Report {
        /// Where to write it.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
        #[command(flatten)]
        at: AtArg,
    },
    /// Write the emulator's Currents-style engagement export (Avro) for the first N users of a
    /// generated lake (the same --ids shape), as the partner would after a sync (for trying
    /// `ingest` and benchmarks).
    ExportEngagement {
        /// Output folder or object-store URL.
        #[arg(long)]
        out: String,
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// The id shape of the lake whose users these are: uuid, numeric or sorted.
        #[arg(long, default_value_t = IdShape::Uuid)]
        ids: IdShape,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// When the campaigns go out (default: now).
        #[arg(long, value_parser = parse_at)]
        at: Option<DateTime<Utc>>,
        /// A planted effect of the push ("Try offline mode"): the share of members who use
        /// offline mode within 12 hours of the send (0 to 1). Needs --lake.
        #[arg(long, default_value_t = 0.0)]
        lift_after_send: f64,
        /// The same for members who opened the push, within 12 hours of the open.
        #[arg(long, default_value_t = 0.0)]
        lift_after_open: f64,
        /// The lake whose `events` table receives the planted feature uses
        /// (`events/event_date=*/planted-export.parquet`, replaced on each export).
        #[arg(long)]
        lake: Option<String>,
    },
    /// The run history (the `runs` table of the state area), newest first.
    Runs {
        /// Only this cohort's runs.
        #[arg(long)]
        cohort: Option<String>,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        last: usize,
        #[arg(long, value_enum, default_value_t = RunsFormat::Table)]
        format: RunsFormat,
    },
    /// Write a deterministic synthetic lake (users, and events partitioned by event_date).
    Generate {
        /// Output folder or object-store URL.
        #[arg(long)]
        out: String,
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Last day of events (UTC); default today.
        #[arg(long)]
        end_date: Option<NaiveDate>,
        /// Events per day; default users / 5.
        #[arg(long)]
        events_per_day: Option<u64>,
        /// User ids: `uuid` (UUID v4, in no order, as product lakes hold them), `numeric`
        /// (scrambled decimal strings of mixed length, in no order) or `sorted` (`u000000000`…
        /// in order: the best case).
        #[arg(long, default_value_t = IdShape::Uuid)]
        ids: IdShape,
    },
    /// Run a Braze-compatible partner emulator over HTTP (for demos, tests and benchmarks).
    Emulator(EmulatorArgs),
    /// From a fresh clone: generate a small lake, start the emulator, sync the example cohorts
    /// and check the partner holds exactly what each cohort query returns.
    Demo,
    /// The HTTP floor of a sync (benchmarks): a cohort's requests for IDS synthetic members,
    /// bodies encoded before the clock starts.
    #[command(hide = true)]
    HttpFloor { cohort: String, ids: usize },
}

#[derive(Subcommand, Debug)]
enum StateAction {
    /// The pointer, snapshot, unfinished run and journal, lock, dead letters and any problem
    /// with the command that fixes it, as JSON.
    Show {
        cohort: String,
        #[arg(long, value_name = "K/N")]
        shard: Option<cohort_bridge::cohort::shard::Shard>,
    },
    /// Release the cohort's lock if its run is gone (the lock expired); `--force` releases a
    /// live or unreadable one (only when you are sure no run is going on).
    Unlock {
        cohort: String,
        #[arg(long, value_name = "K/N")]
        shard: Option<cohort_bridge::cohort::shard::Shard>,
        #[arg(long)]
        force: bool,
    },
    /// Repair missing or unreadable state files without guessing what the partner holds (the
    /// pointer from the newest complete snapshot, a snapshot from its replica, unreadable
    /// journal or dead-letter objects); refuses when an exact repair is impossible.
    Repair {
        cohort: String,
        #[arg(long, value_name = "K/N")]
        shard: Option<cohort_bridge::cohort::shard::Shard>,
        /// Set an unfinished run aside even when some of its id lists are unreadable.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QueryFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RunsFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
struct AtArg {
    /// The run's logical time, UTC (binds $run_ts and $run_date): RFC 3339, `YYYY-MM-DD HH:MM:SS+00:00`
    /// (Airflow's `{{ data_interval_end }}`) or `YYYY-MM-DD`. Default: now.
    #[arg(long, value_parser = parse_at)]
    at: Option<DateTime<Utc>>,
}

#[derive(Args, Debug)]
pub struct EmulatorArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// 0 picks a free port (printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The `{partner}` path segment accepted.
    #[arg(long, default_value = "cohort-bridge")]
    partner: String,
    /// Environment variable holding the partner_api_key the emulator accepts.
    #[arg(long, default_value = "BRAZE_PARTNER_API_KEY")]
    partner_api_key_env: String,
    /// Environment variable holding the client_secret the emulator accepts.
    #[arg(long, default_value = "BRAZE_CLIENT_SECRET")]
    client_secret_env: String,
    /// Requests allowed per rate-limit window.
    #[arg(long, default_value_t = 250_000)]
    rate_limit: u64,
    /// The rate-limit window, e.g. 1h, 1s.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    rate_window: std::time::Duration,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 0)]
    fault_seed: u64,
    /// Probability of a 500 answered before applying a request.
    #[arg(long, default_value_t = 0.0)]
    fault_error_before: f64,
    /// Probability of a 500 answered after applying a request.
    #[arg(long, default_value_t = 0.0)]
    fault_error_after: f64,
    /// Probability of a 423 Resource locked.
    #[arg(long, default_value_t = 0.0)]
    fault_locked: f64,
    /// Probability of a slow answer.
    #[arg(long, default_value_t = 0.0)]
    fault_slow: f64,
    /// How slow a slow answer is.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    fault_slow_delay: std::time::Duration,
    /// Probability of closing the connection without an answer.
    #[arg(long, default_value_t = 0.0)]
    fault_drop: f64,
    /// Refuse (400) any request carrying a user id that contains this text, as a partner
    /// refuses ids it considers invalid.
    #[arg(long)]
    invalid_id_marker: Option<String>,
    /// Environment variable holding the workspace REST API key `/users/track` accepts (unset:
    /// `/users/track` refuses every key).
    #[arg(long, default_value = "BRAZE_REST_API_KEY")]
    rest_api_key_env: String,
    /// `/users/track`: ids containing this text have no profile, so update-only objects naming
    /// them are item-level errors.
    #[arg(long)]
    unknown_id_marker: Option<String>,
    /// Environment variable holding the secret `POST /_webhook` verifies signatures with
    /// (unset: the endpoint answers 404).
    #[arg(long, default_value = "COHORT_BRIDGE_WEBHOOK_SECRET")]
    webhook_secret_env: String,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    cohort_bridge::config::parse_duration(s)
}

fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    commands::parse_at(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cohort_bridge::redact::register_env();
    init_logging(cli.log_format);
    if let Some(engine) = &cli.engine {
        cohort_bridge::config::override_engine(engine.clone());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<i32, Error> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(Error::Internal(format!("stdout: {e}"))),
    }
}

async fn run(cli: Cli) -> i32 {
    let result: Result<i32, Error> = match cli.command {
        Command::Sync {
            cohorts,
            all: _,
            at,
            no_progress,
            dry_run,
            full,
            allow_mass_removal,
            shard,
            requests_per_second,
            rebind,
            new_workspace,
            allow_rewind,
            metrics,
        } => {
            let options = cohort_bridge::sync::SyncOptions {
                at: at.at.unwrap_or_else(chrono::Utc::now),
                progress: !no_progress,
                dry_run,
                full,
                allow_mass_removal,
                shard,
                requests_per_second,
                rebind,
                new_workspace,
                allow_rewind,
            };
            commands::sync(&cli.config, &cohorts, options, &metrics.into()).await
        }
        Command::State { action } => {
            use cohort_bridge::state::cmd;
            match action {
                StateAction::Show { cohort, shard } => cmd::show(&cli.config, &cohort, shard).await,
                StateAction::Unlock {
                    cohort,
                    shard,
                    force,
                } => cmd::unlock(&cli.config, &cohort, shard, force).await,
                StateAction::Repair {
                    cohort,
                    shard,
                    force,
                } => cmd::repair(&cli.config, &cohort, shard, force).await,
            }
        }
        Command::Ingest {
            source,
            from,
            to,
            checkpoint_every,
            metrics,
        } => {
            let options = cohort_bridge::ingest::IngestOptions {
                range: from.zip(to),
                progress: true,
                checkpoint_every: Some(std::time::Duration::from_secs(checkpoint_every)),
            };
            commands::ingest(&cli.config, source.as_deref(), options, &metrics.into()).await
        }
        Command::Query {
            sql,
            file,
            format,
            out,
            at,
        } => {
            use cohort_bridge::query::{Format, Sql};
            let format = match format {
                QueryFormat::Table => Format::Table,
                QueryFormat::Csv => Format::Csv,
                QueryFormat::Json => Format::Json,
                QueryFormat::Parquet => Format::Parquet,
            };
            let source = match (&sql, &file) {
                (Some(text), _) => Sql::Text(text),
                (None, Some(f)) => Sql::File(f),
                (None, None) => unreachable!("clap requires one"),
            };
            cohort_bridge::query::query(&cli.config, source, format, out.as_deref(), at.at).await
        }
        Command::Report { out, at } => {
            cohort_bridge::report::report(&cli.config, &out, at.at).await
        }
        Command::ExportEngagement {
            out,
            users,
            ids,
            seed,
            at,
            lift_after_send,
            lift_after_open,
            lake,
        } => {
            let lift = cohort_bridge::emulator::currents::Lift {
                after_send: lift_after_send,
                after_open: lift_after_open,
                ..Default::default()
            };
            commands::export_engagement(
                &out,
                users,
                ids,
                seed,
                at.unwrap_or_else(Utc::now),
                lift,
                lake.as_deref(),
            )
            .await
        }
        Command::Runs {
            cohort,
            last,
            format,
        } => {
            commands::runs(
                &cli.config,
                cohort.as_deref(),
                last,
                matches!(format, RunsFormat::Json),
            )
            .await
        }
        Command::Check {
            cohorts,
            all: _,
            at,
        } => commands::check(&cli.config, at.at, &cohorts).await,
        Command::Init { dir, no_sample } => cohort_bridge::init::init(&dir, !no_sample).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cohort-bridge", &mut script);
            print_all(&script)
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| Error::Internal(format!("man page: {e}")))
                .and_then(|_| print_all(&page))
        }
        Command::Generate {
            out,
            users,
            days,
            seed,
            end_date,
            events_per_day,
            ids,
        } => {
            let end = end_date.unwrap_or_else(|| Utc::now().date_naive());
            commands::generate(&out, users, days, seed, end, events_per_day, ids).await
        }
        Command::Emulator(a) => {
            let secret = |var: &str| {
                std::env::var(var).map_err(|_| {
                    Error::config(None, format!("environment variable {var} is not set (the emulator accepts the key it holds)"))
                })
            };
            match (secret(&a.partner_api_key_env), secret(&a.client_secret_env)) {
                (Ok(partner_api_key), Ok(client_secret)) => {
                    let config = cohort_bridge::emulator::EmulatorConfig {
                        partner: a.partner,
                        partner_api_key,
                        client_secret,
                        rate_limit: cohort_bridge::emulator::RateLimitConfig {
                            requests: a.rate_limit,
                            window: a.rate_window,
                        },
                        faults: cohort_bridge::emulator::FaultConfig {
                            seed: a.fault_seed,
                            error_before_apply: a.fault_error_before,
                            error_after_apply: a.fault_error_after,
                            locked: a.fault_locked,
                            slow: a.fault_slow,
                            slow_delay: a.fault_slow_delay,
                            drop_connection: a.fault_drop,
                        },
                        invalid_id_marker: a.invalid_id_marker,
                        // Unset: a key no client can send (a header value has no NUL).
                        rest_api_key: std::env::var(&a.rest_api_key_env)
                            .unwrap_or_else(|_| "\0unset".into()),
                        unknown_id_marker: a.unknown_id_marker,
                        webhook_secret: std::env::var(&a.webhook_secret_env).ok(),
                    };
                    cohort_bridge::emulator::serve_forever((a.host, a.port).into(), config)
                        .await
                        .map(|()| exit::OK)
                        .map_err(|e| Error::Internal(format!("emulator: {e}")))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Command::Demo => commands::demo(&cli.config).await,
        Command::HttpFloor { cohort, ids } => commands::http_floor(&cli.config, &cohort, ids).await,
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
