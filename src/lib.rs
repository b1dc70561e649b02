//! cohort-bridge: SQL-defined user cohorts from a Parquet lake to a marketing-automation partner
//! (Braze's public Partner Cohort Import API), and the partner's engagement events back.
//!
//! The pipeline, one module per stage:
//! `config` (project file) → `lake` (object store + DataFusion, read-only SQL) →
//! `cohort` (members) → `deliver` (rayon batching, tokio/reqwest sender) → partner.
//! `emulator` is a Braze-compatible partner over real HTTP for the demo, tests and benchmarks;
//! `synth` writes a deterministic synthetic lake.

pub mod error;
pub mod cohort;
pub mod config;
pub mod deliver;
pub mod emulator;
pub mod lake;
pub mod parallel;
pub mod progress;
pub mod sync;
pub mod synth;
pub mod check;
pub mod commands;
pub mod demo;
