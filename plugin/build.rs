//! Compiles airlift's own API (`proto/`) without protoc: protox parses, tonic-prost-build
//! generates.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/airlift/v1/airlift.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
