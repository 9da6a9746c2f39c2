//! The `proxy_write` target: the content proxy's `Write` streams against a model of what each
//! request must answer.

use super::WRITE_OPS;
use crate::digest::Digest;
use crate::filters::Filter;
use crate::proxy::api::content_server::Content;
use crate::proxy::{api, ContentService, MAX_MESSAGE};
use crate::store::layout::ContentRoot;
use crate::store::local::{writer, LocalStore};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;

/// The refs a [`proxy_write`] input writes to.
const REFS: [&str; 3] = ["fuzz-ref-a", "fuzz-ref-b", "fuzz/ref c"];

/// The fuzz input, read a field at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken.to_vec()
    }

    fn string(&mut self) -> String {
        let n = (self.byte() % 8) as usize;
        String::from_utf8_lossy(&self.take(n)).into_owned()
    }
}

/// What a request must get back, as far as the model knows.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// A response.
    Ok,
    /// An error of this code.
    Code(tonic::Code),
    /// Some error.
    AnyError,
}

/// The model of one open Write stream.
struct Session {
    requests: tokio::sync::mpsc::Sender<
        Result<hyper::body::Frame<hyper::body::Bytes>, std::convert::Infallible>,
    >,
    responses: <ContentService as Content>::WriteStream,
    /// The bytes its writer holds (`None` once committed).
    content: Option<Vec<u8>>,
    total: u64,
    expected: Option<Digest>,
    /// Its ingest was aborted under it: its bytes have nowhere to go.
    orphaned: bool,
}

fn frame(
    req: &api::WriteContentRequest,
) -> Result<hyper::body::Frame<hyper::body::Bytes>, std::convert::Infallible> {
    let body = prost::Message::encode_to_vec(req);
    let mut buf = Vec::with_capacity(5 + body.len());
    buf.push(0);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    Ok(hyper::body::Frame::data(buf.into()))
}

