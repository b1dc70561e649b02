//! Destinations: everything partner-specific about delivering a plan, one folder per kind, and
//! **the registry** — [`REGISTRY`], the one table where kinds are listed (name, keys, batch
//! limits, default rate, the config parser, the opener, the identity). Nothing else in the code
//! names a kind: the configuration reads a kind's section through its row (`config::KindSpec`),
//! the sync core and the sender hold what [`open`] makes.
//!
//! The contract a kind implements:
//! - its config type (`<kind>/config.rs`): its keys, their checks and its credentials from the
//!   environment, as [`config::KindConfig`];
//! - either [`Destination`] (a request per batch, through the sender: the request encoding,
//!   the headers, what an answer means — see `deliver::requests`) or [`Lists`] (the plan's lists
//!   whole, e.g. files);
//! - its identity: the workspace it writes to, recorded with every snapshot.
//!
//! Adding a kind: a folder here (copy the closest one), one row in [`REGISTRY`]; the emulator
//! gets the partner's side in a module of its own (see `docs/architecture.md`).

pub mod braze_cohorts;
pub mod braze_users_track;
pub mod customerio;
pub mod files;
pub mod iterable;
pub mod json;
pub mod klaviyo;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use futures::future::BoxFuture;

use crate::config::{self, Cohort, Config, Credentials, DestinationConfig, KindSpec, Kinds};
use crate::error::Result;

pub use crate::deliver::requests::{Destination, Op, Refused};
pub use json::{body_for, push_identities, push_identity, push_ids, push_json_str};

/// A kind: how the configuration reads it, how a destination of it is opened, and which
/// workspace it names.
pub struct Kind {
    pub spec: KindSpec,
    /// The destination a cohort is delivered to, with its keys (`base` anchors relative paths).
    pub open: fn(&DestinationConfig, &Credentials, &Cohort, &Path) -> Result<Delivery>,
    /// The workspace written to, from its section and the fingerprint of its workspace key
    /// (see [`identity`]).
    pub identity: fn(&DestinationConfig, &str) -> String,
}

/// The kinds this build knows, in the order messages list them.
pub struct Registry(&'static [Kind]);

/// **The registry**: every destination kind, one row each — the only place kinds are listed.
pub static REGISTRY: Registry = Registry(&[
    Kind {
        spec: KindSpec {
            name: "braze",
            keys: braze_cohorts::Config::KEYS,
            hints: &[],
            max_batch: braze_cohorts::MAX_BATCH,
            default_batch: braze_cohorts::MAX_BATCH,
            default_rps: braze_cohorts::DEFAULT_RPS,
            parse: config::parse_as::<braze_cohorts::Config>,
        },
        open: requests::<braze_cohorts::Braze>,
        identity: braze_cohorts::identity,
    },
    Kind {
        spec: KindSpec {
            name: "braze_users_track",
            keys: braze_users_track::Config::KEYS,
            hints: &[],
            max_batch: braze_users_track::MAX_OBJECTS,
            default_batch: braze_users_track::MAX_OBJECTS,
            default_rps: braze_users_track::DEFAULT_RPS,
            parse: config::parse_as::<braze_users_track::Config>,
        },
        open: requests::<braze_users_track::UsersTrack>,
        identity: braze_users_track::identity,
    },
    Kind {
        spec: KindSpec {
            name: "klaviyo",
            keys: klaviyo::Config::KEYS,
            hints: &[("list_id", "the list is the cohort's `cohort_id`")],
            max_batch: klaviyo::MAX_BATCH,
            default_batch: klaviyo::DEFAULT_BATCH,
            default_rps: klaviyo::DEFAULT_RPS,
            parse: config::parse_as::<klaviyo::Config>,
        },
        open: requests::<klaviyo::Klaviyo>,
        identity: klaviyo::identity,
    },
    Kind {
        spec: KindSpec {
            name: "customerio",
            keys: customerio::Config::KEYS,
            hints: &[],
            max_batch: customerio::MAX_BATCH,
            default_batch: customerio::MAX_BATCH,
            default_rps: customerio::DEFAULT_RPS,
            parse: config::parse_as::<customerio::Config>,
        },
        open: requests::<customerio::Customerio>,
        identity: customerio::identity,
    },
    Kind {
        spec: KindSpec {
            name: "webhook",
            keys: webhook::Config::KEYS,
            hints: &[],
            max_batch: webhook::MAX_BATCH,
            default_batch: webhook::DEFAULT_BATCH,
            default_rps: *config::RATE_RANGE.end(),
            parse: config::parse_as::<webhook::Config>,
        },
        open: requests::<webhook::Webhook>,
        identity: webhook::identity,
    },
    Kind {
        spec: KindSpec {
            name: "iterable",
            keys: iterable::Config::KEYS,
            hints: &[],
            max_batch: iterable::MAX_BATCH,
            default_batch: iterable::DEFAULT_BATCH,
            default_rps: iterable::DEFAULT_RPS,
            parse: config::parse_as::<iterable::Config>,
        },
        open: requests::<iterable::Iterable>,
        identity: iterable::identity,
    },
    Kind {
        spec: KindSpec {
            name: "files",
            keys: files::Config::KEYS,
            hints: &[("base_url", "use `url`")],
            max_batch: files::MAX_BATCH,
            default_batch: files::MAX_BATCH,
            default_rps: *config::RATE_RANGE.end(),
            parse: config::parse_as::<files::Config>,
        },
        open: files::open,
        identity: files::identity,
    },
]);

impl Registry {
    /// The row of `name`.
    pub fn kind(&self, name: &str) -> Option<&'static Kind> {
        self.0.iter().find(|k| k.spec.name == name)
    }

    /// The row a parsed section was read by.
    fn of(&self, dest: &DestinationConfig) -> &'static Kind {
        self.kind(dest.kind_name())
            .expect("a section is parsed by a row of this registry")
    }
}

