//! Compiles `proto/sunlight/v1/*.proto` and Arrow Flight's session messages with a
//! vendored `protoc`, so that no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for one checkout may run for another.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "sunlight/v1/node.proto",
        "sunlight/v1/fragment.proto",
        "sunlight/v1/raft.proto",
        "sunlight/v1/admin.proto",
        "sunlight/v1/coordinator.proto",
        "sunlight/v1/statement.proto",
        "arrow/flight/session.proto",
    ]
    .map(|f| root.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &files, &[root])?;
    Ok(())
}
