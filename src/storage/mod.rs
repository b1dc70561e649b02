//! Storage: where things live and how objects are read and written, the same on local disk,
//! in memory and in S3, GCS or Azure (all through `object_store`). Used by the lake, state,
//! ingest and the `files` destination; imports nothing of ours but `error`.
//!
//! What callers rely on (every store gives it):
//! - **atomic visibility**: an object is written in one put, or as a multipart upload completed
//!   last, so a reader sees the old object or the new one whole, never a part ([`json`],
//!   [`ids`]). A JSON object used as a pointer (state's `current.json`) is switched this way.
//! - **create-if-absent**: of several writers creating one object, exactly one succeeds
//!   ([`objects::create_if_absent`]; state's locks are built on it).
//! - **a missing object is not a failure**: reads tell *missing* and *unreadable* (with why)
//!   from a failure of the store, which is an error ([`json::Read`], [`ids::try_read`]).
//!
//! - [`location`]: a location by URL or local path: its store, its root, its URL.
//! - [`object_file`]: a Parquet object read by ranges (streamed id lists, ingest's days).
//! - [`json`]: JSON objects, read and written whole.
//! - [`objects`]: plain objects: create if absent, delete if there, copy.
//! - [`ids`]: sorted id lists as Parquet or CSV objects, streamed in and out.

pub mod ids;
pub mod json;
pub mod location;
pub mod object_file;
pub mod objects;

pub use location::{Location, to_url};
pub use object_file::ObjectFile;
