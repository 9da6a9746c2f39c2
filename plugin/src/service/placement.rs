//! Where imports write, and what dead processes left there: the content root containerd reports,
//! airlift's own store when containerd uses it as its content proxy, or none (blobs then stream
//! through containerd's Content API) — resolved once per containerd — and the one cleanup of
//! what airlift processes that died left in it ([`crate::leftovers`]).

use super::Importer;
use crate::containerd::Client;
use crate::import::{Mode, Placement};
use crate::store::layout::ContentRoot;

impl Importer {
    /// Where imports through `client` may write: resolved once per containerd.
    pub async fn placement(&self, client: &Client) -> Placement {
        if let Some((address, p)) = &*self.placement.lock().unwrap() {
            if address == client.address() {
                return p.clone();
            }
        }
        let (placement, lasting) = self.resolve(client).await;
        if lasting {
            *self.placement.lock().unwrap() =
                Some((client.address().to_path_buf(), placement.clone()));
        }
        placement
    }

    /// The placement, and whether it will not change while containerd runs.
    async fn resolve(&self, client: &Client) -> (Placement, bool) {
        if let Some(root) = &self.options.content_root {
            return (Placement::Local(ContentRoot::new(root)), true);
        }
        match client.content_root().await {
            Ok(Some(root)) => (Placement::Local(ContentRoot::new(root)), true),
            Ok(None) if self.options.mode == Mode::Stream => (
                Placement::Remote("containerd does not report a content root".into()),
                true,
            ),
            Ok(None) => (proxy_placement(client).await, true),
            Err(e) => (Placement::Remote(e.to_string()), false),
        }
    }

    /// Removes what airlift processes that died left in the content root imports write to and in
    /// containerd: their staged files, ingests and import leases. `airlift import` cleans before
    /// and after its import (a request a dying process had in flight may land after the first
    /// look); the daemon at startup and at every verification.
    pub async fn clean_leftovers(&self, client: &Client) {
        if let Placement::Local(root) = self.placement(client).await {
            crate::leftovers::clean(client.as_ref(), &root).await;
        }
    }
}

/// When containerd's content store is airlift (a content proxy plugin), the store's directory as
/// the serving daemon reports it: imports then write there directly, as into containerd's own
/// content root.
async fn proxy_placement(client: &Client) -> Placement {
    let none = || {
        Placement::Remote(
            "containerd does not report a content root (is its content store a proxy plugin?)"
                .into(),
        )
    };
    let Ok(Some(address)) = client.content_proxy_address().await else {
        return none();
    };
    let Ok(mut api) = crate::api::connect(&address).await else {
        return none();
    };
    match api.status(crate::api::proto::StatusRequest {}).await {
        Ok(s) if !s.get_ref().content_proxy_root.is_empty() => {
            Placement::Local(ContentRoot::new(&s.into_inner().content_proxy_root))
        }
        _ => {
            tracing::info!(address = %crate::escape::shown(&address), "the content proxy plugin does not report its store");
            none()
        }
    }
}