impl Kinds for Registry {
    fn find(&self, name: &str) -> Option<&'static KindSpec> {
        self.kind(name).map(|k| &k.spec)
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|k| k.spec.name).collect()
    }
}

/// A plan's lists for a [`Lists`] destination.
pub struct ListsOf {
    pub adds: Arc<StringArray>,
    pub removes: Arc<StringArray>,
    /// The whole membership once the plan is delivered, when [`Lists::wants_members`] (of
    /// the shard only, under `--shard`).
    pub members: Option<Arc<StringArray>>,
    /// `K/N` under `--shard K/N`: the lists (members included) are that shard's only.
    pub shard: Option<String>,
}

/// A destination that takes each plan's lists whole rather than as requests (files). The sync
/// core hands it the plan's adds and removes once, and again when it resumes the plan: `write`
/// must be idempotent for a run id.
pub trait Lists: Send + Sync {
    fn write<'a>(
        &'a self,
        run_id: &'a str,
        at: DateTime<Utc>,
        lists: ListsOf,
    ) -> BoxFuture<'a, Result<()>>;

    /// Whether `write` takes the whole membership too.
    fn wants_members(&self) -> bool {
        false
    }

    /// As [`Destination::accepts`].
    fn accepts(&self, _ids: &StringArray) -> Result<()> {
        Ok(())
    }
}

/// How a destination takes a plan.
pub enum Delivery {
    /// A request per batch, through the sender (its pacing, retries and journal).
    Requests(Arc<dyn Destination>),
    /// The plan's lists, whole.
    Lists(Arc<dyn Lists>),
}

/// A kind that takes requests, made from its section's own settings and its keys: the registry
/// opens every such kind with [`requests`].
pub trait FromSettings: Destination + Sized + 'static {
    /// The kind's own config type (`<kind>/config.rs`).
    type Settings: 'static;

    fn new(settings: &Self::Settings, credentials: &Credentials, cohort: &Cohort) -> Result<Self>;
}

/// The registry's opener of a kind that takes requests.
pub fn requests<D: FromSettings>(
    dest: &DestinationConfig,
    credentials: &Credentials,
    cohort: &Cohort,
    _base: &Path,
) -> Result<Delivery> {
    Ok(Delivery::Requests(Arc::new(D::new(
        own(dest),
        credentials,
        cohort,
    )?)))
}

