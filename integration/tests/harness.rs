//! Smoke tests of the containerd harness itself. They need the containerd
//! releases from `integration/provision.sh` and fail (not skip) without them.

use airlift_integration::{Containerd, Options, Version};
use std::path::Path;

use anyhow::{ensure, Result};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, ListImagesRequest};

/// Whether `ctr plugins ls` output lists plugin `ty`/`id` with status `ok`.
fn plugin_ok(plugins: &str, ty: &str, id: &str) -> bool {
    plugins.lines().any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 4 && cols[0] == ty && cols[1] == id && cols[cols.len() - 1] == "ok"
    })
}

/// The plugins an instance with CRI enabled must have loaded.
fn required_plugins(version: Version) -> Vec<(&'static str, &'static str)> {
    let mut plugins = vec![
        ("io.containerd.grpc.v1", "cri"),
        ("io.containerd.snapshotter.v1", "overlayfs"),
        ("io.containerd.content.v1", "content"),
    ];
    if version == Version::V2 {
        plugins.extend([
            ("io.containerd.cri.v1", "images"),
            ("io.containerd.cri.v1", "runtime"),
        ]);
    }
    plugins
}

/// Calls CRI `ListImages` and `ImageStatus` on the socket at `address`;
/// returns the number of images listed.
fn cri_list_images(address: &Path) -> Result<usize> {
    let address = address.to_path_buf();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            // The URI is required but unused: the connector dials the socket.
            let channel = tonic::transport::Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let address = address.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(address).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await?;
            let mut images = ImageServiceClient::new(channel);
            let listed = images
                .list_images(ListImagesRequest { filter: None })
                .await?
                .into_inner()
                .images;
            let status = images
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: "docker.io/library/airlift-absent:latest".to_owned(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await?
                .into_inner();
            ensure!(status.image.is_none(), "absent image found: {status:?}");
            Ok(listed.len())
        })
}

fn check_serving(c: &Containerd) -> Result<()> {
    let version = c.server_version()?;
    ensure!(
        version.starts_with(c.version().version_prefix()),
        "{} reports server version {version}",
        c.version()
    );
    let plugins = c.ctr_output(&["plugins", "ls"])?;
    for (ty, id) in required_plugins(c.version()) {
        ensure!(
            plugin_ok(&plugins, ty, id),
            "{}: plugin {ty} {id} is not ok:\n{plugins}\n--- log ---\n{}",
            c.version(),
            c.log_tail(80)
        );
    }
    if c.options().cri {
        // The CRI plugin finishes starting in the background; it may refuse a call at first.
        let mut tries = 0;
        let images = loop {
            match cri_list_images(c.cri_address()) {
                Err(_) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                result => break result?,
            }
        };
        ensure!(
            images == 0,
            "fresh {} lists {images} CRI images",
            c.version()
        );
    }
    Ok(())
}

/// Imports a fixture with ctr and finds every blob containerd lists below `content_root()`,
/// with the content its digest names. The blobs are held by images (the index too, through
/// `--index-name`), so containerd's garbage collection (which runs shortly after every start)
/// cannot take them meanwhile.
fn check_content_root(c: &Containerd) -> Result<()> {
    use sha2::Digest as _;
    let archive = airlift_integration::fixtures_dir().join("busybox-docker.tar");
    let archive = archive.to_str().expect("fixture path is UTF-8");
    c.ctr_output(&[
        "-n",
        "airlift-harness",
        "images",
        "import",
        "--no-unpack",
        "--all-platforms",
        // Otherwise the index ctr writes is held only by its lease, gone when ctr exits.
        "--index-name",
        "example.com/airlift-harness/index:1",
        archive,
    ])?;
    let listing = c.ctr_output(&["-n", "airlift-harness", "content", "ls", "-q"])?;
    let digests: Vec<&str> = listing.lines().map(str::trim).collect();
    ensure!(
        digests.len() >= 3,
        "{} lists too few blobs after importing {archive}:\n{listing}",
        c.version()
    );
    for digest in digests {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| anyhow::anyhow!("unexpected content listing: {listing}"))?;
        let blob = c.content_root().join("blobs/sha256").join(hex);
        let data = std::fs::read(&blob).map_err(|e| anyhow::anyhow!("{}: {e}", blob.display()))?;
        ensure!(
            format!("{:x}", sha2::Sha256::digest(&data)) == hex,
            "{} has other content",
            blob.display()
        );
    }
    Ok(())
}

