//! Secret scrubbing for everything that came from outside the process.
//!
//! A partner's error text may echo the request (keys included), an object store's error may
//! quote a signed URL, a quarantined input line may carry anything. Every configured secret is
//! registered here once (`Secret::new` does it; `register_env` adds the object stores'
//! well-known variables), and `scrub` replaces each of them — as written, JSON-escaped and
//! URL-encoded — with `***` before text reaches stdout, stderr, the `runs` table, dead letters
//! or quarantine. Logging goes through `Stderr`, a writer that scrubs every line.

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// The forms of every registered secret, longest first (so a longer form is replaced before a
/// shorter one that it contains).
static FORMS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Environment variables that hold object-store credentials (`object_store` reads them).
const SECRET_ENV: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// Registers a secret: from now on `scrub` hides it. Empty values are ignored.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut forms = vec![secret.to_string()];
    // JSON-escaped (as it appears inside a JSON string literal in a body or an echo).
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    // URL-encoded, both the form encoding (space as `+`) and plain percent-encoding.
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    forms.push(form.replace('+', "%20"));
    forms.push(form);
    let mut all = FORMS.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        if !all.contains(&f) {
            all.push(f);
        }
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.len()));
}

/// Registers the object stores' credential variables that are set in the environment.
pub fn register_env() {
    for var in SECRET_ENV {
        if let Ok(v) = std::env::var(var) {
            register(&v);
        }
    }
}

/// `text` with every registered secret (in any of its forms) replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let forms = FORMS.read().unwrap_or_else(|e| e.into_inner());
    if !forms.iter().any(|f| text.contains(f.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for f in forms.iter() {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// `scrub` into an owned string.
pub fn scrubbed(text: impl AsRef<str>) -> String {
    scrub(text.as_ref()).into_owned()
}

/// Standard error, scrubbed: the writer the log subscriber uses, so no log line (whatever a
/// field holds) carries a registered secret.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_scrubbed() {
        register("s3cr\"et/+ k€y");
        let echoed = r#"{"message":"bad key s3cr\"et/+ k€y"} url=s3cr%22et%2F%2B+k%E2%82%ACy raw=s3cr"et/+ k€y alt=s3cr%22et%2F%2B%20k%E2%82%ACy"#;
        let out = scrub(echoed);
        assert!(!out.contains("s3cr"), "{out}");
        assert_eq!(out.matches(MASK).count(), 4, "{out}");
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
    }
}
