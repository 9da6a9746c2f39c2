//! Helpers for the unit tests.

/// A runtime like the binary's (several threads), for tests that mix blocking and async code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A fixture archive (the real ones the end-to-end tests use).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/fixtures")
        .join(name)
}

/// Import options taking every platform.
pub fn all_platforms() -> crate::import::ImportOptions {
    crate::import::ImportOptions {
        plan: crate::archive::understand::PlanOptions {
            platforms: crate::platform::PlatformPolicy::All,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A tar of regular files (GNU headers, mode 0644), in the order given.
pub fn tar<N: AsRef<std::path::Path>>(entries: &[(N, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The fake reached as the daemon reaches containerd.
#[async_trait::async_trait]
impl crate::service::Connector for crate::testkit::fake::Fake {
    async fn connect(
        &self,
    ) -> Result<crate::containerd::Client, crate::containerd::ContainerdError> {
        Ok(self.client())
    }
}
