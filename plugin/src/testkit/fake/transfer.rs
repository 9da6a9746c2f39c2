//! The fake's transfer service: pulls from the registry of [`Fake::add_remote`].

use super::{Blob, Fake};
use crate::containerd::{ContainerdError, Images, Pull, Result, Transfer};
use crate::digest::Digest;
use crate::error::Class;
use std::collections::HashMap;

#[async_trait::async_trait]
impl Transfer for Fake {
    async fn pull(&self, pull: &Pull) -> Result<()> {
        self.enter("pull", pull.reference.clone())?;
        let found = self.state().registry.get(&pull.reference).cloned();
        let Some((target, blobs)) = found else {
            return Err(ContainerdError::call(
                format!("pull {}", pull.reference),
                Class::NotFound,
                "not found in the registry",
            ));
        };
        {
            let mut s = self.state();
            for b in blobs {
                let d = Digest::of(&b);
                s.blobs.entry(d.clone()).or_insert(Blob {
                    data: b,
                    labels: HashMap::new(),
                });
                self.hold(&mut s, &d);
            }
        }
        self.put_image(&target, &pull.labels).await
    }
}
