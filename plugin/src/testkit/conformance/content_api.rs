//! The Content API as containerd serves it: the same checks run against containerd's own
//! content service (over its built-in store) and against airlift's [`crate::proxy`], directly
//! and with containerd in front of it, so the proxy's semantics are containerd's by test.

use crate::containerd::Grpc as Containerd;
use crate::digest::Digest;
use containerd_client::services::v1 as api;
use std::collections::HashMap;
use tonic::Code;

type Request = api::WriteContentRequest;

/// One `Write` session.
struct Session {
    tx: tokio::sync::mpsc::Sender<Request>,
    rx: tonic::Streaming<api::WriteContentResponse>,
}

impl Session {
    /// Opens a session with its first message; errors of either step are the session's.
    async fn open(
        c: &Containerd,
        first: Request,
    ) -> Result<(Session, api::WriteContentResponse), tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(first).await.expect("channel open");
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut rx = c.raw_content().write(c.wrap(stream)).await?.into_inner();
        let resp = rx
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("no response"))?;
        Ok((Session { tx, rx }, resp))
    }

    /// Ends the session and waits until the server has ended it too (and released the ref).
    async fn close(self) {
        let Session { tx, mut rx } = self;
        drop(tx);
        while let Ok(Some(_)) = rx.message().await {}
    }

    async fn send(&mut self, req: Request) -> Result<api::WriteContentResponse, tonic::Status> {
        self.tx
            .send(req)
            .await
            .map_err(|_| tonic::Status::unknown("session closed"))?;
        self.rx
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("no response"))
    }
}

fn stat(reference: &str, total: usize, expected: &str) -> Request {
    Request {
        action: api::WriteAction::Stat as i32,
        r#ref: reference.into(),
        total: total as i64,
        expected: expected.into(),
        ..Default::default()
    }
}

fn write(offset: usize, data: &[u8]) -> Request {
    Request {
        action: api::WriteAction::Write as i32,
        offset: offset as i64,
        data: data.to_vec(),
        ..Default::default()
    }
}

