//! End-to-end: upgrades under a running node, on real containerd.
//!
//! - airlift upgraded: the state the previous release left (`integration/golden/state-v1`: its
//!   state directory and containerd's root, as that airlift left them) read by this airlift —
//!   ready with no archive byte read, nothing repaired, no record rewritten, and no image ever
//!   without its pin (containerd's image events are followed from before it starts);
//! - a record of a newer state format than this airlift reads: refused, said so in `airlift
//!   ls` and `airlift status`, not forgotten, and left alone with its archive's images, pins
//!   and lease, even when the archive changes;
//! - containerd upgraded in place under airlift (1.7 → 2.1, and 2.1 → 2.4 from
//!   `../shared/tools`): airlift kept running through the restart, then restarted itself, keeps
//!   every pin, lease and unpacked snapshot with no archive byte read and nothing repaired;
//! - going back: a previous release (`AIRLIFT_PREVIOUS`) on what this airlift left.

mod common;

use airlift::containerd::Event;
use airlift_integration::archives::small;
use airlift_integration::state::{at_var_lib_airlift, copy_dir, golden_dir, reidentify};
use airlift_integration::{containerd_bin_dir, tools, Containerd, Options, Version};
use common::daemon::Daemon;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The images of golden state v1, all pinned.
const GOLDEN_V1: [&str; 4] = [
    "example.com/golden/app:1",
    "example.com/golden/app:2",
    "example.com/golden/drop:1",
    "example.com/golden/tools:1",
];

/// What containerd holds that airlift must keep: each image's target and whether it carries
/// both pins, the leases, and the overlayfs snapshots.
#[derive(Debug, PartialEq)]
struct Held {
    images: BTreeMap<String, (String, bool)>,
    leases: Vec<String>,
    snapshots: Vec<String>,
}

fn held(rt: &tokio::runtime::Runtime, ctd: &Containerd) -> Held {
    let images = images(rt, ctd, "k8s.io")
        .into_iter()
        .map(|i| {
            let pinned = i.labels.get("io.cri-containerd.pinned").map(String::as_str)
                == Some("pinned")
                && i.labels.contains_key("airlift.io/pinned");
            (i.name, (i.digest, pinned))
        })
        .collect();
    let sorted_lines = |text: String| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    Held {
        images,
        leases: sorted_lines(
            ctd.ctr_output(&["-n", "k8s.io", "leases", "ls", "-q"])
                .unwrap(),
        ),
        snapshots: sorted_lines(snapshot_list(ctd)),
    }
}

/// Every image event of `k8s.io` from now on, collected while the runtime runs.
fn follow_events(rt: &tokio::runtime::Runtime, ctd: &Containerd) -> Arc<Mutex<Vec<Event>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut events = rt
        .block_on(client(rt, ctd, "k8s.io").subscribe(&["^/images/"]))
        .unwrap();
    let into = seen.clone();
    rt.spawn(async move {
        while let Some(Ok(ev)) = tokio_stream::StreamExt::next(&mut events).await {
            into.lock().unwrap().push(ev);
        }
    });
    // The subscription is in place once containerd has it: an event of ours goes through.
    let c = client(rt, ctd, "k8s.io");
    let probe = "example.com/upgrade/probe:1";
    let target = airlift::containerd::ImageTarget {
        name: probe.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        size: 1,
        annotations: Default::default(),
    };
    rt.block_on(c.put_image(&target, &Default::default()))
        .unwrap();
    rt.block_on(c.delete_image(probe, &target.digest)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.image() == Some(probe))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no event came through"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    seen.lock().unwrap().clear();
    seen
}

/// Panics when an event shows an image of `names` deleted or without its CRI pin.
fn assert_never_unpinned(events: &Mutex<Vec<Event>>, names: &[&str], log: &str) {
    for ev in events.lock().unwrap().iter() {
        match ev {
            Event::ImageDeleted { name } if names.contains(&name.as_str()) => {
                panic!("{name} was deleted\nlog:\n{log}")
            }
            Event::ImageUpdated { name, labels } | Event::ImageCreated { name, labels }
                if names.contains(&name.as_str()) =>
            {
                assert_eq!(
                    labels.get("io.cri-containerd.pinned").map(String::as_str),
                    Some("pinned"),
                    "{name} lost its pin for a moment: {labels:?}\nlog:\n{log}"
                );
            }
            _ => {}
        }
    }
}

/// The status numbers an upgrade must leave as they were: archive bytes read, repairs.
fn read_and_repaired(d: &Daemon) -> (u64, serde_json::Value) {
    let s = d.status_json();
    (
        s["archive_bytes_read"].as_u64().unwrap(),
        s["repairs"].clone(),
    )
}

