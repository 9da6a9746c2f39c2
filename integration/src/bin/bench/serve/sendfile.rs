//! The sendfile floor: the least an HTTP server can do to hand out blobs, the floor airlift
//! serve's registry endpoint is measured against; never anything to serve with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// Serves the files of `dir` on a loopback address of its own: a thread per connection that
/// reads a request head, answers `200` with the `Content-Length` of the file the path's last
/// component names in `dir`, and `sendfile`s it; keep-alive; a send buffer fixed at
/// `send_buffer` bytes (0: the kernel's autotuning). No checks, no limits.
pub fn serve(dir: PathBuf, send_buffer: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.set_nodelay(true);
                if send_buffer > 0 {
                    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&conn, send_buffer);
                }
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("");
                    let hex = path.rsplit(':').next().unwrap_or("");
                    let Ok(file) = std::fs::File::open(dir.join(hex)) else {
                        let _ =
                            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    };
                    let len = file.metadata().unwrap().len();
                    let _ = conn.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                    );
                    let mut at = 0u64;
                    while at < len {
                        let count = (len - at) as usize;
                        match rustix::fs::sendfile(&conn, &file, Some(&mut at), count) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                }
            });
        }
    });
    addr
}
