//! Several "hosts" on one machine: network namespaces (`ip netns`) joined by veth links, each
//! with its own addresses and loopback, for the multi-node tests. Processes are put in one with
//! [`Net::exec`] (a command prefix); unix sockets (containerd's, airlift's) are files and work
//! across namespaces. Everything is removed when the [`Net`] is dropped.

use anyhow::{bail, Context as _, Result};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Network namespaces of one test.
pub struct Net {
    namespaces: Vec<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Whether namespaces can be made here (root and iproute2); `false` where they cannot
    /// (the tests then say so and rely on their loopback variants).
    pub fn available() -> bool {
        let name = format!("airlift-probe-{}", std::process::id());
        let made = ip(&["netns", "add", &name]).is_ok();
        if made {
            let _ = ip(&["netns", "del", &name]);
        }
        made
    }

    /// No namespaces yet.
    pub fn new() -> Net {
        Net {
            namespaces: Vec::new(),
        }
    }

    /// A new namespace (its loopback up); returns its name.
    pub fn add(&mut self, tag: &str) -> Result<String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("airlift-{}-{n}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth link between namespaces `a` and `b`, `a_ip` and `b_ip` on a /24; returns the
    /// device names (in `a`, in `b`).
    pub fn link(&self, a: &str, a_ip: &str, b: &str, b_ip: &str) -> Result<(String, String)> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Device names are at most 15 bytes, and unique while both ends are still here.
        let id = format!("{:x}", (std::process::id() << 8) ^ n);
        let (da, db) = (format!("va{id}"), format!("vb{id}"));
        ip(&["link", "add", &da, "type", "veth", "peer", "name", &db])?;
        for (dev, ns, addr) in [(&da, a, a_ip), (&db, b, b_ip)] {
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok((da, db))
    }

    /// Takes a device of namespace `ns` down (the host behind it is gone: its packets are
    /// dropped, not refused) or up again.
    pub fn set(&self, ns: &str, dev: &str, up: bool) -> Result<()> {
        ip(&["-n", ns, "link", "set", dev, if up { "up" } else { "down" }])
    }

    /// The command prefix that runs a program in `ns`.
    pub fn exec(&self, ns: &str) -> Vec<String> {
        ["ip", "netns", "exec", ns]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// A command running `program` in `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Waits until something listens on `addr` as seen from `ns`.
    pub fn wait_listening(&self, ns: &str, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .command(ns, "bash")
                .args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port()),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing listens on {addr} in {ns}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A namespace's veth ends go with it; processes still inside keep it alive until they
        // exit.
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}
