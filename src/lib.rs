//! cohort-bridge: SQL-defined user cohorts from a Parquet lake to a marketing-automation partner
//! (Braze's public Partner Cohort Import API), and the partner's engagement events back.
//!
//! The pipeline, one module per stage:
//! `config` (project file) → `lake` (object store + DataFusion, read-only SQL) →
//! `cohort` (members) → `deliver` (rayon batching, tokio/reqwest sender) → partner.
//! `emulator` is a Braze-compatible partner over real HTTP for the demo, tests and benchmarks;
//! `synth` writes a deterministic synthetic lake.

pub mod check;
pub mod cli;
pub mod cohort;
pub mod config;
pub mod deliver;
pub mod destinations;
pub mod emulator;
pub mod error;
pub mod hash;
pub mod ingest;
pub mod init;
pub mod lake;
pub mod metrics;
pub mod parallel;
pub mod progress;
pub mod project;
pub mod query;
pub mod redact;
pub mod report;
pub mod signals;
pub mod state;
pub mod storage;
pub mod sync;
pub mod synth;
