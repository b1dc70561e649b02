//! Destinations: how a plan's batches become HTTP requests for one partner. One file each.

pub mod braze;
