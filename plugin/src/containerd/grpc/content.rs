//! [`Content`] over containerd's content service.

use super::{unless, Grpc};
use crate::containerd::{
    BlobInfo, Chunk, Chunks, ContainerdError, Content, Labels, Result, Written,
};
use crate::digest::Digest;
use crate::error::Class;
use containerd_client::services::v1 as api;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_stream::StreamExt;

impl Grpc {
    /// One `Write` session: `messages` sent, every answer read to the end of the stream.
    async fn write_session<S>(&self, messages: S) -> std::result::Result<(), tonic::Status>
    where
        S: tokio_stream::Stream<Item = api::WriteContentRequest> + Send + 'static,
    {
        let mut answers = self
            .content()
            .write(self.request(messages))
            .await?
            .into_inner();
        while answers.message().await?.is_some() {}
        Ok(())
    }
}

#[async_trait::async_trait]
impl Content for Grpc {
    async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let r = self
            .content()
            .info(self.request(api::InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        Ok(
            unless(r, Class::NotFound, || format!("content info {digest}"))?.map(|r| {
                let info = r.into_inner().info.unwrap_or_default();
                BlobInfo {
                    size: info.size as u64,
                    labels: info.labels,
                }
            }),
        )
    }

    async fn set_blob_labels(&self, digest: &Digest, labels: &Labels) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(self.request(api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.to_string(),
                    labels: labels.clone().into_iter().collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| ContainerdError::from_status(format!("label blob {digest}"), &s))?;
        Ok(())
    }

    async fn read(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>> {
        let op = || format!("read blob {digest}");
        let mut stream = self
            .content()
            .read(self.request(api::ReadContentRequest {
                digest: digest.to_string(),
                offset: offset as i64,
                size: size as i64,
            }))
            .await
            .map_err(|s| ContainerdError::from_status(op(), &s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| ContainerdError::from_status(op(), &s))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    async fn write(
        &self,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
        chunks: Chunks,
    ) -> Result<Written> {
        let committed = Arc::new(AtomicBool::new(false));
        let mut offset = 0u64;
        let (r, expected_str) = (reference.to_string(), expected.map(|d| d.to_string()));
        let saw_commit = committed.clone();
        let messages = tokio_stream::wrappers::ReceiverStream::new(chunks).map(move |chunk| {
            let mut msg = api::WriteContentRequest {
                r#ref: r.clone(),
                total: total as i64,
                expected: expected_str.clone().unwrap_or_default(),
                ..Default::default()
            };
            match chunk {
                Chunk::Data(data) => {
                    msg.action = api::WriteAction::Write as i32;
                    msg.offset = offset as i64;
                    offset += data.len() as u64;
                    msg.data = data;
                }
                Chunk::Commit(digest) => {
                    msg.action = api::WriteAction::Commit as i32;
                    msg.offset = offset as i64;
                    msg.expected = digest.to_string();
                    saw_commit.store(true, Ordering::Relaxed);
                }
            }
            msg
        });
        let result = self.write_session(messages).await;
        match result {
            Ok(()) if committed.load(Ordering::Relaxed) => Ok(Written::Committed),
            Ok(()) => Ok(Written::Abandoned),
            Err(s) if Class::of_status(&s) == Class::AlreadyExists => Ok(Written::AlreadyExists),
            Err(s) => Err(ContainerdError::from_status(
                format!(
                    "write blob {}",
                    expected.map_or(reference.to_string(), |d| d.to_string())
                ),
                &s,
            )),
        }
    }

    async fn claim(
        &self,
        reference: &str,
        digest: &Digest,
        size: u64,
        labels: &Labels,
    ) -> Result<bool> {
        let msg = |action: api::WriteAction| {
            let commit = action == api::WriteAction::Commit;
            api::WriteContentRequest {
                action: action as i32,
                r#ref: reference.to_string(),
                total: size as i64,
                expected: digest.to_string(),
                // Labels take effect with the commit: one transaction for blob and labels.
                labels: if commit {
                    labels.clone().into_iter().collect()
                } else {
                    HashMap::new()
                },
                // COMMIT at the current offset, so containerd does not truncate the shared blob.
                offset: if commit { size as i64 } else { 0 },
                ..Default::default()
            }
        };
        let reqs = vec![msg(api::WriteAction::Stat), msg(api::WriteAction::Commit)];
        let result = self.write_session(tokio_stream::iter(reqs)).await;
        match result {
            Ok(()) => Ok(true),
            Err(s) if Class::of_status(&s) == Class::AlreadyExists => Ok(false),
            Err(s) => {
                let _ = self.abort(reference).await;
                Err(ContainerdError::from_status(
                    format!("claim blob {digest}"),
                    &s,
                ))
            }
        }
    }

    async fn ingest_refs(&self) -> Result<Vec<String>> {
        let resp = self
            .content()
            .list_statuses(self.request(api::ListStatusesRequest {
                filters: vec!["ref~=^airlift-".into()],
            }))
            .await
            .map_err(|s| ContainerdError::from_status("list ingests", &s))?
            .into_inner();
        Ok(resp.statuses.into_iter().map(|s| s.r#ref).collect())
    }

    async fn abort(&self, reference: &str) -> Result<()> {
        let r = self
            .content()
            .abort(self.request(api::AbortRequest {
                r#ref: reference.to_string(),
            }))
            .await;
        unless(r, Class::NotFound, || format!("abort ingest {reference}")).map(|_| ())
    }
}
