//! The configuration file: defaults, the example, bad keys and values, each table.

use super::*;

#[test]
fn defaults_and_overrides() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.namespace, "k8s.io");
    assert_eq!(
        c.images_dirs,
        vec![PathBuf::from("/var/lib/rancher/k3s/agent/images")]
    );
    let c = Config::parse(
        "address = \"/run/k3s/containerd/containerd.sock\"\nplatforms = [\"linux/arm64/v8\"]\nmode = \"stream\"\n[labels]\nteam = \"edge\"\n",
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Stream);
    assert_eq!(c.labels["team"], "edge");
    assert!(matches!(
        PlatformPolicy::parse(&c.platforms).unwrap(),
        PlatformPolicy::Only(_)
    ));
    assert_eq!(c.content_proxy.root, None);
    let c = Config::parse("[content_proxy]\nroot = \"/var/lib/airlift/content\"\n").unwrap();
    assert_eq!(
        c.content_proxy.root,
        Some(PathBuf::from("/var/lib/airlift/content"))
    );
}

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../../config/airlift.toml");
    Config::parse(text).unwrap();
}

#[test]
fn rejects_unknown_keys_and_bad_values() {
    let e = Config::parse("adress = \"/x\"").unwrap_err().to_string();
    assert!(e.contains("unknown field `adress`"), "{e}");
    assert!(Config::parse("concurrency = 0")
        .unwrap_err()
        .to_string()
        .contains("at least 1"));
    assert!(Config::parse("mode = \"fast\"")
        .unwrap_err()
        .to_string()
        .contains("unknown mode"));
    assert!(Config::parse("platforms = [\"linux//x\"]")
        .unwrap_err()
        .to_string()
        .contains("invalid platform"));
    assert!(Config::parse("[content_proxy]\nroot = \"rel\"")
        .unwrap_err()
        .to_string()
        .contains("not an absolute path"));
    assert!(Config::parse("[content_proxy]\nroots = \"/x\"")
        .unwrap_err()
        .to_string()
        .contains("unknown field `roots`"));
    assert!(Config::parse("metrics_address = \"nope\"")
        .unwrap_err()
        .to_string()
        .contains("host:port"));
    assert!(Config::parse("log_format = \"xml\"").is_err());
}

