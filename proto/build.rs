//! Compiles the API with a vendored `protoc`, so a fresh machine needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The vendored protoc's include dir holds google/protobuf/timestamp.proto.
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("export_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("compliance/export/v1/export.proto")],
            &[PathBuf::from("."), well_known],
        )?;
    println!("cargo:rerun-if-changed=compliance/export/v1/export.proto");
    Ok(())
}
