//! No secret in a URL: a URL is printed, logged, stored in the run history and in the state
//! (a destination's identity holds its endpoint), so credentials written into one
//! (`https://user:pass@host/…`, `?token=…`) would leak everywhere. Every URL of the project file
//! and of `--metrics-push` is refused when it carries userinfo, or a query parameter whose name
//! says it is a credential; messages show the URL with those parts masked ([`shown`]).

use super::Config;

/// Words of a query parameter's name (split at `_`, `-`, `.`, lowercased) that make it a
/// credential: a receiver's `?tenant=acme` or `?author=x` is fine; `?token=…`, `?api_key=…`,
/// `?X-Amz-Signature=…`, `?sig=…`, `?apikey=…` are not.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "key",
    "apikey",
    "sig",
    "signature",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "session",
    "sessionid",
    "accesstoken",
    "apitoken",
    "authtoken",
    "accesskey",
    "secretkey",
    "clientsecret",
];

/// The text of a URL's authority (`user:pass@host:port`), if it has one.
fn authority(text: &str) -> Option<(usize, &str)> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((start, &rest[..end]))
}

/// The query's `name=value` pairs as (name, byte range of the value) in `text`.
fn query_values(text: &str) -> Vec<(&str, std::ops::Range<usize>)> {
    let Some(q) = text.find('?') else {
        return Vec::new();
    };
    let end = text[q..].find('#').map_or(text.len(), |h| q + h);
    let mut out = Vec::new();
    let mut at = q + 1;
    for pair in text[q + 1..end].split('&') {
        if let Some(eq) = pair.find('=') {
            out.push((&pair[..eq], at + eq + 1..at + pair.len()));
        }
        at += pair.len() + 1;
    }
    out
}

fn secret_param(name: &str) -> bool {
    name.to_ascii_lowercase()
        .split(['_', '-', '.'])
        .any(|word| SECRET_WORDS.contains(&word))
}

/// `text` with its userinfo and credential-like query values replaced by `***`: the form any
/// message may quote.
pub fn shown(text: &str) -> String {
    let mut out = text.to_string();
    // Query values first (their ranges lie after the authority, so masking it later keeps them).
    for (name, range) in query_values(text).into_iter().rev() {
        if secret_param(name) && !range.is_empty() {
            out.replace_range(range, crate::redact::MASK);
        }
    }
    if let Some((start, auth)) = authority(text)
        && let Some(at) = auth.rfind('@')
    {
        out.replace_range(start..start + at, crate::redact::MASK);
    }
    out
}

/// What is wrong with `text` as a URL that must hold no secret, if anything: credentials in its
/// userinfo or in a query parameter. `hint` says where the credentials go instead.
pub fn problem(key: &str, text: &str, hint: &str) -> Option<String> {
    let userinfo = authority(text).is_some_and(|(_, a)| a.contains('@'));
    let params: Vec<&str> = query_values(text)
        .into_iter()
        .filter(|(name, _)| secret_param(name))
        .map(|(name, _)| name)
        .collect();
    let what = match (userinfo, params.is_empty()) {
        (false, true) => return None,
        (true, true) => "credentials (user:password@)".to_string(),
        (false, false) => format!("a credential in its query (`{}`)", params.join("`, `")),
        (true, false) => format!(
            "credentials (user:password@) and a credential in its query (`{}`)",
            params.join("`, `")
        ),
    };
    Some(format!(
        "{key}: `{}` carries {what}: a URL is printed, logged and stored with the run history and \
         the state, so it must hold no secret; remove them and {hint}",
        shown(text)
    ))
}

/// Where an HTTP destination's credentials go instead of its URL.
const HTTP_HINT: &str = "put credentials in the destination's environment variables \
     (`header_env` for a webhook's headers, e.g. `Authorization`; `api_key_env` or \
     `partner_api_key_env` / `client_secret_env` for Braze)";
/// Where an object store's credentials go.
const STORE_HINT: &str = "let the object store read its keys from the environment \
     (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_* ...)";

impl Config {
    /// Every URL of the project file that carries a secret, each naming its key (masked).
    pub fn url_secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |key: String, text: &str, hint: &str| {
            out.extend(problem(&key, text, hint));
        };
        check("lake.url".into(), &self.lake.url, STORE_HINT);
        for (k, v) in &self.lake.options {
            check(format!("lake.options.{k}"), v, STORE_HINT);
        }
        if let Some(url) = &self.state.url {
            check("state.url".into(), url, STORE_HINT);
        }
        check(
            "engine.url".into(),
            &self.engine.url,
            "configure the scheduler's own authentication outside the URL",
        );
        for (name, s) in &self.sources {
            check(format!("sources.{name}.url"), &s.url, STORE_HINT);
        }
        for (name, d) in &self.destinations {
            if let Some(url) = d.kind.base_url() {
                check(format!("destinations.{name}.base_url"), url, HTTP_HINT);
            }
            if let Some((url, options)) = d.kind.folder() {
                check(format!("destinations.{name}.url"), url, STORE_HINT);
                for (k, v) in options {
                    check(format!("destinations.{name}.options.{k}"), v, STORE_HINT);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_credential_params_are_refused_and_masked() {
        let p = problem(
            "destinations.hook.base_url",
            "https://user:hunter2@hooks.example.com/in?tenant=acme&token=abc123#x",
            "use header_env",
        )
        .unwrap();
        assert!(!p.contains("hunter2") && !p.contains("abc123"), "{p}");
        assert!(
            p.contains("`https://***@hooks.example.com/in?tenant=acme&token=***#x`"),
            "{p}"
        );
        assert!(p.contains("destinations.hook.base_url") && p.contains("use header_env"));
        for fine in [
            "https://hooks.example.com/in?tenant=acme",
            "s3://bucket/prefix",
            "data/lake",
            "file:///tmp/a@b/c",
            "local",
        ] {
            assert_eq!(problem("k", fine, ""), None, "{fine}");
        }
        assert!(problem("k", "s3://AKIA:xyz@bucket/p", "").is_some());
        assert!(problem("k", "https://h/x?API_KEY=1", "").is_some());
        assert!(problem("k", "https://h/x?X-Amz-Signature=1", "").is_some());
        assert!(problem("k", "https://h/x?access_token=1", "").is_some());
        assert!(problem("k", "https://h/x?author=me&keyword=a&design=b", "").is_none());
        assert!(problem("k", "ballista://u@sched:50050", "").is_some());
        // An @ that is not valid URL syntax is masked all the same.
        assert_eq!(shown("https://u:p w@h/x"), "https://***@h/x");
    }
}