/// The bytes a writer on `reference` resumes with: the ingest's data when the store's writer
/// resumes it ([`writer::resumes`]).
fn resumable(root: &ContentRoot, reference: &str, total: u64) -> Vec<u8> {
    let dir = root.ingest(reference);
    match writer::read_status(&dir) {
        Ok(status) if writer::resumes(&status, reference, total) => {
            std::fs::read(dir.join("data")).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Builds a request from the input for a session whose writer holds `content`: offsets, totals
/// and expected digests are chosen right or wrong for it.
fn request(
    input: &mut Input,
    action: i32,
    reference: &str,
    content: &[u8],
    blobs: &BTreeSet<Digest>,
) -> api::WriteContentRequest {
    let flags = input.byte();
    let data_len = input.byte() as usize;
    let data = if action == api::WriteAction::Stat as i32 {
        Vec::new()
    } else {
        input.take(data_len)
    };
    let after = if flags & 0x30 == 0 {
        [content, &data[..]].concat()
    } else {
        data.clone()
    };
    let offset = match flags & 0x30 {
        0x00 => content.len() as i64,
        0x10 => 0,
        0x20 => content.len() as i64 + 1 + (input.byte() % 4) as i64,
        _ => -1 - (input.byte() % 2) as i64 * content.len() as i64,
    };
    let total = match flags & 0x0c {
        0x00 => 0,
        0x04 => after.len() as i64,
        0x08 => after.len() as i64 + 1,
        _ => -1,
    };
    let expected = match (flags >> 6) & 3 {
        0 => String::new(),
        1 => Digest::of(&after).to_string(),
        2 => match blobs.iter().nth(input.byte() as usize % blobs.len().max(1)) {
            Some(d) => d.to_string(),
            None => Digest::of(b"absent").to_string(),
        },
        _ => ["sha256:x", "sha512:00", "", "SHA256:"][input.byte() as usize % 4].to_string(),
    };
    let mut labels = HashMap::new();
    if action == api::WriteAction::Commit as i32 && flags & 1 == 1 {
        for _ in 0..(input.byte() % 3) {
            labels.insert(input.string(), input.string());
        }
    }
    let r#ref = match flags & 2 {
        0 => reference.to_string(),
        _ => {
            [String::new(), REFS[0].to_string(), input.string()][input.byte() as usize % 3].clone()
        }
    };
    api::WriteContentRequest {
        action,
        r#ref,
        total,
        expected,
        offset,
        data: data.into(),
        labels,
    }
}

/// The harness of one [`proxy_write`] input.
struct Harness {
    service: ContentService,
    store: LocalStore,
    sessions: [Option<Session>; 3],
    /// Every blob committed so far.
    blobs: BTreeSet<Digest>,
}

/// Waits for a stream's end, so that its session (and the ref it holds) is gone.
async fn drain(mut s: Session) {
    use tokio_stream::StreamExt;
    drop(s.requests);
    while s.responses.next().await.is_some() {}
}

impl Harness {
    fn blob_exists(&self, d: &Digest) -> bool {
        self.store.root().blob(d).exists()
    }

    /// What handling `q` must answer, applying it to the model of `slot`'s session.
    fn expect(&mut self, slot: usize, q: &api::WriteContentRequest) -> Expect {
        use tonic::Code;
        let reference = REFS[slot];
        if !q.r#ref.is_empty() && q.r#ref != reference {
            return Expect::Code(Code::InvalidArgument);
        }
        let mut expected = self.sessions[slot]
            .as_ref()
            .and_then(|s| s.expected.clone());
        if !q.expected.is_empty() {
            let Ok(d) = q.expected.parse::<Digest>() else {
                return Expect::Code(Code::InvalidArgument);
            };
            if self.blob_exists(&d) {
                return Expect::Code(Code::AlreadyExists);
            }
            expected = Some(d);
        }
        let exists = |d: &Digest| self.store.root().blob(d).exists();
        let s = self.sessions[slot].as_mut().expect("a session");
        s.expected = expected;
        if q.total > 0 {
            s.total = q.total as u64;
        }
        if !(0..=2).contains(&q.action) {
            return Expect::Code(Code::InvalidArgument);
        }
        let Some(content) = s.content.as_mut() else {
            return Expect::Code(Code::FailedPrecondition);
        };
        if q.action == api::WriteAction::Stat as i32 {
            return Expect::Ok;
        }
        if q.offset < 0 {
            return Expect::Code(Code::InvalidArgument);
        }
        if q.offset > 0 && q.offset as u64 != content.len() as u64 {
            return Expect::Code(Code::OutOfRange);
        }
        if q.offset == 0 {
            content.clear();
        }
        content.extend_from_slice(&q.data);
        if q.action == api::WriteAction::Write as i32 {
            return Expect::Ok;
        }
        let digest = Digest::of(content);
        if (s.total > 0 && s.total != content.len() as u64)
            || s.expected.as_ref().is_some_and(|e| *e != digest)
        {
            return Expect::Code(Code::FailedPrecondition);
        }
        if s.orphaned {
            return Expect::AnyError;
        }
        if exists(&digest) {
            return Expect::Code(Code::AlreadyExists);
        }
        Expect::Ok
    }

    /// Sends `q` on `slot`'s stream (opening one when there is none) and checks the answer.
    async fn send(&mut self, slot: usize, mut q: api::WriteContentRequest) {
        use tokio_stream::StreamExt;
        let reference = REFS[slot];
        if self.sessions[slot].is_none() {
            // A stream is for its first message's ref: this slot's (or none, refused).
            if !q.r#ref.is_empty() {
                q.r#ref = reference.into();
            }
            // The first message opens the writer: these refusals come before any response.
            let refused = if q.r#ref.is_empty() || q.total < 0 {
                Some(tonic::Code::InvalidArgument)
            } else if q.expected.is_empty() {
                None
            } else {
                match q.expected.parse::<Digest>() {
                    Err(_) => Some(tonic::Code::InvalidArgument),
                    Ok(d) if self.blob_exists(&d) => Some(tonic::Code::AlreadyExists),
                    Ok(_) => None,
                }
            };
            let content = resumable(self.store.root(), &q.r#ref, q.total.max(0) as u64);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.try_send(frame(&q)).expect("an empty channel");
            let body =
                http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            let streaming = tonic::Streaming::new_request(
                tonic_prost::ProstDecoder::<api::WriteContentRequest>::default(),
                body,
                None,
                Some(MAX_MESSAGE),
            );
            let opened = self.service.write(tonic::Request::new(streaming)).await;
            match (opened, refused) {
                (Err(status), Some(code)) => {
                    assert_eq!(status.code(), code, "opening {reference:?}: {status:?}");
                    return;
                }
                (Err(status), None) => panic!("opening {reference:?} with {q:?}: {status:?}"),
                (Ok(_), Some(code)) => panic!("opening {reference:?} with {q:?}: not {code:?}"),
                (Ok(response), None) => {
                    self.sessions[slot] = Some(Session {
                        requests: tx,
                        responses: response.into_inner(),
                        content: Some(content),
                        total: q.total.max(0) as u64,
                        expected: None,
                        orphaned: false,
                    });
                }
            }
        } else {
            let s = self.sessions[slot].as_ref().expect("a session");
            if s.requests.send(frame(&q)).await.is_err() {
                panic!("the Write stream of {reference:?} stopped reading");
            }
        }
        let before = self.sessions[slot].as_ref().and_then(|s| s.content.clone());
        let want = self.expect(slot, &q);
        let s = self.sessions[slot].as_mut().expect("a session");
        let got = s.responses.next().await;
        let got = got.unwrap_or_else(|| panic!("{reference:?}: no answer to {q:?}"));
        match (got, want) {
            (Ok(resp), Expect::Ok) => {
                let content = s.content.clone().expect("an open writer");
                assert_eq!(resp.action, q.action);
                assert_eq!(resp.offset, content.len() as i64, "{reference:?} offset");
                assert_eq!(
                    resp.digest,
                    Digest::of(&content).to_string(),
                    "{reference:?}"
                );
                if q.action == api::WriteAction::Stat as i32 {
                    assert_eq!(resp.total, s.total as i64);
                }
                if q.action == api::WriteAction::Commit as i32 {
                    s.content = None;
                    self.committed(reference, &content, &q.labels);
                }
            }
            (Err(status), Expect::Code(code)) if status.code() == code => self.end(slot).await,
            (Err(_), Expect::AnyError) => self.end(slot).await,
            (got, want) => panic!(
                "{reference:?}: {q:?} on {:?} bytes got {got:?}, expected {want:?}",
                before.map(|b| b.len())
            ),
        }
    }

    /// Checks a blob just committed from `content`.
    fn committed(&mut self, reference: &str, content: &[u8], labels: &HashMap<String, String>) {
        let d = Digest::of(content);
        let on_disk = std::fs::read(self.store.root().blob(&d));
        assert!(
            on_disk.as_deref().is_ok_and(|b| b == content),
            "committed blob {d} does not hold what was written"
        );
        assert!(
            !self.store.root().ingest(reference).exists(),
            "the ingest of {reference:?} outlived its commit"
        );
        if !labels.is_empty() {
            let info = self.store.info(&d).expect("a committed blob");
            assert_eq!(&info.labels, labels, "labels of {d}");
        }
        self.blobs.insert(d);
    }

    /// Ends `slot`'s stream from the client's side and waits until the session is gone.
    async fn end(&mut self, slot: usize) {
        if let Some(s) = self.sessions[slot].take() {
            drain(s).await;
        }
    }

    /// The Abort call on `slot`'s ref.
    async fn abort(&mut self, slot: usize) {
        let reference = REFS[slot];
        let existed = self.store.root().ingest(reference).exists();
        let r = self
            .service
            .abort(tonic::Request::new(api::AbortRequest {
                r#ref: reference.into(),
            }))
            .await;
        match r {
            Ok(_) => assert!(existed, "aborted {reference:?}, which had no ingest"),
            Err(s) => {
                assert!(!existed, "aborting {reference:?}: {s:?}");
                assert_eq!(s.code(), tonic::Code::NotFound);
            }
        }
        if let Some(s) = self.sessions[slot].as_mut() {
            s.orphaned |= existed;
        }
    }

    /// The Status call on `slot`'s ref: an open, unaborted session's bytes are on disk.
    async fn status(&mut self, slot: usize) {
        let reference = REFS[slot];
        let r = self
            .service
            .status(tonic::Request::new(api::StatusRequest {
                r#ref: reference.into(),
            }))
            .await;
        let dir = self.store.root().ingest(reference);
        match r {
            Ok(resp) => {
                let st = resp.into_inner().status.expect("a status");
                assert_eq!(st.r#ref, reference);
                let data = std::fs::read(dir.join("data")).unwrap_or_default();
                assert_eq!(st.offset, data.len() as i64);
                if let Some(Session {
                    content: Some(c),
                    orphaned: false,
                    ..
                }) = &self.sessions[slot]
                {
                    assert_eq!(
                        &data, c,
                        "{reference:?}: the ingest's data is not the writer's"
                    );
                }
            }
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::NotFound, "{reference:?}: {s:?}");
                assert!(!dir.join("data").exists(), "{reference:?}: {s:?}");
            }
        }
    }

    /// Every blob in the store hashes to its name, and they are exactly those committed.
    fn check_blobs(&self) {
        let mut found = BTreeSet::new();
        for e in std::fs::read_dir(self.store.root().blobs()).expect("the blobs directory") {
            let e = e.expect("a directory entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let d = Digest::from_hex(&name).unwrap_or_else(|| panic!("stray file {name:?}"));
            let bytes = std::fs::read(e.path()).expect("a blob");
            assert_eq!(
                Digest::of(&bytes),
                d,
                "blob {name} does not hash to its name"
            );
            found.insert(d);
        }
        assert_eq!(
            found, self.blobs,
            "the blobs on disk are not those committed"
        );
        let listed = self
            .store
            .list(&Filter::parse::<&str>(&[]).expect("no filter"));
        let listed: BTreeSet<Digest> = listed
            .expect("a listing")
            .into_iter()
            .map(|i| i.digest)
            .collect();
        assert_eq!(listed, self.blobs);
    }
}

