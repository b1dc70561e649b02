//! Locations by URL: a local path, `file://`, `memory://`, `s3://`, `gs://`, `az://`, as a store
//! and a root inside it. Stores are built from the standard environment first, then the
//! project file's options.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::error::{Error, Result};

/// Where a lake (or any prefix of it) lives: the store, its root inside the store, and the URL
/// DataFusion knows the store by.
#[derive(Clone, Debug)]
pub struct Location {
    /// The store's URL with the root folder, always ending in `/`.
    pub url: Url,
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
}

impl Location {
    /// Parses `text` (a URL, or a local path resolved against `base`) and builds its store.
    pub fn parse(text: &str, base: &FsPath, options: &BTreeMap<String, String>) -> Result<Self> {
        let url = to_url(text, base)?;
        let store = build_store(&url, options)?;
        let root = Path::from_url_path(url.path())
            .map_err(|e| Error::storage_at(format!("bad path in `{url}`"), e))?;
        Ok(Location { url, store, root })
    }

    /// The base URL DataFusion registers this store under (`scheme://authority`).
    pub fn store_url(&self) -> Url {
        let mut u = self.url.clone();
        u.set_path("");
        u
    }

    /// `root/child` as an object path.
    pub fn child(&self, child: &str) -> Path {
        child
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    /// The URL of a folder under the root, ending in `/` (how DataFusion lists a table).
    pub fn child_url(&self, child: &str) -> String {
        format!("{}{}/", self.url, child.trim_matches('/'))
    }
}

/// `text` as a folder URL ending in `/`: a URL as written, or a local path resolved against
/// `base` (`..` and `.` lexically). Builds no store.
pub fn to_url(text: &str, base: &FsPath) -> Result<Url> {
    let text = text.trim();
    if text.contains("://") {
        let mut url =
            Url::parse(text).map_err(|e| Error::config(None, format!("lake URL `{text}`: {e}")))?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        return Ok(url);
    }
    let path = base.join(text);
    let abs = std::path::absolute(&path)
        .map_err(|e| Error::config(None, format!("lake path `{}`: {e}", path.display())))?;
    // `..` and `.` are resolved lexically (object-store paths cannot hold them; the folder
    // need not exist yet, so no canonicalize).
    let mut normal = std::path::PathBuf::new();
    for part in abs.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let abs = normal;
    Url::from_directory_path(&abs).map_err(|_| {
        Error::config(
            None,
            format!("lake path `{}` is not absolute", abs.display()),
        )
    })
}

fn build_store(url: &Url, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let bad_option = |k: &str| {
        Error::config(
            None,
            format!(
                "lake.options.{k}: not an option of the `{}` store",
                url.scheme()
            ),
        )
    };
    let built = |e: object_store::Error| Error::config(None, format!("lake `{url}`: {e}"));
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(LocalFileSystem::new()),
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|_| bad_option(k))?, v);
            }
            Arc::new(b.build().map_err(built)?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|_| bad_option(k))?, v);
            }
            Arc::new(b.build().map_err(built)?)
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|_| bad_option(k))?, v);
            }
            Arc::new(b.build().map_err(built)?)
        }
        other => {
            return Err(Error::config(
                None,
                format!(
                    "lake `{url}`: unsupported scheme `{other}` (use a path, file://, s3://, gs://, az:// or memory://)"
                ),
            ));
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_in_local_paths_is_resolved() {
        let loc = Location::parse(
            "../data/lake",
            FsPath::new("/srv/project/benches"),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(loc.url.as_str(), "file:///srv/project/data/lake/");
        let loc =
            Location::parse("./lake/./x/..", FsPath::new("/srv/p"), &Default::default()).unwrap();
        assert_eq!(loc.url.as_str(), "file:///srv/p/lake/");
    }

    #[test]
    fn local_paths_become_file_urls_relative_to_the_project() {
        let loc =
            Location::parse("data/lake", FsPath::new("/srv/project"), &BTreeMap::new()).unwrap();
        assert_eq!(loc.url.as_str(), "file:///srv/project/data/lake/");
        assert_eq!(loc.root.as_ref(), "srv/project/data/lake");
        assert_eq!(loc.child("users").as_ref(), "srv/project/data/lake/users");
        assert_eq!(
            loc.child_url("users"),
            "file:///srv/project/data/lake/users/"
        );
        assert_eq!(loc.store_url().as_str(), "file:///");
    }

    #[test]
    fn s3_urls_keep_their_prefix() {
        let opts = BTreeMap::from([
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string()),
        ]);
        let loc = Location::parse("s3://bucket/lake", FsPath::new("."), &opts).unwrap();
        assert_eq!(loc.root.as_ref(), "lake");
        assert_eq!(loc.store_url().as_str(), "s3://bucket");
        let err = Location::parse(
            "s3://bucket/lake",
            FsPath::new("."),
            &BTreeMap::from([("no_such_option".to_string(), "x".to_string())]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lake.options.no_such_option"), "{err}");
    }
}
