//! Compiles airlift's own API and the content service it serves as a containerd proxy plugin
//! (`proto/`) without protoc: protox parses, tonic-prost-build generates.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let airlift = "../proto/airlift/v1/airlift.proto";
    let content = "../proto/containerd/services/content/v1/content.proto";
    for proto in [airlift, content] {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_fds(protox::compile([airlift], ["../proto"])?)?;
    // Only the server side: airlift's client of containerd comes from containerd-client.
    // Blob data stays in the buffers it arrived in (`bytes::Bytes`), never copied into a `Vec`.
    tonic_prost_build::configure()
        .build_client(false)
        .bytes(".containerd.services.content.v1")
        .compile_fds(protox::compile([content], ["../proto"])?)?;
    Ok(())
}