#[test]
fn the_registry_table() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.registry.address, "");
    assert_eq!(c.registry.serve, crate::registry::Policy::Airlift);
    let c = Config::parse(
        "[registry]\naddress = \"0.0.0.0:5050\"\nserve = \"all\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\nclient_ca = \"/ca\"\n",
    )
    .unwrap();
    assert_eq!(c.registry.serve, crate::registry::Policy::All);
    assert_eq!(c.registry.client_ca, Some(PathBuf::from("/ca")));
    for (bad, why) in [
        ("address = \"x\"", "host:port"),
        (
            "address = \"127.0.0.1:1\"\ntls_cert = \"/c\"",
            "go together",
        ),
        (
            "address = \"127.0.0.1:1\"\nclient_ca = \"/c\"",
            "needs registry.tls_cert",
        ),
        (
            "address = \"127.0.0.1:1\"\nmax_connections = 0",
            "at least 1",
        ),
        ("serve = \"some\"", "unknown variant"),
        ("adress = \"\"", "unknown field"),
    ] {
        let e = Config::parse(&format!("[registry]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn the_mirrors_table() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.mirrors.options(), None);
    let c = Config::parse(
        "[mirrors]\nregistries = \"/etc/rancher/k3s/registries.yaml\"\npeers = [\"http://10.0.0.5:5050\"]\n",
    )
    .unwrap();
    let o = c.mirrors.options().unwrap();
    assert_eq!(o.hosts_dir, PathBuf::from("/etc/containerd/certs.d"));
    assert_eq!(o.peers, ["http://10.0.0.5:5050"]);
    for (bad, why) in [
        (
            "peers = [\"10.0.0.5:5050\"]",
            "mirrors.peers: peer \"10.0.0.5:5050\": give the scheme",
        ),
        (
            "peers = [\"http://a:1\"]\nhosts_dir = \"rel\"",
            "not an absolute path",
        ),
        ("peer = []", "unknown field `peer`"),
    ] {
        let e = Config::parse(&format!("[mirrors]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn modes_and_log_formats_parse_by_name() {
    assert_eq!("direct".parse::<Mode>().unwrap(), Mode::Direct);
    assert!("Direct"
        .parse::<Mode>()
        .unwrap_err()
        .to_string()
        .contains("expected auto, direct or stream"));
    assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    assert!("xml"
        .parse::<LogFormat>()
        .unwrap_err()
        .to_string()
        .contains("expected text or json"));
    let c = Config::parse("log_format = \"json\"\nmode = \"auto\"").unwrap();
    assert_eq!((c.log_format, c.mode), (LogFormat::Json, Mode::Auto));
}

#[test]
fn intake_priority_and_resync() {
    let c = Config::parse(
        "intake_dirs = [\"/var/lib/airlift/intake\"]\npriority = [\"pause*\", \"*cni*\"]\nresync_seconds = 60\n",
    )
    .unwrap();
    assert!(c.is_intake(Path::new("/var/lib/airlift/intake/a.tar")));
    assert!(!c.is_intake(Path::new("/var/lib/rancher/k3s/agent/images/a.tar")));
    let p = c.priority_set().unwrap();
    assert!(p[0].is_match("pause-3.9.tar") && p[1].is_match("calico-cni.tar.zst"));
    assert_eq!(c.watched_dirs().len(), 2);
    assert!(Config::parse("priority = [\"a[\"]")
        .unwrap_err()
        .to_string()
        .contains("priority pattern \"a[\""));
    assert!(Config::parse("images_dirs = []\nintake_dirs = []")
        .unwrap_err()
        .to_string()
        .contains("both empty"));
    assert!(
        Config::parse("images_dirs = [\"/i\"]\nintake_dirs = [\"/i\"]")
            .unwrap_err()
            .to_string()
            .contains("both an images directory and an intake directory")
    );
    // Intake alone is a valid setup.
    Config::parse("images_dirs = []\nintake_dirs = [\"/x\"]").unwrap();
}

#[test]
fn served_platforms() {
    let c = Config::parse("serve_platforms = [\"linux/arm64\", \"linux/arm/v7\"]").unwrap();
    let asked = crate::service::options::Asked::of_config(&c);
    let o = asked.options().unwrap();
    assert_eq!(
        o.plan.serve,
        PlatformPolicy::Only(vec![
            crate::platform::Platform::new("linux", "arm64", ""),
            crate::platform::Platform::new("linux", "arm", "v7"),
        ])
    );
    assert!(Config::default().serve_platforms.is_empty());
    assert!(Config::parse("serve_platforms = [\"all\"]").is_ok());
    for bad in ["[\"all\", \"linux/arm64\"]", "[\"host\"]", "[\"linux//x\"]"] {
        let e = Config::parse(&format!("serve_platforms = {bad}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("serve_platforms"), "{bad}: {e}");
    }
    // Redundant or overlapping settings are accepted, and said.
    let c = Config::parse("platforms = [\"all\"]\nserve_platforms = [\"linux/arm64\"]").unwrap();
    let notes = crate::service::options::Asked::of_config(&c).platform_notes();
    assert!(notes[0].contains("redundant"), "{notes:?}");
    let c = Config::parse(
        "platforms = [\"linux/amd64\"]\nserve_platforms = [\"linux/amd64\", \"linux/arm64\"]",
    )
    .unwrap();
    let notes = crate::service::options::Asked::of_config(&c).platform_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("linux/amd64 is served and run"),
        "{notes:?}"
    );
    assert!(crate::service::options::Asked::default()
        .platform_notes()
        .is_empty());
}
