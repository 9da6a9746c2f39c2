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

/// This run's part of every namespace's name: the process id and the start time, so that the
/// namespaces a crashed run left behind (with a process id used again) never stand in the way.
fn run() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-{:x}", std::process::id(), now.as_millis() & 0xff_ffff)
    })
}

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
        // Asked once per process: tests running side by side must not race for the probe.
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            let name = format!("airlift-probe-{}", run());
            let made = ip(&["netns", "add", &name]).is_ok();
            if made {
                let _ = ip(&["netns", "del", &name]);
            }
            made
        })
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
        let name = format!("airlift-{}-{n}-{tag}", run());
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

    /// A bridge (`br0`) in namespace `ns`: the switch of a network of several nodes, each
    /// joined to it by [`Net::attach`].
    pub fn bridge(&self, ns: &str) -> Result<String> {
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", ns, "link", "set", "br0", "up"])?;
        Ok("br0".into())
    }

    /// A veth link from namespace `ns` (address `addr` on a /24) to the bridge `bridge` of
    /// namespace `switch` ([`Net::bridge`]); returns the device name in `ns`.
    pub fn attach(&self, ns: &str, addr: &str, switch: &str, bridge: &str) -> Result<String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}", (std::process::id() << 8) ^ n);
        let (dn, ds) = (format!("vn{id}"), format!("vs{id}"));
        ip(&["link", "add", &dn, "type", "veth", "peer", "name", &ds])?;
        let moved = ip(&["link", "set", &dn, "netns", ns])
            .and_then(|()| ip(&["link", "set", &ds, "netns", switch]));
        if let Err(e) = moved {
            // A pair still (partly) in the host's namespace goes with either end.
            let _ = ip(&["link", "del", &dn]);
            let _ = ip(&["link", "del", &ds]);
            return Err(e);
        }
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", &dn])?;
        ip(&["-n", ns, "link", "set", &dn, "up"])?;
        ip(&["-n", switch, "link", "set", &ds, "master", bridge])?;
        ip(&["-n", switch, "link", "set", &ds, "up"])?;
        Ok(dn)
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