fn lifecycle(version: Version) -> Result<()> {
    let mut c = Containerd::start(version)?;
    check_serving(&c)?;
    assert_eq!(c.cri_address(), c.address());
    assert!(c.address().as_os_str().len() < 100, "{:?}", c.address());
    assert!(c.content_root().starts_with(c.root()));

    // State kept across a restart proves the same root/socket are reused.
    c.ctr_output(&["namespaces", "create", "airlift-harness"])?;
    let pid = c.pid();
    c.restart()?;
    assert_ne!(pid, c.pid(), "restart must start a new process");
    check_serving(&c)?;
    let namespaces = c.ctr_output(&["namespaces", "ls", "-q"])?;
    assert!(
        namespaces.lines().any(|l| l == "airlift-harness"),
        "namespace lost across restart: {namespaces}"
    );
    check_content_root(&c)?;

    c.stop();
    assert!(c.pid().is_none());
    assert!(c
        .ctr_output(&["--connect-timeout", "1s", "version"])
        .is_err());
    c.restart()?;
    check_serving(&c)?;

    let dir = c.dir().to_path_buf();
    assert!(dir.is_dir());
    drop(c);
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}

#[test]
fn lifecycle_containerd_2() -> Result<()> {
    lifecycle(Version::V2)
}

#[test]
fn lifecycle_containerd_17() -> Result<()> {
    lifecycle(Version::V17)
}

fn without_cri(version: Version) -> Result<()> {
    let opts = Options {
        cri: false,
        // Also checks that extra_config reaches containerd.
        extra_config: "[plugins.\"io.containerd.gc.v1.scheduler\"]\n  pause_threshold = 0.03\n"
            .to_owned(),
        ..Options::default()
    };
    let c = Containerd::start_with(version, opts)?;
    let plugins = c.ctr_output(&["plugins", "ls"])?;
    ensure!(
        !plugin_ok(&plugins, "io.containerd.grpc.v1", "cri"),
        "{version}: CRI loaded although disabled:\n{plugins}"
    );
    ensure!(
        plugin_ok(&plugins, "io.containerd.snapshotter.v1", "overlayfs"),
        "{version}: overlayfs not ok:\n{plugins}"
    );
    // The effective configuration containerd reads from that file.
    let dump = std::process::Command::new(c.bin_dir().join("containerd"))
        .arg("--config")
        .arg(c.config_path())
        .args(["config", "dump"])
        .output()?;
    let dump = String::from_utf8_lossy(&dump.stdout);
    ensure!(dump.contains("pause_threshold = 0.03"), "{dump}");
    Ok(())
}

#[test]
fn without_cri_containerd_2() -> Result<()> {
    without_cri(Version::V2)
}

#[test]
fn without_cri_containerd_17() -> Result<()> {
    without_cri(Version::V17)
}

#[test]
fn parallel_instances_are_independent() -> Result<()> {
    let a = Containerd::start(Version::V2)?;
    let b = Containerd::start(Version::V2)?;
    let c = Containerd::start(Version::V17)?;
    assert_ne!(a.address(), b.address());
    a.ctr_output(&["namespaces", "create", "only-in-a"])?;
    for other in [&b, &c] {
        let namespaces = other.ctr_output(&["namespaces", "ls", "-q"])?;
        assert!(!namespaces.contains("only-in-a"), "{namespaces}");
    }
    check_serving(&b)?;
    check_serving(&c)?;
    Ok(())
}

#[test]
fn drop_unmounts_and_removes_everything() -> Result<()> {
    let c = Containerd::start_with(
        Version::V17,
        Options {
            cri: false,
            ..Options::default()
        },
    )?;
    // As a container's rootfs would be, were one left running.
    let mnt = c.dir().join("mnt");
    std::fs::create_dir(&mnt)?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "airlift-harness"])
        .arg(&mnt)
        .status()?;
    ensure!(status.success(), "mount tmpfs: {status}");
    std::fs::write(mnt.join("file"), "x")?;
    let dir = c.dir().to_path_buf();
    drop(c);
    ensure!(!dir.exists(), "{} left behind", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mounts.contains(dir.to_str().unwrap_or_default()),
        "mount left behind:\n{mounts}"
    );
    Ok(())
}
