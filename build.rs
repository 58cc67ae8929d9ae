//! Compiles `proto/` into Rust types with prost-build. Nothing else happens here.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh clone builds without a system
//! protobuf compiler.

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
    Ok(())
}