/// containerd on the root golden state v1 left, and a daemon (not started) on a copy of its
/// state directory, seen at `/var/lib/airlift` as when it was made, each record given the
/// identity of its archive as copied. Returns the copy.
fn on_golden_v1() -> (Containerd, Daemon, PathBuf) {
    let golden = golden_dir(1);
    let ctd = Containerd::start_with(
        Version::V2,
        Options {
            seed_root: Some(golden.join("containerd-root.tar.zst")),
            ..Options::default()
        },
    )
    .unwrap();
    let mut d = Daemon::new(&ctd, "unpack = \"overlayfs\"");
    let state = d.dir.path().join("var-lib-airlift");
    copy_dir(&golden.join("var/lib/airlift"), &state).unwrap();
    std::fs::create_dir_all(state.join("intake")).unwrap();
    // app.tar, tools.tar and broken.tar; drop.tar (intake) was deleted once imported.
    assert_eq!(reidentify(&state).unwrap(), 3);
    d.wrapper = at_var_lib_airlift(&state);
    d.args = [
        "--images-dir=/var/lib/airlift/images",
        "--intake-dir=/var/lib/airlift/intake",
        "--state-dir=/var/lib/airlift",
    ]
    .map(String::from)
    .to_vec();
    (ctd, d, state)
}

