//! Proxy: containerd's content service (`containerd.services.content.v1.Content`) served from a
//! [`LocalStore`], so containerd can load airlift as its content proxy plugin.
//!
//! The semantics are those of containerd's own content service over its local store: one writer
//! per ref (another gets `Unavailable`), resumable ingests, size and digest verified at commit
//! (`FailedPrecondition`), `AlreadyExists` for a blob that is there, `NotFound`,
//! `InvalidArgument` for malformed requests and filters, `OutOfRange` for a write away from the
//! ingest's offset or a read past the end. Stats and reads the page cache can answer run in
//! place (containerd reads 32 KiB per call); everything that may wait for the disk runs on
//! blocking threads. Reads stream in 1 MiB chunks.

use crate::digest::Digest;
use crate::error::Class;
use crate::filters::Filter;
use crate::store::local::{BlobInfo, IngestStatus, LocalError, LocalStore, Writer};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Generated from `proto/containerd/services/content/v1/content.proto`.
#[allow(missing_docs, clippy::all)]
pub mod api {
    tonic::include_proto!("containerd.services.content.v1");
}

use api::content_server::{Content, ContentServer};

/// Bytes per `Read` response message.
const READ_CHUNK: usize = 1 << 20;

/// Blobs per `List` response message.
const LIST_BATCH: usize = 100;

/// The largest message containerd sends (its default gRPC limit).
pub const MAX_MESSAGE: usize = 16 << 20;

fn timestamp(t: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(t))
}

fn info(i: BlobInfo) -> api::Info {
    api::Info {
        digest: i.digest.to_string(),
        size: i.size as i64,
        created_at: timestamp(i.created),
        updated_at: timestamp(i.updated),
        labels: i.labels,
    }
}

fn status(s: &IngestStatus) -> api::Status {
    api::Status {
        started_at: timestamp(s.started),
        updated_at: timestamp(s.updated),
        r#ref: s.reference.clone(),
        offset: s.offset as i64,
        total: s.total as i64,
        expected: String::new(),
    }
}

fn filter(filters: &[String]) -> Result<Filter, Status> {
    Filter::parse(filters).map_err(|e| Class::InvalidArgument.status(e.to_string()))
}

fn size(n: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(n).map_err(|_| Class::InvalidArgument.status(format!("negative {what} {n}")))
}

/// Runs long filesystem work (a directory walk) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LocalError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Class::Internal.status(format!("content store task failed: {e}"))),
    }
}

/// The content service over one local store.
#[derive(Clone)]
pub struct ContentService {
    store: LocalStore,
}

impl ContentService {
    /// Serves `store`.
    pub fn new(store: LocalStore) -> ContentService {
        ContentService { store }
    }

