//! Integration tests: the real binary, a real lake of Parquet files, real HTTP on loopback
//! against the in-process partner emulator. One test binary, so DataFusion is linked once.

mod support;

mod acks;
mod analysis;
#[cfg(feature = "ballista")]
mod ballista;
mod check;
mod cli;
mod cli_guards;
#[cfg(feature = "ballista")]
mod cluster;
mod conflicts;
mod customerio;
mod deltas;
mod demo;
mod destinations;
mod engine;
mod errors;
mod fault_schedules;
mod faults;
mod fencing;
mod files;
mod history;
mod holdout;
mod hostile;
mod identifiers;
mod incremental;
mod ingest;
mod ingest_hostile;
mod ingest_lock;
mod iterable;
mod klaviyo;
mod lift;
mod metrics;
mod packaging;
mod pipeline;
mod proxy;
mod report;
mod s3;
mod shards;
mod signals;
mod state;
mod storage;
mod sync;
mod url_secrets;
mod users_track;
mod webhook;
