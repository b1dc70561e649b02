//! Integration tests: the real binary, a real lake of Parquet files, real HTTP on loopback
//! against the in-process partner emulator. One test binary, so DataFusion is linked once.

mod support;

mod analysis;
mod check;
mod demo;
mod errors;
mod faults;
mod incremental;
mod ingest;
mod s3;
mod storage;
mod sync;