/// The error of a destination refusing, before anything is planned, a member of a kind its
/// partner's contract does not take: names the kind, the member and what the destination
/// takes (`takes`).
pub fn refused_kind(destination: &str, what: &str, key: &str, takes: &str) -> crate::error::Error {
    use crate::cohort::identity::{Id, parse};
    let (kind, value) = match parse(key) {
        Id::External(v) => ("user_id", v),
        Id::Alias { name, .. } => ("alias", name),
        Id::Device(v) => ("device_id", v),
        Id::Braze(v) => ("braze_id", v),
        Id::Email(v) => ("email", v),
        Id::Phone(v) => ("phone", v),
        Id::Malformed(k) => ("malformed key", k),
    };
    crate::error::Error::config(
        None,
        format!(
            "destination `{destination}` ({what}) cannot identify users by {kind}, and the \
             cohort has members known only by one (e.g. `{}`): select their {takes} first in \
             the cohort's `identifiers`, or send the cohort to a destination that takes {kind}",
            value.escape_debug()
        ),
    )
}

/// A cohort for the kinds' unit tests: `c` (its SQL `c.sql`), delivered to `destination` as
/// `cohort_id` named `display_name`, the default identifiers, no holdout.
#[cfg(test)]
pub(crate) fn test_cohort(destination: &str, cohort_id: &str, display_name: &str) -> Cohort {
    Cohort {
        name: "c".into(),
        sql_file: "c.sql".into(),
        destination: destination.into(),
        cohort_id: cohort_id.into(),
        display_name: display_name.into(),
        holdout: crate::config::HoldoutShare {
            share: 0.0,
            salt: cohort_id.into(),
        },
        identifiers: crate::cohort::identity::DEFAULT_PRIORITY.to_vec(),
    }
}

/// `e` with `hint` after the partner's message when it is a refusal with one of `statuses` (a
/// refused key: 401, 403): what the user can do about it (`Destination::explain`).
pub fn explained(
    e: crate::error::Error,
    statuses: &[u16],
    hint: impl FnOnce() -> String,
) -> crate::error::Error {
    match e {
        crate::error::Error::PartnerRejected {
            what,
            status,
            message,
        } if statuses.contains(&status) => crate::error::Error::PartnerRejected {
            what,
            status,
            message: format!("{message} ({})", hint()),
        },
        other => other,
    }
}

/// A section's own settings, as the kind whose row read it knows them.
pub fn own<T: 'static>(dest: &DestinationConfig) -> &T {
    dest.settings::<T>()
        .expect("a section is read by its own kind's row")
}

/// The destination a cohort is delivered to, with its keys (`base` anchors relative paths).
pub fn open(
    dest: &DestinationConfig,
    credentials: &Credentials,
    cohort: &Cohort,
    base: &Path,
) -> Result<Delivery> {
    (REGISTRY.of(dest).open)(dest, credentials, cohort, base)
}

/// Names the partner workspace a destination writes to: when it changes between runs, a sync
/// refuses until told whether it is the same workspace (`--rebind`) or a new one
/// (`--new-workspace`). The endpoint and a short fingerprint of the workspace's key.
pub fn identity(dest: &DestinationConfig, credentials: &Credentials) -> String {
    let key = credentials
        .workspace_key()
        .map(|k| fingerprint(k.expose()))
        .unwrap_or_default();
    (REGISTRY.of(dest).identity)(dest, &key)
}

/// A destination's endpoint without its trailing `/` (identities are built on it).
pub fn base_of(dest: &DestinationConfig) -> &str {
    dest.kind
        .base_url()
        .unwrap_or_default()
        .trim_end_matches('/')
}

/// A 32-bit fingerprint of a workspace key: enough to tell workspaces apart, far too little to
/// recover anything. FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
pub fn fingerprint(key: &str) -> String {
    format!("{:08x}", crate::hash::fnv1a64(key.as_bytes()) >> 32)
}

/// Reads, parses and validates a project file with the kinds of [`REGISTRY`].
pub fn load_config(file: &Path) -> Result<Config> {
    Config::load(file, &REGISTRY)
}

/// As [`load_config`], checking only syntax, types and unknown keys (`check` lists the rest).
pub fn load_config_unchecked(file: &Path) -> Result<Config> {
    Config::load_unchecked(file, &REGISTRY)
}

/// Parses and validates project-file text with the kinds of [`REGISTRY`].
pub fn parse_config(text: &str, file: &Path) -> Result<Config> {
    Config::parse(text, file, &REGISTRY)
}