/// A directory for a store: on tmpfs when there is one (commits fsync).
fn store_dir() -> io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("airlift-fuzz")
            .tempdir_in(shm)
        {
            return Ok(d);
        }
    }
    tempfile::Builder::new().prefix("airlift-fuzz").tempdir()
}

/// Bytes as a sequence of operations on the content proxy's Write streams over three refs (each
/// operation's first byte: bits 0-2 the operation, the rest the ref): a request (STAT, WRITE,
/// COMMIT or an unknown action, with offset, total, expected digest, labels and ref chosen by the
/// next bytes), the end of a stream, the Abort call, the Status call, or a check of every blob.
pub fn proxy_write(data: &[u8]) {
    let Ok(dir) = store_dir() else {
        return;
    };
    let Ok(store) = LocalStore::open(&dir.path().join("content")) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut h = Harness {
        service: ContentService::new(store.clone()),
        store,
        sessions: [None, None, None],
        blobs: BTreeSet::new(),
    };
    runtime.block_on(async {
        let mut input = Input(data);
        for _ in 0..WRITE_OPS {
            if input.0.is_empty() {
                break;
            }
            let op = input.byte();
            let slot = (op >> 3) as usize % REFS.len();
            match op & 7 {
                action @ 0..=3 => {
                    let action = if action == 3 { 7 } else { action as i32 };
                    let content = match &h.sessions[slot] {
                        Some(s) => s.content.clone().unwrap_or_default(),
                        None => resumable(h.store.root(), REFS[slot], 0),
                    };
                    let q = request(&mut input, action, REFS[slot], &content, &h.blobs);
                    h.send(slot, q).await;
                }
                4 => h.end(slot).await,
                5 => h.abort(slot).await,
                6 => h.status(slot).await,
                _ => h.check_blobs(),
            }
        }
        for slot in 0..REFS.len() {
            h.end(slot).await;
        }
        h.check_blobs();
    });
    drop(runtime);
    drop(h);
    drop(dir);
}
