//! The install paths that cannot run here (no container daemon, no CI runners) checked as far
//! as this machine can: the Dockerfile's shape, that its runtime image has every library the
//! binary links, that the build context holds what Cargo.toml names, that `--locked` resolves,
//! and that the release workflow builds every promised target with checksums (issue 17).

use std::path::Path;
use std::process::Command;

use crate::support::BIN;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Instructions of the Dockerfile, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(t);
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_locked_and_ships_the_binary_alone_as_non_root() {
    let all = instructions();
    let stages: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {all:?}");
    let (build, runtime) = (&all[stages[0]..stages[1]], &all[stages[1]..]);
    assert!(build[0].ends_with(" AS build"), "{}", build[0]);
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN cargo build --release --locked --bin cohort-bridge")),
        "{build:?}"
    );
    // The runtime: distroless (glibc, CA certificates), the binary copied in, nothing run.
    assert_eq!(runtime[0], "FROM gcr.io/distroless/cc-debian12:nonroot");
    let copies: Vec<&String> = runtime.iter().filter(|i| i.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        ["COPY --from=build /src/target/release/cohort-bridge /usr/local/bin/cohort-bridge"]
    );
    assert!(!runtime.iter().any(|i| i.starts_with("RUN")), "{runtime:?}");
    assert!(runtime.contains(&"USER nonroot".to_string()));
    assert!(runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/cohort-bridge"]"#.to_string()));
    // The builder's toolchain is at least the crate's rust-version.
    let arg = all
        .iter()
        .find_map(|i| i.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let needed = manifest["package"]["rust-version"].as_str().unwrap();
    let minor = |v: &str| v.split('.').nth(1).unwrap().parse::<u32>().unwrap();
    assert!(
        minor(arg) >= minor(needed),
        "Dockerfile Rust {arg} < rust-version {needed}"
    );
}

#[test]
fn the_build_context_holds_every_target_and_the_lockfile_resolves() {
    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/"] {
        assert!(
            ignored.contains(&must),
            "{must} is not ignored: {ignored:?}"
        );
    }
    // Every path Cargo.toml names (targets, build script, include_str! sources) is sent.
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let mut paths = vec![
        "build.rs".to_string(),
        "cohort-bridge.toml".into(),
        "queries".into(),
    ];
    for kind in ["bin", "bench", "test"] {
        for t in manifest
            .get(kind)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let name = t["name"].as_str().unwrap();
            let default = match kind {
                "bench" => format!("benches/{name}.rs"),
                _ => String::new(),
            };
            let path = t
                .get("path")
                .and_then(|p| p.as_str())
                .map(String::from)
                .unwrap_or(default);
            paths.push(path);
        }
    }
    for p in paths.iter().filter(|p| !p.is_empty()) {
        assert!(Path::new(ROOT).join(p).exists(), "{p} is missing");
        let first = p.split('/').next().unwrap();
        assert!(
            !ignored
                .iter()
                .any(|i| i.trim_end_matches('/') == first || i.trim_end_matches('/') == p.as_str()),
            "{p} is excluded from the build context"
        );
    }
    // `--locked` builds (the Dockerfile's, the release workflow's) need Cargo.lock in step.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .args(["tree", "--locked", "--offline", "--depth", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The runtime image has glibc and libgcc only: the binary must link nothing else.
#[test]
#[cfg(target_os = "linux")]
fn the_binary_links_only_what_the_runtime_image_has() {
    let out = Command::new("ldd").arg(BIN).output().expect("ldd");
    assert!(out.status.success());
    let allowed = [
        "linux-vdso.so",
        "libgcc_s.so",
        "libm.so",
        "libc.so",
        "ld-linux",
        "libpthread.so",
        "libdl.so",
        "librt.so",
    ];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        assert!(
            allowed.iter().any(|a| lib.contains(a)),
            "links {lib}, not in the runtime image"
        );
    }
}

#[test]
fn the_release_workflow_builds_every_target_with_checksums_and_the_image() {
    let wf = read(".github/workflows/release.yml");
    for target in [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "aarch64-apple-darwin",
        "x86_64-apple-darwin",
    ] {
        assert!(wf.contains(&format!("target: {target}")), "{target}");
    }
    assert!(wf.contains(
        "cargo build --release --locked --bin cohort-bridge --target ${{ matrix.target }}"
    ));
    assert!(wf.contains("sha256sum *.tar.gz > SHA256SUMS"));
    assert!(wf.contains("dist/SHA256SUMS"));
    assert!(wf.contains("completions \"$shell\"") && wf.contains("man >"));
    assert!(
        wf.contains("docker/build-push-action")
            && wf.contains("platforms: linux/amd64,linux/arm64")
    );
    assert!(wf.contains("tags: [\"v*\"]"));
}