    /// The tonic service, accepting containerd's message sizes.
    pub fn into_server(self) -> ContentServer<ContentService> {
        ContentServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One Write session's state between messages.
struct Session {
    store: LocalStore,
    writer: Option<Writer>,
    reference: String,
    total: u64,
    expected: Option<Digest>,
}

impl Session {
    /// Handles one request (on a blocking thread), returning the response.
    fn handle(
        &mut self,
        req: api::WriteContentRequest,
    ) -> Result<api::WriteContentResponse, Status> {
        if !req.r#ref.is_empty() && req.r#ref != self.reference {
            return Err(Class::InvalidArgument.status(format!(
                "ref {:?} differs from the session's ref {:?}",
                req.r#ref, self.reference
            )));
        }
        if !req.expected.is_empty() {
            let expected = LocalStore::parse_digest(&req.expected)?;
            if self.store.info(&expected).is_ok() {
                if let Some(w) = self.writer.take() {
                    w.abort();
                }
                return Err(Class::AlreadyExists
                    .status(format!("blob with expected digest {expected} exists")));
            }
            self.expected = Some(expected);
        }
        if req.total > 0 {
            self.total = req.total as u64;
        }
        let action = api::WriteAction::try_from(req.action)
            .map_err(|_| Class::InvalidArgument.status(format!("unknown action {}", req.action)))?;
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Class::FailedPrecondition.status("the writer was closed"))?;
        let mut resp = api::WriteContentResponse {
            action: req.action,
            offset: w.status().offset as i64,
            ..Default::default()
        };
        match action {
            api::WriteAction::Stat => {
                let st = w.status();
                resp.digest = w.digest().to_string();
                resp.started_at = timestamp(st.started);
                resp.updated_at = timestamp(st.updated);
                resp.total = self.total as i64;
            }
            api::WriteAction::Write | api::WriteAction::Commit => {
                let offset = size(req.offset, "offset")?;
                let current = w.status().offset;
                if offset > 0 && offset != current {
                    return Err(LocalError::new(
                        Class::OutOfRange,
                        format!("write @{offset} must occur at current offset {current}"),
                    )
                    .into());
                }
                if offset == 0 && current > 0 {
                    w.restart()?;
                }
                if !req.data.is_empty() {
                    w.write(&req.data)?;
                }
                resp.offset = w.status().offset as i64;
                if action == api::WriteAction::Commit {
                    let d =
                        w.commit(&self.store, self.total, self.expected.as_ref(), &req.labels)?;
                    resp.digest = d.to_string();
                    self.writer = None;
                } else {
                    resp.digest = w.digest().to_string();
                }
            }
        }
        Ok(resp)
    }
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        req: Request<api::InfoRequest>,
    ) -> Result<Response<api::InfoResponse>, Status> {
        let d = LocalStore::parse_digest(&req.get_ref().digest)?;
        // A stat, answered in place: a trip to the blocking pool would cost more than the work.
        let i = self.store.info(&d)?;
        Ok(Response::new(api::InfoResponse {
            info: Some(info(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateRequest>,
    ) -> Result<Response<api::UpdateResponse>, Status> {
        let req = req.into_inner();
        let i = req
            .info
            .ok_or_else(|| Class::InvalidArgument.status("update without info"))?;
        let d = LocalStore::parse_digest(&i.digest)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let store = self.store.clone();
        let updated = blocking(move || store.update(&d, &i.labels, &paths)).await?;
        Ok(Response::new(api::UpdateResponse {
            info: Some(info(updated)),
        }))
    }

    type ListStream = BoxStream<api::ListContentResponse>;

    async fn list(
        &self,
        req: Request<api::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let f = filter(&req.get_ref().filters)?;
        let store = self.store.clone();
        let all = blocking(move || store.list(&f)).await?;
        let batches: Vec<Result<api::ListContentResponse, Status>> = all
            .chunks(LIST_BATCH)
            .map(|c| {
                Ok(api::ListContentResponse {
                    info: c.iter().cloned().map(info).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(
        &self,
        req: Request<api::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        let d = LocalStore::parse_digest(&req.get_ref().digest)?;
        let store = self.store.clone();
        blocking(move || store.delete(&d)).await?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<api::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<api::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = req.into_inner();
        let d = LocalStore::parse_digest(&req.digest)?;
        let (file, len) = self.store.open_blob(&d)?;
        let offset = req.offset.max(0) as u64;
        if offset > len {
            return Err(LocalError::new(
                Class::OutOfRange,
                format!("read past object length {len} bytes"),
            )
            .into());
        }
        let want = req.size.max(0) as u64;
        let end = if want == 0 || offset + want > len {
            len
        } else {
            offset + want
        };
        // One chunk of the range; chunks are numbered from the range's start, as containerd does.
        let chunk = move |file: &std::fs::File, at: u64| {
            let mut data = vec![0u8; READ_CHUNK.min((end - at) as usize)];
            file.read_exact_at(&mut data, at)
                .map(|()| api::ReadContentResponse {
                    offset: (at - offset) as i64,
                    data: data.into(),
                })
                .map_err(|e| Class::Internal.status(format!("reading content {d}: {e}")))
        };
        if end - offset <= READ_CHUNK as u64 {
            // The common case (containerd's readers ask for 32 KiB at a time): one chunk, read in
            // place when the page cache has it all; otherwise on the blocking pool, so a slow
            // disk never stalls the socket.
            let mut data = vec![0u8; (end - offset) as usize];
            let one = if data.is_empty() {
                None
            } else if crate::sys::read_cached(&file, &mut data, offset) == data.len() {
                Some(Ok(api::ReadContentResponse {
                    offset: 0,
                    data: data.into(),
                }))
            } else {
                Some(
                    tokio::task::spawn_blocking(move || chunk(&file, offset))
                        .await
                        .map_err(|e| Class::Internal.status(e.to_string()))?,
                )
            };
            return Ok(Response::new(Box::pin(tokio_stream::iter(one))));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let mut at = offset;
            while at < end {
                let msg = chunk(&file, at);
                let failed = msg.is_err();
                let n = msg.as_ref().map_or(0, |m| m.data.len() as u64);
                if tx.blocking_send(msg).is_err() || failed {
                    return;
                }
                at += n;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn status(
        &self,
        req: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        let s = blocking(move || store.status(&reference)).await?;
        Ok(Response::new(api::StatusResponse {
            status: Some(status(&s)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<api::ListStatusesRequest>,
    ) -> Result<Response<api::ListStatusesResponse>, Status> {
        let f = filter(&req.get_ref().filters)?;
        let store = self.store.clone();
        let all = blocking(move || store.list_statuses(&f)).await?;
        Ok(Response::new(api::ListStatusesResponse {
            statuses: all.iter().map(status).collect(),
        }))
    }

    type WriteStream = BoxStream<api::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<api::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let mut incoming = req.into_inner();
        let Some(first) = incoming.message().await? else {
            return Ok(Response::new(Box::pin(tokio_stream::empty())));
        };
        if first.r#ref.is_empty() {
            return Err(Class::InvalidArgument.status("first message must have a reference"));
        }
        let total = size(first.total, "total")?;
        let expected = match first.expected.as_str() {
            "" => None,
            e => Some(LocalStore::parse_digest(e)?),
        };
        let store = self.store.clone();
        let reference = first.r#ref.clone();
        let (writer, store) = blocking(move || {
            let w = store.writer(&reference, total, expected.as_ref())?;
            Ok((w, store))
        })
        .await?;
        let mut session = Session {
            store,
            writer: Some(writer),
            reference: first.r#ref.clone(),
            total,
            expected: None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut next = Some(first);
            while let Some(req) = next.take() {
                let (s, result) = match tokio::task::spawn_blocking(move || {
                    let r = session.handle(req);
                    (session, r)
                })
                .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx
                            .send(Err(
                                Class::Internal.status(format!("write task failed: {e}"))
                            ))
                            .await;
                        return;
                    }
                };
                session = s;
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    return;
                }
                // A broken stream ends the session like a closed one.
                next = incoming.message().await.ok().flatten();
            }
            // The session's end releases the ref; the ingest stays for a later resume.
            drop(session);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn abort(&self, req: Request<api::AbortRequest>) -> Result<Response<()>, Status> {
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        blocking(move || store.abort(&reference)).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::Grpc;
    use crate::store::stream::StreamStore;
    use crate::testkit::conformance;
    use std::sync::Arc;

    /// The service over a real socket, checked by the Content API suite (the one containerd's
    /// own store passes end to end) and by the store suite through the streaming store.
    #[test]
    fn serves_containerds_content_api() {
        let rt = crate::testing::runtime();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("content")).unwrap();
        let socket = dir.path().join("content.sock");
        let client = rt.block_on(async {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let service = ContentService::new(store.clone()).into_server();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            );
            Grpc::connect(&socket, "proxy-test", std::time::Duration::from_secs(5))
                .await
                .unwrap()
        });
        rt.block_on(conformance::content_api::run(
            &client,
            "airlift's content service",
        ));
        let stream = StreamStore::new(Arc::new(client), rt.handle().clone(), "airlift-p".into());
        rt.block_on(async {
            tokio::task::spawn_blocking(move || conformance::run(&stream))
                .await
                .unwrap()
        });
        // The ingests of failed writes were aborted: nothing is left in the store's ingest dir.
        let all = Filter::parse::<&str>(&[]).unwrap();
        assert!(store.list_statuses(&all).unwrap().is_empty());
    }

    #[test]
    fn store_errors_keep_their_class_on_the_wire() {
        for (e, code) in [
            (LocalError::not_found("content x"), tonic::Code::NotFound),
            (
                LocalError::already_exists("content x"),
                tonic::Code::AlreadyExists,
            ),
            (
                LocalError::invalid_argument("bad"),
                tonic::Code::InvalidArgument,
            ),
            (
                LocalError::new(Class::OutOfRange, "far"),
                tonic::Code::OutOfRange,
            ),
            (
                LocalError::new(Class::Unavailable, "locked"),
                tonic::Code::Unavailable,
            ),
        ] {
            let msg = e.to_string();
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, msg.as_str()));
        }
    }
}
