//! Conflicts between parts of the project file that are each fine alone: two cohorts claiming
//! one thing at the partner (a `cohort_id`, a `/users/track` attribute) would remove each
//! other's members on every run, and a `files` destination writing inside the lake, the state
//! area, a source or another destination's folder would mix its files with theirs. `check` and
//! `sync` both call [`Config::conflicts`], so what one refuses the other does too.

use std::collections::BTreeMap;

use super::{Claim, Config, url_secrets};

/// What one cohort writes at the partner, and where: two cohorts with the same claim conflict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ClaimAt {
    /// The partner workspace or receiver (see [`Config::workspace`]); never printed.
    workspace: String,
    /// What is claimed there, as messages name it.
    what: String,
}

impl Config {
    /// Names the partner workspace (or receiver, or folder) a destination writes to, from the
    /// project file and the environment (`lookup`): two destination sections pointing at the
    /// same workspace give the same text. Like `destination::identity` (which `sync` records),
    /// a Braze workspace is its endpoint and its key; here a key not in the environment
    /// (`check` without secrets) stands as the name of its variable.
    fn workspace(&self, destination: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let Some(d) = self.destinations.get(destination) else {
            return format!("unknown:{destination}");
        };
        let key = |var: &str| match lookup(var) {
            Some(v) if !v.is_empty() => {
                format!("key:{:016x}", crate::hash::fnv1a64(v.as_bytes()))
            }
            _ => format!("env:{var}"),
        };
        let http = |url: &str| match url::Url::parse(url.trim()) {
            Ok(u) => u.as_str().trim_end_matches('/').to_string(),
            Err(_) => url.trim().trim_end_matches('/').to_string(),
        };
        match d.kind.folder() {
            Some((url, _)) => match self.folder(url) {
                Some(u) => format!("files {u}"),
                None => format!("files {url}"),
            },
            None => d.kind.workspace(&http, &key),
        }
    }

    /// A folder of the project file (a path or a URL) as a URL ending in `/`.
    fn folder(&self, text: &str) -> Option<url::Url> {
        crate::storage::to_url(text, &self.base_dir()).ok()
    }

    /// Every conflict between cohorts or between folders, each naming both parties and the
    /// key; `lookup` reads the environment (so destinations whose keys are the same workspace
    /// key count as one workspace). Empty when there is none.
    pub fn conflicts(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let mut out = self.cohort_conflicts(lookup);
        out.extend(self.folder_conflicts());
        out
    }

    fn cohort_conflicts(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        // Claim → the cohorts making it (cohort, destination), in name order.
        let mut claims: BTreeMap<ClaimAt, Vec<(String, String)>> = BTreeMap::new();
        // Per workspace, the attributes written as booleans and as arrays (a name used as both
        // would have one cohort overwrite the other's type).
        let mut kinds: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
        for name in self.cohorts.keys() {
            // A cohort whose own configuration is wrong is reported by `problems`.
            let Ok(c) = self.cohort(name) else { continue };
            let Some(d) = self.destinations.get(&c.destination) else {
                continue;
            };
            let workspace = self.workspace(&c.destination, lookup);
            let what = match d.kind.claim(&c.cohort_id) {
                Claim::Boolean(attr) => {
                    kinds
                        .entry((workspace.clone(), attr.clone()))
                        .or_default()
                        .0
                        .push(name.clone());
                    format!("the boolean attribute `{attr}`")
                }
                Claim::ArrayValue(attr) => {
                    kinds
                        .entry((workspace.clone(), attr.clone()))
                        .or_default()
                        .1
                        .push(name.clone());
                    format!(
                        "the value `{}` of the array attribute `{attr}`",
                        c.cohort_id
                    )
                }
                Claim::CohortId => format!("cohort_id `{}`", c.cohort_id),
                Claim::Named(what) => what,
            };
            claims
                .entry(ClaimAt { workspace, what })
                .or_default()
                .push((name.clone(), c.destination.clone()));
        }
        let mut out = Vec::new();
        for (claim, cohorts) in &claims {
            for pair in cohorts.windows(2) {
                let [(a, da), (b, db)] = pair else { continue };
                let place = if da == db {
                    format!("destination `{da}`")
                } else {
                    format!("destinations `{da}` and `{db}`, which point at the same workspace")
                };
                out.push(format!(
                    "cohorts.{a} and cohorts.{b}: both write {} on {place}, so each run would \
                     remove the other's members; {}",
                    claim.what,
                    if claim.what.contains("attribute") {
                        "give each cohort its own `cohort_id` (or its own destination `attribute`)"
                    } else if claim.what.starts_with("cohort_id") {
                        "give each cohort its own `cohort_id`"
                    } else {
                        "give each cohort a destination of its own"
                    }
                ));
            }
        }
        for ((_, attr), (booleans, arrays)) in &kinds {
            if let (Some(a), Some(b)) = (booleans.first(), arrays.first()) {
                out.push(format!(
                    "cohorts.{a} and cohorts.{b}: both write the attribute `{attr}` on one \
                     workspace, one as a boolean and one as an array: each run would overwrite \
                     the other's; give the destinations different `attribute` names"
                ));
            }
        }
        out
    }