/// The record files of a state directory and their bytes.
fn record_files(state: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(state.join("archives"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn airlift_upgrade_reads_state_v1_without_reading_an_archive() {
    let (ctd, mut d, state) = on_golden_v1();
    let rt = rt();
    let before = held(&rt, &ctd);
    let pinned: Vec<&str> = before
        .images
        .iter()
        .filter(|(_, (_, p))| *p)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(pinned, GOLDEN_V1, "golden state v1 as made: {before:?}");
    let records = record_files(&state);
    let events = follow_events(&rt, &ctd);
    let opened = inotify_opens(&state.join("images"));

    d.start();
    d.wait();
    d.until_idle();
    d.until_following();
    let (read, repaired) = read_and_repaired(&d);
    assert_eq!(read, 0, "archive bytes read\nlog:\n{}", d.log());
    assert_eq!(repaired, serde_json::json!({}), "{}", d.log());
    assert_eq!(
        opened(),
        Vec::<String>::new(),
        "archives opened\n{}",
        d.log()
    );
    let states: BTreeMap<String, String> = d
        .ls()
        .into_iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().into(),
                a["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let at = |name: &str| format!("/var/lib/airlift/{name}");
    for (archive, state) in [
        ("images/app.tar", "imported"),
        ("images/tools.tar", "imported"),
        ("images/broken.tar", "failed"),
        ("intake/drop.tar", "imported"),
    ] {
        assert_eq!(
            states.get(&at(archive)).map(String::as_str),
            Some(state),
            "{states:?}"
        );
    }
    assert_eq!(held(&rt, &ctd), before, "{}", d.log());
    d.stop();
    assert_never_unpinned(&events, &GOLDEN_V1, &d.log());
    assert_eq!(record_files(&state), records, "records rewritten");
}

#[test]
fn a_record_of_a_newer_format_is_left_alone() {
    let (ctd, mut d, state) = on_golden_v1();
    let rt = rt();
    // app.tar's record, as a newer airlift (state format 2) would write it.
    let file = std::fs::read_dir(state.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("images/app.tar")
        })
        .unwrap();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replacen('{', "{\n  \"format\": 2,", 1);
    std::fs::write(&file, &text).unwrap();
    let before = held(&rt, &ctd);
    let events = follow_events(&rt, &ctd);
    d.start();
    d.wait();
    d.until_idle();
    d.until_following();
    let app = d
        .archive(Path::new("/var/lib/airlift/images/app.tar"))
        .unwrap();
    let error = app["last_error"].as_str().unwrap_or_default().to_string();
    let shown = format!(
        "/var/lib/airlift/archives/{}",
        file.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(app["state"], "failed", "{app}");
    for part in [shown.as_str(), "state format 2", "reads formats up to 1"] {
        assert!(error.contains(part), "{error:?} does not say {part:?}");
    }
    let status = d.status_json();
    assert_eq!(
        status["refused_records"],
        serde_json::json!([error]),
        "{status}"
    );
    assert!(
        d.status().contains("refused records: 1 ("),
        "{}",
        d.status()
    );
    // Nor forgotten: this airlift cannot know what to release.
    let forget = d.cli(&["forget", "/var/lib/airlift/images/app.tar"]);
    let said = String::from_utf8_lossy(&forget.stderr);
    assert!(
        !forget.status.success() && said.contains("state format 2"),
        "{said}"
    );
    // The archive changes: still not imported over the newer record.
    std::fs::write(state.join("images/app.tar.new"), b"").unwrap();
    std::fs::rename(
        state.join("images/app.tar.new"),
        state.join("images/app.tar"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.until_idle();
    assert_eq!(read_and_repaired(&d).0, 0, "{}", d.log());
    assert_eq!(held(&rt, &ctd), before, "{}", d.log());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "the record was rewritten"
    );
    d.stop();
    assert_never_unpinned(&events, &GOLDEN_V1, &d.log());
}

/// Starts `d` and waits until it is ready, idle and following containerd's events; it must
/// have read no archive byte, repaired nothing, and left containerd holding `before`.
fn starts_clean(
    d: &mut Daemon,
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
    before: &Held,
    what: &str,
) {
    d.start();
    d.wait();
    d.until_idle();
    d.until_following();
    assert_eq!(
        read_and_repaired(d),
        (0, serde_json::json!({})),
        "{what}\n{}",
        d.log()
    );
    assert_eq!(&held(rt, ctd), before, "{what}\n{}", d.log());
}

/// Two tiny archives in `images`: two images sharing a base layer, and one more.
fn tiny_archives(images: &Path) -> Vec<&'static str> {
    small(
        &images.join("a.tar"),
        2048,
        &[("base", 11), ("one", 12), ("two", 13)],
        &[
            ("example.com/upgrade/a:1", &["base", "one"]),
            ("example.com/upgrade/a:2", &["base", "two"]),
        ],
    )
    .unwrap();
    small(
        &images.join("b.tar"),
        2048,
        &[("only", 14)],
        &[("example.com/upgrade/b:1", &["only"])],
    )
    .unwrap();
    vec![
        "example.com/upgrade/a:1",
        "example.com/upgrade/a:2",
        "example.com/upgrade/b:1",
    ]
}

/// containerd `from` upgraded in place to `to` (its binaries in `bin_dir`) under a running
/// `airlift serve` that imported and unpacked two archives; then airlift restarted.
fn containerd_upgrade(from: Version, to: Version, bin_dir: &Path) {
    let mut ctd = Containerd::start(from).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, "unpack = \"overlayfs\"");
    d.env.push((
        "AIRLIFT_LOG".into(),
        "info,airlift::daemon::repair=debug".into(),
    ));
    let names = tiny_archives(&d.images());
    d.start();
    d.wait();
    d.until_idle();
    d.until_following();
    let before = held(&rt, &ctd);
    for n in &names {
        assert_eq!(
            before.images.get(*n).map(|i| i.1),
            Some(true),
            "{n}: {before:?}"
        );
    }
    assert!(
        before.snapshots.len() >= 3,
        "unpacked: {before:?}\n{}",
        d.log()
    );
    assert_eq!(before.leases.len(), 2, "{before:?}");
    let (read, repaired) = read_and_repaired(&d);
    assert!(read > 0);

    let was = ctd.server_version().unwrap();
    ctd.upgrade(to, bin_dir).unwrap();
    let now = ctd.server_version().unwrap();
    assert!(
        now.trim_start_matches('v').starts_with(to.version_prefix()) && now != was,
        "{was} → {now}"
    );
    let events = follow_events(&rt, &ctd);
    // airlift, still running, finds containerd again and verifies every record.
    d.until("airlift to verify the records after the upgrade", || {
        d.log().contains("reconnected to containerd") && d.status_json()["following_events"] == true
    });
    d.until_idle();
    assert_eq!(
        read_and_repaired(&d),
        (read, repaired.clone()),
        "{was} → {now}\n{}",
        d.log()
    );
    assert_eq!(held(&rt, &ctd), before, "{was} → {now}\n{}", d.log());

    // The node restarts airlift too.
    d.stop();
    starts_clean(
        &mut d,
        &rt,
        &ctd,
        &before,
        &format!("airlift restarted on {now}"),
    );
    d.stop();
    assert_never_unpinned(&events, &names, &d.log());
}

#[test]
fn containerd_1_7_to_2_1_under_airlift() {
    containerd_upgrade(
        Version::V17,
        Version::V2,
        &containerd_bin_dir(Version::V2).unwrap(),
    );
}

#[test]
fn containerd_2_1_to_2_4_under_airlift() {
    let Some(tools) = tools::bin_dir() else {
        println!("{}", tools::SKIPPED);
        return;
    };
    containerd_upgrade(Version::V2, Version::V2, &tools.unwrap());
}

/// Going back: the airlift `AIRLIFT_PREVIOUS` names (a previous release's binary, e.g. one
/// built at the commit before this one) started on what this airlift left — ready with no
/// archive byte read, nothing repaired, no record rewritten, no image ever unpinned.
#[test]
fn the_previous_release_reads_what_this_one_writes() {
    let Some(previous) = std::env::var_os("AIRLIFT_PREVIOUS") else {
        println!("skipped: AIRLIFT_PREVIOUS (a previous release's airlift) not set");
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, "unpack = \"overlayfs\"");
    let names = tiny_archives(&d.images());
    d.start();
    d.wait();
    d.until_idle();
    d.stop();
    let records = record_files(&d.state_dir());
    for (file, text) in &records {
        let text = String::from_utf8_lossy(text);
        assert!(text.contains("\"format\": 1"), "{}: {text}", file.display());
    }
    let before = held(&rt, &ctd);
    let events = follow_events(&rt, &ctd);
    d.bin = Some(PathBuf::from(previous));
    starts_clean(&mut d, &rt, &ctd, &before, "the previous release started");
    d.stop();
    assert_never_unpinned(&events, &names, &d.log());
    assert_eq!(record_files(&d.state_dir()), records, "records rewritten");
}
