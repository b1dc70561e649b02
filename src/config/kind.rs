//! What the configuration needs of a destination kind, without knowing any: each kind
//! (`src/destinations/<kind>/`) implements [`KindConfig`] for its own keys, and the registry
//! (`src/destinations/mod.rs`) hands the loader a [`KindSpec`] per kind through [`Kinds`]. A
//! `[destinations.X]` section is split here into its `kind`, the shared `DeliverySettings` and
//! the rest, which the kind's parser reads.

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use super::{ReadSecret, Secret};
use crate::error::Result;

/// A kind as the configuration sees it: its name, its own keys, its limits and its parser.
#[derive(Debug)]
pub struct KindSpec {
    /// As `kind = "…"` names it.
    pub name: &'static str,
    /// Its own keys, besides the delivery settings.
    pub keys: &'static [&'static str],
    /// A hint for a key of this kind's sections that is not one of its own (e.g. `base_url` on
    /// a kind that takes `url`).
    pub hints: &'static [(&'static str, &'static str)],
    /// The most ids one request may carry.
    pub max_batch: usize,
    /// Ids per request when the config does not say.
    pub default_batch: usize,
    /// Requests per second when the config does not say: the partner's default limit.
    pub default_rps: f64,
    /// Reads the kind's own keys (the shared ones already taken out).
    pub parse: fn(toml::Value) -> std::result::Result<Box<dyn KindConfig>, toml::de::Error>,
}

/// Parses a kind's own keys into its config type (a registry row's `parse`).
pub fn parse_as<T: KindConfig + serde::de::DeserializeOwned>(
    v: toml::Value,
) -> std::result::Result<Box<dyn KindConfig>, toml::de::Error> {
    v.try_into::<T>()
        .map(|c| Box::new(c) as Box<dyn KindConfig>)
}

/// The kinds a build knows (the destinations registry).
pub trait Kinds: Sync {
    fn find(&self, name: &str) -> Option<&'static KindSpec>;
    /// Every kind's name, in the registry's order.
    fn names(&self) -> Vec<&'static str>;
}

/// What a cohort claims at the partner: two cohorts on one workspace with the same claim
/// remove each other's members on every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The partner's cohort of that `cohort_id`.
    CohortId,
    /// A boolean attribute of that name, set on members and cleared on leavers.
    Boolean(String),
    /// The cohort's value in an array attribute of that name.
    ArrayValue(String),
    /// A thing the destination's own keys name whatever the cohort (e.g. a partner's list or
    /// segment id), as messages name it.
    Named(String),
}

/// A kind's own keys, parsed: the configuration's view of a destination.
pub trait KindConfig: KindConfigBase + fmt::Debug + Send + Sync + Any {
    /// The HTTP endpoint of a kind that sends requests.
    fn base_url(&self) -> Option<&str> {
        None
    }

    /// The folder (object-store URL or path) and store options of a kind that writes files.
    fn folder(&self) -> Option<(&str, &BTreeMap<String, String>)> {
        None
    }

    /// The kind's own semantic problems, each naming its key under `key`
    /// (`destinations.<name>`).
    fn problems(&self, key: &str, out: &mut Vec<String>);

    /// A problem with a secret's value, found before it is read (and registered for masking).
    fn secret_problem(
        &self,
        _key: &str,
        _lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        None
    }

    /// The kind's keys from the environment; `read(field, var)` reads one, naming the field
    /// when it is missing.
    fn credentials(&self, read: &ReadSecret<'_>) -> Result<Credentials>;

    /// Names the workspace or receiver written to, for conflict checks: `http` normalises a
    /// URL, `key(var)` stands for the key in that variable (its fingerprint, or the variable's
    /// name when unset). Never printed. Kinds with a [`folder`](Self::folder) are named by it.
    fn workspace(&self, _http: &dyn Fn(&str) -> String, _key: &dyn Fn(&str) -> String) -> String {
        String::new()
    }

    /// What a cohort of that `cohort_id` claims at the partner.
    fn claim(&self, _cohort_id: &str) -> Claim {
        Claim::CohortId
    }
}

/// What every [`KindConfig`] has without writing it: a look at its concrete type (the kind's
/// own code reads its settings back through it) and a copy.
pub trait KindConfigBase {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_box(&self) -> Box<dyn KindConfig>;
}

impl<T: KindConfig + Clone> KindConfigBase for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_box(&self) -> Box<dyn KindConfig> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn KindConfig> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A destination's keys, read from the environment by its kind.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The key that names the workspace (its fingerprint tells workspaces apart), if any.
    pub workspace: Option<Secret>,
    /// The kind's secrets, by the key naming their variable (e.g. `api_key_env`).
    pub secrets: BTreeMap<&'static str, Secret>,
    /// Secret headers (name, value).
    pub headers: Vec<(String, Secret)>,
}

impl Credentials {
    /// The key that names the workspace (its fingerprint tells workspaces apart), if any.
    pub fn workspace_key(&self) -> Option<&Secret> {
        self.workspace.as_ref()
    }

    /// The secret read for `field`; a kind asks only for what its `credentials` read.
    pub fn secret(&self, field: &str) -> Option<&Secret> {
        self.secrets.get(field)
    }
}

thread_local! {
    /// The kinds of the parse running on this thread (see [`with_kinds`]): serde's derive
    /// reads `[destinations.*]` without arguments, and the error positions TOML adds need the
    /// tables parsed while the document is.
    static KINDS: Cell<Option<&'static dyn Kinds>> = const { Cell::new(None) };
}

/// Runs `f` (a parse) with `kinds` known to the `[destinations.*]` reader.
pub fn with_kinds<R>(kinds: &'static dyn Kinds, f: impl FnOnce() -> R) -> R {
    let before = KINDS.with(|k| k.replace(Some(kinds)));
    let out = f();
    KINDS.with(|k| k.set(before));
    out
}

/// The kinds of the running parse.
pub(super) fn kinds() -> std::result::Result<&'static dyn Kinds, String> {
    KINDS
        .with(|k| k.get())
        .ok_or_else(|| "destinations cannot be read without the kinds' registry".to_string())
}
