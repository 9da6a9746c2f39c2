//! End-to-end: the containerd behaviour suite (`airlift::testkit::behaviour`) — leases holding
//! content and snapshots, the garbage collector following `containerd.io/gc.ref.*` labels,
//! image records and their events, claims of shared content, verified commits, the differ —
//! through airlift's gRPC client against real containerd 2.x and 1.7, with the `overlayfs`
//! snapshotter. The unit tests run the same suite against the fake, which therefore behaves as
//! these containerd releases do wherever airlift relies on it.

mod common;

use airlift::testkit::behaviour::{run, OtherClient, Subject};
use airlift_integration::{Containerd, Version};
use common::*;

/// The namespace the suite works in.
const NAMESPACE: &str = "behaviour";

/// `ctr`, as the other client.
struct Ctr<'a>(&'a Containerd);

impl OtherClient for Ctr<'_> {
    fn delete_image(&self, name: &str) {
        self.0
            .ctr_output(&["-n", NAMESPACE, "images", "rm", name])
            .unwrap();
    }
}

fn behaves_as_the_fake_assumes(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    let ctr = Ctr(&ctd);
    let subject = Subject::new(
        client(&rt, &ctd, NAMESPACE),
        &ctr,
        "overlayfs",
        &version.to_string(),
    );
    rt.block_on(run(&subject));
}

on_containerd!(behaves_as_the_fake_assumes {
    behaviour_containerd_2: Version::V2;
    behaviour_containerd_17: Version::V17;
});
