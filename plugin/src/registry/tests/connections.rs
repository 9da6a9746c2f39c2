//! Connections: bad request heads, slow clients, too many connections, containerd away, and
//! no input that makes the server panic.

use super::*;

#[tokio::test]
async fn bad_heads_slow_clients_and_too_many_connections() {
    let fake = Fake::new();
    let s = start(
        &fake,
        Settings {
            max_connections: 4,
            ..Settings::default()
        },
    )
    .await;
    let out = raw(s.addr, b"\x00\x01garbage\r\n\r\n").await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(http::MAX_HEAD)
    );
    let out = raw(s.addr, huge.as_bytes()).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let long = format!("GET /v2/{}/manifests/1 HTTP/1.1\r\n\r\n", "a/".repeat(1500));
    let out = raw(s.addr, long.as_bytes()).await;
    assert!(
        out.starts_with(b"HTTP/1.1 414"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let r = get(s.addr, &format!("/v2/{}/manifests/1", "a".repeat(300))).await;
    assert_eq!(r.code(), "NAME_INVALID");

    // Connections that hold their slot without sending anything: the fifth is turned away.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let out = raw(s.addr, b"GET /v2/ HTTP/1.1\r\n\r\n").await;
    assert!(
        out.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = get(s.addr, "/v2/").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn containerd_down_is_503_and_comes_back() {
    let fake = Fake::new();
    busybox(&fake).await;
    fake.fail("list_images", None, Class::Unavailable);
    fake.fail("get_image", None, Class::Unavailable);
    let s = start(&fake, settings()).await;
    let r = get(s.addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!((r.status, r.code().as_str()), (503, "UNAVAILABLE"));
    fake.heal();
    let r = get(s.addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!(r.status, 200);
}

/// Bytes from a small deterministic generator (xorshift), biased towards the characters
/// requests are made of.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"/:.-_%@?&=,abz09AZ \r\n\t\x00\xff";
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            let r = *state as usize;
            if r.is_multiple_of(4) {
                (r >> 8) as u8
            } else {
                ALPHABET[(r >> 8) % ALPHABET.len()]
            }
        })
        .collect()
}

#[tokio::test]
async fn no_input_makes_it_panic() {
    let fake = Fake::new();
    busybox(&fake).await;
    let registry = Registry::new(
        settings(),
        Arc::new(FakeConnect(fake.clone())),
        Counters::default(),
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let prefixes = [
        "/v2/",
        "/v2/library/busybox/manifests/",
        "/v2/library/busybox/blobs/",
        "/v2/library/",
        "/v2/_catalog?n=",
        "/v2/quay.io/",
    ];
    for i in 0..20_000 {
        let tail =
            String::from_utf8_lossy(&noise(&mut state, i % 40)).replace(['\r', '\n', ' '], "");
        let target = format!("{}{tail}", prefixes[i % prefixes.len()]);
        let range = String::from_utf8_lossy(&noise(&mut state, i % 12)).replace(['\r', '\n'], "");
        let req = http::Request::new(
            if i % 7 == 0 { "HEAD" } else { "GET" },
            &target,
            &[("Range", &format!("bytes={range}"))],
        );
        let (_, resp) = registry.respond(&req).await;
        assert!(
            resp.status < 500 || resp.status == 503,
            "{target}: {}",
            resp.status
        );
        let _ = names::repository(&tail, Some(&range));
        let _ = range::wanted(Some(&range), (i % 5) as u64);
    }
    // Raw heads through the parser.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = serve(Arc::new(registry), listener);
    for i in 0..300 {
        let mut head = b"GET /v2/".to_vec();
        head.extend(noise(&mut state, i % 200));
        head.extend_from_slice(b"\r\n\r\n");
        let out = raw(addr, &head).await;
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    let r = get(addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!(r.status, 200);
    task.abort();
}