    /// `files` destinations whose folder lies inside (or holds) the lake, the state area, a
    /// source or another `files` destination's folder.
    fn folder_conflicts(&self) -> Vec<String> {
        let mut others: Vec<(String, String, url::Url)> = Vec::new();
        let mut push = |key: String, text: &str, what: &str| {
            if let Some(u) = self.folder(text) {
                others.push((key, what.to_string(), u));
            }
        };
        push("lake.url".into(), &self.lake.url, "the lake");
        // The default state area is under the lake: the lake covers it.
        if let Some(url) = &self.state.url {
            push("state.url".into(), url, "the state area");
        }
        for (name, s) in &self.sources {
            push(format!("sources.{name}.url"), &s.url, "a source's folder");
        }
        let files: Vec<(String, &str, url::Url)> = self
            .destinations
            .iter()
            .filter_map(|(name, d)| {
                let (url, _) = d.kind.folder()?;
                Some((name.clone(), url, self.folder(url)?))
            })
            .collect();
        let mut out = Vec::new();
        for (i, (name, text, url)) in files.iter().enumerate() {
            let mut clash = |key: &str, what: &str, theirs: &url::Url| {
                let relation = if within(url, theirs) {
                    "lies inside"
                } else if within(theirs, url) {
                    "holds"
                } else {
                    return;
                };
                out.push(format!(
                    "destinations.{name}.url: `{}` {relation} {what} (`{key}` = `{}`): its run \
                     folders would mix with those files; point it at a folder of its own",
                    url_secrets::shown(text),
                    url_secrets::shown(theirs.as_str())
                ));
            };
            for (key, what, theirs) in &others {
                clash(key, what, theirs);
            }
            for (other, _, theirs) in &files[i + 1..] {
                clash(
                    &format!("destinations.{other}.url"),
                    "another `files` destination's folder",
                    theirs,
                );
            }
        }
        out
    }
}

/// Whether folder `inner` is `outer` or lies under it (same store, path prefix by whole
/// segments; both end in `/`).
fn within(inner: &url::Url, outer: &url::Url) -> bool {
    inner.scheme() == outer.scheme()
        && inner.host_str() == outer.host_str()
        && inner.port() == outer.port()
        && inner.path().starts_with(outer.path())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BASE: &str = r#"
[lake]
url = "data/lake"

[destinations.track]
kind = "braze_users_track"
base_url = "https://rest.example.com"
api_key_env = "RK"
"#;

    fn conflicts(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let c = crate::destinations::parse_config(text, Path::new("p/cohort-bridge.toml")).unwrap();
        c.conflicts(&|v| {
            env.iter()
                .find(|(k, _)| *k == v)
                .map(|(_, x)| x.to_string())
        })
    }

    #[test]
    fn one_cohort_id_twice_on_one_destination_is_a_conflict() {
        let text = format!(
            "{BASE}\n[cohorts.a]\ncohort_id = \"x\"\ndestination = \"track\"\n\
             [cohorts.b]\ncohort_id = \"x\"\ndestination = \"track\"\n[cohorts.c]\ndestination = \"track\"\n"
        );
        let found = conflicts(&text, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("cohorts.a and cohorts.b")
                && found[0].contains("`cohort_x`")
                && found[0].contains("destination `track`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_shared_boolean_attribute_is_a_conflict_an_array_is_not() {
        let two = "[cohorts.a]\ndestination = \"track\"\n[cohorts.b]\ndestination = \"track\"\n";
        let shared = BASE.replace(
            "api_key_env = \"RK\"",
            "api_key_env = \"RK\"\nattribute = \"vip\"",
        );
        let found = conflicts(&format!("{shared}\n{two}"), &[]);
        assert!(
            found.len() == 1 && found[0].contains("boolean attribute `vip`"),
            "{found:?}"
        );
        let array = shared.replace("attribute =", "membership = \"array\"\nattribute =");
        assert_eq!(
            conflicts(&format!("{array}\n{two}"), &[]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn two_sections_on_one_workspace_count_as_one() {
        let second = "\n[destinations.track2]\nkind = \"braze_users_track\"\n\
             base_url = \"https://rest.example.com/\"\napi_key_env = \"RK2\"\n\
             [cohorts.a]\ndestination = \"track\"\ncohort_id = \"x\"\n\
             [cohorts.b]\ndestination = \"track2\"\ncohort_id = \"x\"\n";
        let text = format!("{BASE}{second}");
        // Different variables, keys unknown: not known to be one workspace.
        assert!(conflicts(&text, &[]).is_empty());
        // Different keys: two workspaces.
        assert!(conflicts(&text, &[("RK", "k1"), ("RK2", "k2")]).is_empty());
        // The same key in both: one workspace.
        let found = conflicts(&text, &[("RK", "k1"), ("RK2", "k1")]);
        assert!(
            found.len() == 1 && found[0].contains("destinations `track` and `track2`"),
            "{found:?}"
        );
    }

    #[test]
    fn files_inside_the_lake_state_or_another_files_folder_are_conflicts() {
        let files = |name: &str, url: &str| {
            format!("\n[destinations.{name}]\nkind = \"files\"\nurl = \"{url}\"\n")
        };
        let found = conflicts(&format!("{BASE}{}", files("out", "data/lake/exports")), &[]);
        assert!(
            found.len() == 1
                && found[0].contains("destinations.out.url")
                && found[0].contains("inside the lake"),
            "{found:?}"
        );
        let found = conflicts(
            &format!("{BASE}\n[state]\nurl = \"st\"\n{}", files("out", "st/x")),
            &[],
        );
        assert!(
            found.len() == 1 && found[0].contains("the state area"),
            "{found:?}"
        );
        let found = conflicts(
            &format!(
                "{BASE}{}{}",
                files("a", "exports"),
                files("b", "./exports/b")
            ),
            &[],
        );
        assert!(
            found.len() == 1 && found[0].contains("another `files` destination"),
            "{found:?}"
        );
        assert!(
            conflicts(
                &format!(
                    "{BASE}{}{}",
                    files("a", "exports/a"),
                    files("b", "exports/ab")
                ),
                &[]
            )
            .is_empty()
        );
    }
}
