//! `generate`: a deterministic synthetic lake at a path or URL; one JSON line on stdout.

use std::path::Path;

use chrono::{NaiveDate, Utc};
use clap::Args;

use crate::error::{Error, Result, exit};
use crate::lake::Location;
use crate::synth::{IdShape, SynthSpec, generate as synth_generate};

#[derive(Args, Debug)]
pub struct GenerateArgs {
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
}

/// `generate` with its flags.
pub async fn run(a: GenerateArgs) -> Result<i32> {
    let end = a.end_date.unwrap_or_else(|| Utc::now().date_naive());
    generate(
        &a.out,
        a.users,
        a.days,
        a.seed,
        end,
        a.events_per_day,
        a.ids,
    )
    .await
}

/// `generate`: a synthetic lake at a path or URL.
pub async fn generate(
    out: &str,
    users: u64,
    days: u32,
    seed: u64,
    end_date: NaiveDate,
    events_per_day: Option<u64>,
    ids: IdShape,
) -> Result<i32> {
    let location = Location::parse(out, Path::new("."), &Default::default())?;
    let mut spec = SynthSpec::new(users, days, seed, end_date);
    spec.events_per_day = events_per_day;
    spec.ids = ids;
    let started = std::time::Instant::now();
    let report = synth_generate(location.store.clone(), &location.root, &spec)
        .await
        .map_err(Error::storage_of)?;
    let line = serde_json::json!({
        "lake": location.url.as_str(), "users": report.users, "events": report.events,
        "user_files": report.user_files, "event_files": report.event_files,
        "end_date": end_date.to_string(), "ids": ids.as_str(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{line}");
    Ok(exit::OK)
}
