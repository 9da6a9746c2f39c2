//! The fake's leases service: leases holding blobs and snapshots, listed by containerd's filters.

use super::{invalid_filter, stored_labels, Fake, Lease};
use crate::containerd::{rfc3339, ContainerdError, Labels, Leases, Result};
use crate::error::Class;
use crate::filters::{map_field, Adaptor, Filter};
use std::time::{Duration, SystemTime};

struct LeaseView<'a>(&'a str, &'a Lease);

impl Adaptor for LeaseView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("id") => Some(self.0.to_string()),
            Some("labels") => map_field(&path[1..], &self.1.labels),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl Leases for Fake {
    async fn create_lease(&self, id: &str, labels: Labels, expire: Option<Duration>) -> Result<()> {
        let mut labels = stored_labels(&labels);
        self.enter("create_lease", id)?;
        if let Some(after) = expire {
            labels.insert(
                "containerd.io/gc.expire".into(),
                rfc3339(SystemTime::now() + after),
            );
        }
        self.state().leases.entry(id.to_string()).or_insert(Lease {
            labels,
            ..Lease::default()
        });
        Ok(())
    }

    async fn delete_lease(&self, id: &str, sync: bool) -> Result<()> {
        self.enter("delete_lease", id)?;
        let mut s = self.state();
        s.leases.remove(id);
        if sync {
            super::gc::collect(&mut s);
        }
        Ok(())
    }

    async fn list_leases(&self, filter: &str) -> Result<Vec<String>> {
        self.enter("list_leases", filter)?;
        let f = Filter::parse(&[filter]).map_err(invalid_filter)?;
        Ok(self
            .state()
            .leases
            .iter()
            .filter(|(id, l)| f.matches(&LeaseView(id, l)))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn lease_content(&self, id: &str) -> Result<Vec<String>> {
        self.enter("lease_content", id)?;
        let s = self.state();
        let l = s.lease_listed(id)?;
        Ok(l.content.iter().cloned().collect())
    }

    async fn lease_resource(&self, id: &str, digest: &str, add: bool) -> Result<()> {
        self.enter("lease_resource", format!("{id} {digest}"))?;
        let mut s = self.state();
        let l = s.leases.get_mut(id).ok_or_else(|| {
            ContainerdError::call(
                format!("update lease {id} with {digest}"),
                Class::NotFound,
                "lease not found",
            )
        })?;
        if add {
            l.content.insert(digest.to_string());
        } else {
            l.content.remove(digest);
        }
        Ok(())
    }

    async fn lease_snapshots(&self, id: &str, snapshotter: &str) -> Result<Vec<String>> {
        self.enter("lease_snapshots", id)?;
        let s = self.state();
        let l = s.lease_listed(id)?;
        Ok(l.snapshots
            .iter()
            .filter(|(sn, _)| sn == snapshotter)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn lease_snapshot(
        &self,
        id: &str,
        snapshotter: &str,
        key: &str,
        add: bool,
    ) -> Result<()> {
        self.enter("lease_snapshot", format!("{id} {key}"))?;
        let mut s = self.state();
        let l = s.leases.get_mut(id).ok_or_else(|| {
            ContainerdError::call(
                format!("update lease {id} with {key}"),
                Class::NotFound,
                "lease not found",
            )
        })?;
        let k = (snapshotter.to_string(), key.to_string());
        if add {
            l.snapshots.insert(k);
        } else {
            l.snapshots.remove(&k);
        }
        Ok(())
    }
}
