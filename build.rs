//! Compiles `proto/` into Rust types with prost-build, and embeds the git commit the build was
//! made from (`FEEDGATE_COMMIT`, read by `src/version.rs`).
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh clone builds without a system
//! protobuf compiler. The commit is "unknown" outside a git checkout or without git.

use std::path::Path;
use std::process::Command;

fn main() -> anyhow::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate!() embeds migrations/; rebuild when they change.
    println!("cargo:rerun-if-changed=migrations");
    prost_build::Config::new()
        .bytes(["."])
        .compile_protos(&["proto/feedgate/v1/feedgate.proto"], &["proto"])?;
    embed_commit();
    Ok(())
}

/// Sets `FEEDGATE_COMMIT` to `HEAD`'s abbreviated hash, and asks cargo to run this again when
/// `HEAD` moves: when `HEAD` itself changes (a checkout), or the branch it names (a commit),
/// loose or packed. Only files that exist are named: cargo reruns a script whose named file is
/// missing on every build.
fn embed_commit() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FEEDGATE_COMMIT={commit}");
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// What `git args` prints (trimmed), when git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}
