//! Leftovers: what airlift processes that no longer run left behind — staged blob files, ingests
//! and import leases — removed before a new start relies on the content root. Whether a process
//! is gone is told by its lock in the content root's temporary directory ([`crate::liveness`]);
//! without access to that directory nothing is judged (import leases expire by themselves).

use crate::containerd::Containerd;
use crate::labels;
use crate::store::layout::ContentRoot;

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// Import leases of dead processes.
    pub leases: Vec<String>,
    /// Ingests of dead processes.
    pub ingests: Vec<String>,
}

/// Removes the leftovers of dead airlift processes in `root` and in containerd.
pub async fn clean(client: &dyn Containerd, root: &ContentRoot) -> Cleaned {
    let temp = root.temp();
    let mut cleaned = Cleaned::default();
    if !temp.is_dir() {
        return cleaned;
    }
    crate::store::direct::clean_stale(&temp);
    let dead = |id: &str, prefix: &str| {
        crate::liveness::token_of(id, prefix).is_some_and(|t| crate::liveness::is_dead(&temp, t))
    };
    let filter = format!("id~=^{}", labels::IMPORT_LEASE_PREFIX);
    if let Ok(leases) = client.list_leases(&filter).await {
        for id in leases
            .into_iter()
            .filter(|id| dead(id, labels::IMPORT_LEASE_PREFIX))
        {
            // Synchronously: what only the dead import held is collected before a new import
            // could find it present and count on it.
            match client.delete_lease(&id, true).await {
                Ok(()) => cleaned.leases.push(id),
                Err(e) => {
                    tracing::warn!(lease = %id, error = %e, "cannot remove a stopped airlift process's import lease")
                }
            }
        }
    }
    if let Ok(refs) = client.ingest_refs().await {
        for r in refs.into_iter().filter(|r| dead(r, "airlift-")) {
            match client.abort(&r).await {
                Ok(()) => cleaned.ingests.push(r),
                Err(e) => {
                    tracing::warn!(ingest = %r, error = %e, "cannot abort a stopped airlift process's ingest")
                }
            }
        }
    }
    if !cleaned.leases.is_empty() || !cleaned.ingests.is_empty() {
        tracing::info!(
            leases = cleaned.leases.len(),
            ingests = cleaned.ingests.len(),
            "removed what stopped airlift processes left"
        );
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fake::Fake;

    #[tokio::test]
    async fn only_dead_processes_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = ContentRoot::new(dir.path());
        std::fs::create_dir_all(root.temp()).unwrap();
        crate::liveness::hold(&root.temp()).unwrap();
        let me = crate::liveness::token();
        // A dead process: its token has no lock file; one staged file of it is left.
        let dead = "p1x1";
        std::fs::write(root.temp().join(format!("{dead}-0")), b"x").unwrap();
        let fake = Fake::new();
        let c = fake.client();
        for id in [
            format!("airlift-import-{dead}-0"),
            format!("airlift-import-{me}-0"),
        ] {
            c.create_lease(&id, Default::default(), None).await.unwrap();
        }
        fake.state()
            .ingests
            .insert(format!("airlift-{dead}-0-1"), vec![1]);
        fake.state()
            .ingests
            .insert(format!("airlift-{me}-0-1"), vec![1]);
        let cleaned = clean(c.as_ref(), &root).await;
        assert_eq!(cleaned.leases, vec![format!("airlift-import-{dead}-0")]);
        assert_eq!(cleaned.ingests, vec![format!("airlift-{dead}-0-1")]);
        assert!(!root.temp().join(format!("{dead}-0")).exists());
        assert!(fake
            .state()
            .leases
            .contains_key(&format!("airlift-import-{me}-0")));
    }

    #[tokio::test]
    async fn without_the_temporary_directory_nothing_is_judged() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        let c = fake.client();
        c.create_lease("airlift-import-p1x1-0", Default::default(), None)
            .await
            .unwrap();
        let cleaned = clean(c.as_ref(), &ContentRoot::new(dir.path().join("nowhere"))).await;
        assert_eq!(cleaned, Cleaned::default());
        assert_eq!(fake.state().leases.len(), 1);
    }
}
