//! `http-floor` (hidden): the HTTP floor of a sync, for the benchmarks; one JSON line on stdout.

use std::path::Path;

use chrono::Utc;

use crate::config::env_lookup;
use crate::error::{Error, Result, exit};
use crate::synth::{IdShape, user_id};

/// `http-floor` (hidden; `benches/e2e.py`, case d): the HTTP floor of a sync of `ids` members.
/// The same requests a full sync sends (the create call, then `ids` synthetic ids in
/// `batch_size` batches) through the same client, pacing and in-flight bound, with every body
/// encoded before the clock starts: no query, diff, plan or state. Prints one JSON line.
pub async fn http_floor(config_file: &Path, cohort: &str, ids: usize) -> Result<i32> {
    use crate::deliver::{plan::batches, sender::Sender};
    use crate::destinations::{self as destination, Op};
    use datafusion::arrow::array::{Array, StringArray};

    let config = crate::destinations::load_config(config_file)?;
    let cohort = config
        .cohort(cohort)
        .map_err(|e| Error::config(config.file.clone(), e))?;
    let dest = config.destination(&cohort.destination)?;
    let creds = config.credentials(&cohort.destination, &env_lookup)?;
    let destination::Delivery::Requests(braze) =
        destination::open(dest, &creds, &cohort, &config.base_dir())?
    else {
        return Err(Error::config(
            config.file.clone(),
            format!(
                "http-floor: destination `{}` sends no requests",
                cohort.destination
            ),
        ));
    };
    // UUID ids, as the realistic lake's (benches/e2e.py): the bodies are as long as a sync's.
    let members = StringArray::from_iter_values((0..ids as u64).map(|i| user_id(IdShape::Uuid, i)));
    let setup = braze.setup(Utc::now());
    let requests: Vec<_> = batches(members.len(), dest.delivery.batch_size)
        .into_iter()
        .map(|(n, range)| braze.batch("http-floor", n, &members, range, Op::Add))
        .collect();
    let count = requests.len() + usize::from(setup.is_some());
    let (tx, rx) = tokio::sync::mpsc::channel(count);
    for request in requests {
        tx.send(request)
            .await
            .map_err(|_| Error::Internal("request channel closed".into()))?;
    }
    drop(tx);
    let sender = Sender::new(
        &dest.delivery,
        braze.clone(),
        tokio::time::Instant::now() + dest.delivery.deadline,
    )?;
    // As a sync does: the cohort exists before its members are sent.
    let started = std::time::Instant::now();
    if let Some(setup) = setup {
        sender.send(&setup).await?;
    }
    sender.send_all(rx, |_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "requests": count,
            "ids": ids,
            "seconds": seconds,
            "requests_per_second": count as f64 / seconds,
        })
    );
    Ok(exit::OK)
}
