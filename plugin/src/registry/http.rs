//! HTTP/1.1 framing of the registry endpoint: request heads read with limits and a deadline,
//! responses written with their body — bytes, a file of the content root sent with `sendfile`
//! (plain TCP) or read in chunks (TLS), or a blob streamed through containerd's Content API.
//!
//! The endpoint frames HTTP itself (with `httparse`, hyper's parser) rather than through hyper
//! because hyper's bodies are buffers it copies into the socket: it cannot hand the socket to
//! `sendfile`, and serving blobs from the page cache without a copy through user space is the
//! point. Only what a read-only registry needs is here: `GET`/`HEAD` with keep-alive and
//! pipelining; a request that carries a body (any write) is answered and the connection closed,
//! its body never read.

use crate::containerd::Client;
use crate::digest::Digest;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 << 10;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Longest request target (path and query).
pub const MAX_TARGET: usize = 2048;
/// How long a client has to send a whole request head, counted from when the endpoint starts
/// waiting for it (after the previous response, on a kept-alive connection): what keeps slow or
/// idle clients from holding connections.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may make no progress (a client that stopped reading) before the
/// connection is dropped.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes handed to one `sendfile` or one Content API read.
const CHUNK: u64 = 1 << 20;
/// Bytes of a file read at a time for a TLS connection.
const TLS_CHUNK: usize = 256 << 10;

/// A client connection: plain TCP or TLS over it.
pub enum Conn {
    /// Plain HTTP: blobs go out with `sendfile`.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, as sent.
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// The query, without `?` (empty when none).
    pub query: String,
    headers: Vec<(String, String)>,
    /// The connection ends after the response: the client asked for it, spoke HTTP/1.0
    /// without keep-alive, or sent a body (which is never read).
    pub close: bool,
}

impl Request {
    /// The first header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's first value, not percent-decoded (the caller decodes what may come
    /// escaped: containerd sends `ns=localhost%3A5000`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A request for tests.
    #[cfg(test)]
    pub fn new(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            close: false,
        }
    }
}

/// What reading a request head gave.
#[derive(Debug)]
pub enum Head {
    /// A request.
    Request(Request),
    /// The client closed the connection, or sent nothing in time: end it.
    Closed,
    /// A request that cannot be parsed: answer with this status and end the connection.
    Bad(u16),
}

fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let target = req.path.unwrap_or("");
    if target.len() > MAX_TARGET {
        return Err(414);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(v) = std::str::from_utf8(h.value) else {
            return Err(400);
        };
        headers.push((h.name.to_string(), v.trim().to_string()));
    }
    let mut r = Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        close: false,
    };
    let connection = r.header("connection").unwrap_or("").to_ascii_lowercase();
    let has_body = r.header("transfer-encoding").is_some()
        || r.header("content-length").is_some_and(|l| l.trim() != "0");
    r.close = connection.contains("close")
        || (req.version == Some(0) && !connection.contains("keep-alive"))
        || has_body;
    Ok(Some((r, n)))
}

/// Reads the next request head into `buf` (which keeps what follows it: pipelined requests),
/// within [`HEAD_TIMEOUT`].
pub async fn read_head(conn: &mut Conn, buf: &mut Vec<u8>) -> Head {
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok(Some((r, n))) => {
                    buf.drain(..n);
                    return Head::Request(r);
                }
                Ok(None) => {}
                Err(status) => return Head::Bad(status),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Head::Bad(431);
        }
        let want = chunk.len().min(MAX_HEAD - buf.len());
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk[..want])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if buf.is_empty() => return Head::Closed,
            Err(_) => return Head::Bad(408),
        }
    }
}