fn commit(offset: usize, total: usize, expected: &Digest) -> Request {
    Request {
        action: api::WriteAction::Commit as i32,
        offset: offset as i64,
        total: total as i64,
        expected: expected.to_string(),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

async fn info(c: &Containerd, d: &Digest) -> Result<api::Info, tonic::Status> {
    let r = c
        .raw_content()
        .info(c.wrap(api::InfoRequest {
            digest: d.to_string(),
        }))
        .await?;
    Ok(r.into_inner().info.expect("info"))
}

async fn read(
    c: &Containerd,
    d: &Digest,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c
        .raw_content()
        .read(c.wrap(api::ReadContentRequest {
            digest: d.to_string(),
            offset,
            size,
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        // containerd numbers the chunks of a ranged read from the range's start.
        assert_eq!(
            m.offset as usize,
            out.len(),
            "chunk offset in a read from {offset}"
        );
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}

async fn list(c: &Containerd, filters: &[String]) -> Result<Vec<api::Info>, tonic::Status> {
    let mut s = c
        .raw_content()
        .list(c.wrap(api::ListContentRequest {
            filters: filters.to_vec(),
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(m.info);
    }
    Ok(out)
}

async fn status(c: &Containerd, reference: &str) -> Result<api::Status, tonic::Status> {
    let r = c
        .raw_content()
        .status(c.wrap(api::StatusRequest {
            r#ref: reference.into(),
        }))
        .await?;
    Ok(r.into_inner().status.expect("status"))
}

async fn update(
    c: &Containerd,
    d: &Digest,
    labels: &[(&str, &str)],
    paths: &[&str],
) -> Result<HashMap<String, String>, tonic::Status> {
    let r = c
        .raw_content()
        .update(
            c.wrap(api::UpdateRequest {
                info: Some(api::Info {
                    digest: d.to_string(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
            }),
        )
        .await?;
    Ok(r.into_inner().info.expect("info").labels)
}

/// Runs every check through `c` (whose lease, if any, holds what is written). `what` names
/// the server in failure messages.
pub async fn run(c: &Containerd, what: &str) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let data = super::bytes(3 << 20, seed);
    let d = Digest::of(&data);
    let reference = format!("conformance-{seed}");
    let half = data.len() / 2;

    // The first message must name a ref.
    assert_eq!(
        code(Session::open(c, stat("", 0, "")).await.map(|r| r.1)),
        Code::InvalidArgument,
        "{what}: write without a ref"
    );

    // A new ingest starts at 0; a write moves the offset; one writer per ref.
    let (mut s, r) = Session::open(c, stat(&reference, data.len(), ""))
        .await
        .unwrap();
    assert_eq!(r.offset, 0, "{what}");
    let r = s.send(write(0, &data[..half])).await.unwrap();
    assert_eq!(r.offset as usize, half, "{what}");
    assert_eq!(
        code(Session::open(c, stat(&reference, 0, "")).await.map(|r| r.1)),
        Code::Unavailable,
        "{what}: a second writer on a held ref"
    );
    // A write away from the current offset is refused.
    assert_eq!(
        code(s.send(write(half + 1, &data[half..])).await),
        Code::OutOfRange,
        "{what}: write at the wrong offset"
    );
    drop(s);

    // The ingest stays, with its offset and total, and resumes in a new session.
    let st = status(c, &reference).await.unwrap();
    assert_eq!(
        (st.offset as usize, st.total as usize),
        (half, data.len()),
        "{what}: status of an interrupted ingest"
    );
    let all = c
        .raw_content()
        .list_statuses(c.wrap(api::ListStatusesRequest {
            filters: vec![format!("ref=={reference}")],
        }))
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(all.len(), 1, "{what}: {all:?}");
    let (mut s, r) = loop {
        // The released ref may take a moment to free up (the previous session ends
        // asynchronously on the server).
        match Session::open(c, stat(&reference, 0, "")).await {
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(r.offset as usize, half, "{what}: resumed offset");
    let r = s.send(write(half, &data[half..])).await.unwrap();
    assert_eq!(r.offset as usize, data.len(), "{what}");
    // Commit verifies size and digest.
    let wrong = Digest::of(b"not it");
    assert_eq!(
        code(s.send(commit(data.len(), data.len(), &wrong)).await),
        Code::FailedPrecondition,
        "{what}: commit with the wrong digest"
    );
    let (mut s, r) = Session::open(c, stat(&reference, 0, "")).await.unwrap();
    assert_eq!(
        r.offset as usize,
        data.len(),
        "{what}: ingest after a failed commit"
    );
    assert_eq!(
        code(s.send(commit(data.len(), data.len() + 1, &d)).await),
        Code::FailedPrecondition,
        "{what}: commit with the wrong size"
    );
    let (mut s, _) = Session::open(c, stat(&reference, 0, "")).await.unwrap();
    let mut done = commit(data.len(), data.len(), &d);
    done.labels
        .insert("example.com/conformance".into(), seed.to_string());
    let r = s.send(done).await.unwrap();
    assert_eq!(r.digest, d.to_string(), "{what}: committed digest");
    s.close().await;
    assert_eq!(
        code(status(c, &reference).await),
        Code::NotFound,
        "{what}: ingest after commit"
    );

    // The blob: info with the commit's labels, ranged reads, filters.
    let i = info(c, &d).await.unwrap();
    assert_eq!(i.size as usize, data.len(), "{what}");
    assert_eq!(
        i.labels.get("example.com/conformance"),
        Some(&seed.to_string()),
        "{what}: commit labels"
    );
    assert_eq!(read(c, &d, 0, 0).await.unwrap(), data, "{what}: whole read");
    assert_eq!(
        read(c, &d, 1000, 5000).await.unwrap(),
        &data[1000..6000],
        "{what}: ranged read"
    );
    assert_eq!(
        read(c, &d, half as i64, 0).await.unwrap(),
        &data[half..],
        "{what}: read to the end"
    );
    assert_eq!(
        code(read(c, &d, data.len() as i64 + 1, 0).await),
        Code::OutOfRange,
        "{what}: read past the end"
    );
    let found = list(c, &[format!("labels.\"example.com/conformance\"=={seed}")])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{what}: filtered list {found:?}");
    assert_eq!(found[0].digest, d.to_string(), "{what}");
    let found = list(
        c,
        &[
            format!("labels.\"example.com/conformance\"=={seed},digest=={wrong}"),
            format!("digest=={d}"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1, "{what}: OR of filters {found:?}");
    assert_eq!(
        code(list(c, &["labels.\"unterminated".to_string()]).await),
        Code::InvalidArgument,
        "{what}: a bad filter"
    );

    // Writing what is there: AlreadyExists.
    assert_eq!(
        code(
            Session::open(
                c,
                stat(&format!("{reference}-again"), data.len(), &d.to_string())
            )
            .await
            .map(|r| r.1)
        ),
        Code::AlreadyExists,
        "{what}: writer for a present blob"
    );

    // Labels: one key, all keys, removal; other fields refused.
    let l = update(c, &d, &[("example.com/a", "1")], &["labels.example.com/a"])
        .await
        .unwrap();
    assert_eq!(l.len(), 2, "{what}: {l:?}");
    let l = update(c, &d, &[("example.com/b", "2")], &["labels"])
        .await
        .unwrap();
    assert_eq!(
        l,
        HashMap::from([("example.com/b".to_string(), "2".to_string())]),
        "{what}"
    );
    let l = update(c, &d, &[], &["labels.example.com/b"]).await.unwrap();
    assert!(l.is_empty(), "{what}: {l:?}");
    assert_eq!(
        code(update(c, &d, &[], &["size"]).await),
        Code::InvalidArgument,
        "{what}: updating the size"
    );
    assert_eq!(info(c, &d).await.unwrap().labels, HashMap::new(), "{what}");

    // Abort and delete; missing things are NotFound.
    let other = format!("{reference}-abort");
    let (mut s, _) = Session::open(c, stat(&other, 0, "")).await.unwrap();
    s.send(write(0, b"partial")).await.unwrap();
    s.close().await;
    let abort = |r: &str| {
        let req = c.wrap(api::AbortRequest { r#ref: r.into() });
        async move { c.raw_content().abort(req).await }
    };
    abort(&other).await.unwrap();
    assert_eq!(code(status(c, &other).await), Code::NotFound, "{what}");
    assert_eq!(
        code(abort(&other).await),
        Code::NotFound,
        "{what}: abort twice"
    );
    let delete = || {
        let req = c.wrap(api::DeleteContentRequest {
            digest: d.to_string(),
        });
        async move { c.raw_content().delete(req).await }
    };
    delete().await.unwrap();
    assert_eq!(code(info(c, &d).await), Code::NotFound, "{what}: deleted");
    assert_eq!(code(delete().await), Code::NotFound, "{what}: delete twice");
    assert_eq!(code(read(c, &d, 0, 0).await), Code::NotFound, "{what}");
}