/// A response body.
pub enum Body {
    /// Nothing.
    Empty,
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` bytes of a file from `offset`.
    File {
        /// The open file.
        file: std::fs::File,
        /// First byte.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
    /// `len` bytes of a blob from `offset`, read through containerd's Content API.
    Api {
        /// The connection to containerd.
        client: Client,
        /// The blob.
        digest: Digest,
        /// First byte.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
}

impl Body {
    /// Its length.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } | Body::Api { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A response.
pub struct Response {
    /// The status.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// The body (not sent for `HEAD`, though its length is).
    pub body: Body,
}

impl Response {
    /// A response with no headers yet.
    pub fn new(status: u16, body: Body) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// A header's value, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")
}

async fn write_all(conn: &mut Conn, data: &[u8]) -> io::Result<()> {
    tokio::time::timeout(
        STALL_TIMEOUT.max(Duration::from_secs(data.len() as u64 >> 20)),
        async {
            conn.write_all(data).await?;
            conn.flush().await
        },
    )
    .await
    .map_err(|_| stalled())?
}

/// Writes `resp` (only its head when `head_only`); the body bytes sent.
pub async fn write(
    conn: &mut Conn,
    resp: Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<u64> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut head = head.into_bytes();
    if head_only {
        write_all(conn, &head).await?;
        return Ok(0);
    }
    match resp.body {
        Body::Empty => {
            write_all(conn, &head).await?;
            Ok(0)
        }
        Body::Bytes(b) => {
            // One write: head and a small body in one segment.
            head.extend_from_slice(&b);
            write_all(conn, &head).await?;
            Ok(b.len() as u64)
        }
        Body::File { file, offset, len } => {
            write_all(conn, &head).await?;
            send_file(conn, file, offset, len).await
        }
        Body::Api {
            client,
            digest,
            offset,
            len,
        } => {
            write_all(conn, &head).await?;
            let mut sent = 0;
            while sent < len {
                let n = CHUNK.min(len - sent);
                let data = super::served::within(client.read(&digest, offset + sent, n))
                    .await
                    .map_err(io::Error::other)?;
                if data.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob ended early",
                    ));
                }
                let data = &data[..data.len().min((len - sent) as usize)];
                write_all(conn, data).await?;
                sent += data.len() as u64;
            }
            Ok(sent)
        }
    }
}

/// Sends `len` bytes of `file` from `offset`: with `sendfile` on plain TCP, read in chunks
/// and written through TLS otherwise.
async fn send_file(conn: &mut Conn, file: std::fs::File, offset: u64, len: u64) -> io::Result<u64> {
    crate::sys::will_need(&file, offset, len);
    let end = offset + len;
    match conn {
        Conn::Plain(tcp) => {
            let mut at = offset;
            while at < end {
                let n = CHUNK.min(end - at) as usize;
                let sent = tokio::time::timeout(
                    STALL_TIMEOUT,
                    tcp.async_io(tokio::io::Interest::WRITABLE, || {
                        crate::sys::send_file(&*tcp, &file, &mut at, n)
                    }),
                )
                .await
                .map_err(|_| stalled())??;
                if sent == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended early",
                    ));
                }
            }
            Ok(len)
        }
        Conn::Tls(_) => {
            let file = std::sync::Arc::new(file);
            let mut at = offset;
            while at < end {
                let n = (TLS_CHUNK as u64).min(end - at) as usize;
                let f = file.clone();
                let data = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; n];
                    let got = f.read_at(&mut buf, at)?;
                    buf.truncate(got);
                    Ok::<_, io::Error>(buf)
                })
                .await
                .map_err(io::Error::other)??;
                if data.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended early",
                    ));
                }
                write_all(conn, &data).await?;
                at += data.len() as u64;
            }
            Ok(len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_limits() {
        let (r, n) = parse(
            b"GET /v2/x/blobs/y?ns=docker.io HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\nGET",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v2/x/blobs/y")
        );
        assert_eq!(r.param("ns"), Some("docker.io"));
        assert_eq!(r.header("range"), Some("bytes=0-1"));
        assert!(!r.close);
        assert_eq!(n, 70);
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert_eq!(parse(b"GARBAGE\x00\r\n\r\n").err(), Some(400));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET + 1));
        assert_eq!(parse(long.as_bytes()).err(), Some(414));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()).err(), Some(431));
        let (r, _) = parse(b"PUT /v2/x/manifests/y HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.close, "a request with a body ends its connection");
        let (r, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(r.close);
        let (r, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.close);
        assert_eq!(r.param("missing"), None);
    }
}
