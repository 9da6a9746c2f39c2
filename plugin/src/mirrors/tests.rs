//! The mapping from registries.yaml and peers to hosts.toml files, checked by parsing the
//! output as containerd would (file order of the `[host]` tables, the top-level `server`), and
//! the files on a temporary hosts directory: backups, removal, idempotence, errors.

use super::*;
use std::fs;

const YAML: &str = r#"
mirrors:
  "*":
    endpoint:
      - "http://127.0.0.1:5001"
  docker.io:
    endpoint:
      - mirror.example.com
      - "https://cache.example.com/dockerhub/"
      - "https://registry-1.docker.io"
  registry.example.com:5000:
    endpoint:
      - "https://proxy.example.com/v2"
      - "https://other.example.com/api/v2"
    rewrite:
      "^library/(.*)": "mirrored/$1"
configs:
  mirror.example.com:
    tls:
      ca_file: /etc/ssl/mirror-ca.pem
      cert_file: /etc/ssl/node.pem
      key_file: /etc/ssl/node-key.pem
  docker.io:
    auth:
      username: me
      password: secret
  quay.io:
    tls:
      insecure_skip_verify: true
"#;

fn setup(yaml: &str, peers: &[&str]) -> (tempfile::TempDir, Options) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registries.yaml");
    fs::write(&file, yaml).unwrap();
    let opts = Options {
        registries: Some(file),
        hosts_dir: dir.path().join("certs.d"),
        peers: peers.iter().map(|p| p.to_string()).collect(),
    };
    (dir, opts)
}

/// The `[host]` keys in file order, and the parsed document.
fn parsed(text: &str) -> (Vec<String>, toml::Table) {
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let order = text
        .lines()
        .filter_map(|l| l.strip_prefix("[host.\""))
        .filter(|l| l.ends_with("\"]"))
        .map(|l| l.trim_end_matches("\"]").to_string())
        .collect();
    (order, table)
}

fn host<'a>(t: &'a toml::Table, url: &str) -> &'a toml::Table {
    t["host"][url]
        .as_table()
        .unwrap_or_else(|| panic!("no [host.{url:?}]"))
}

#[test]
fn registries_yaml_maps_to_hosts_files_with_peers_first() {
    let (_dir, opts) = setup(YAML, &["http://10.0.0.5:5050", "https://10.0.0.6:5050/"]);
    let (files, warnings) = render(&opts).unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "_default",
            "docker.io",
            "mirror.example.com",
            "quay.io",
            "registry.example.com_5000_"
        ]
    );
    let peers = ["http://10.0.0.5:5050", "https://10.0.0.6:5050"];
    for (dir, text) in &files {
        assert!(files::is_ours(text), "{dir}: no header");
        let (order, t) = parsed(text);
        assert_eq!(order[..2], peers, "{dir}: peers first");
        for url in &order {
            let caps = host(&t, url)["capabilities"].as_array().unwrap();
            assert_eq!(caps.len(), 2, "{dir} {url}");
        }
    }

    // "*": _default, the image's own registry last (server = "").
    let (order, t) = parsed(&files["_default"]);
    assert_eq!(order[2..], ["http://127.0.0.1:5001"]);
    assert_eq!(t["server"].as_str(), Some(""));

    // docker.io: its upstream, a host without a scheme, a path endpoint with override_path;
    // the upstream listed last is not a [host] (it is the server).
    let (order, t) = parsed(&files["docker.io"]);
    assert_eq!(t["server"].as_str(), Some("https://registry-1.docker.io"));
    assert_eq!(
        order[2..],
        [
            "https://mirror.example.com",
            "https://cache.example.com/dockerhub"
        ]
    );
    let m = host(&t, "https://mirror.example.com");
    assert_eq!(m["ca"].as_str(), Some("/etc/ssl/mirror-ca.pem"));
    assert_eq!(
        m["client"].as_array().unwrap()[0].as_array().unwrap().len(),
        2
    );
    assert!(m.get("override_path").is_none());
    assert_eq!(
        host(&t, "https://cache.example.com/dockerhub")["override_path"].as_bool(),
        Some(true)
    );

    // A registry with a port: its directory name, its upstream, /v2 endpoints, rewrites.
    let (order, t) = parsed(&files["registry.example.com_5000_"]);
    assert_eq!(
        t["server"].as_str(),
        Some("https://registry.example.com:5000")
    );
    assert_eq!(
        order[2..],
        [
            "https://proxy.example.com",
            "https://other.example.com/api/v2"
        ]
    );
    let o = host(&t, "https://other.example.com/api/v2");
    assert!(
        o.get("override_path").is_none(),
        "a path ending in /v2 is the API root already"
    );
    assert_eq!(o["rewrite"]["^library/(.*)"].as_str(), Some("mirrored/$1"));
    // Rewrites are the mirrors', not the peers'.
    assert!(host(&t, peers[0]).get("rewrite").is_none());
    // A peer that is down costs a pull seconds, not containerd's 30 s per request.
    assert_eq!(host(&t, peers[0])["dial_timeout"].as_str(), Some("2s"));

    // configs alone: quay.io's TLS at the top level (its upstream), the mirror host's own.
    let (_, t) = parsed(&files["quay.io"]);
    assert_eq!(t["server"].as_str(), Some("https://quay.io"));
    assert_eq!(t["skip_verify"].as_bool(), Some(true));
    let (_, t) = parsed(&files["mirror.example.com"]);
    assert_eq!(t["ca"].as_str(), Some("/etc/ssl/mirror-ca.pem"));

    // Never a top-level server but the registry's own.
    for (dir, text) in &files {
        let servers: Vec<&str> = text.lines().filter(|l| l.starts_with("server")).collect();
        assert_eq!(servers.len(), 1, "{dir}");
    }

    // Warnings name the file and the key.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("configs.\"docker.io\".auth")
            && w.contains("cannot carry credentials")
            && w.contains("registries.yaml")));
    assert!(warnings
        .iter()
        .any(|w| w.contains("mirrors.\"registry.example.com:5000\".rewrite")));
}

#[test]
fn without_peers_only_what_changes_something_is_written() {
    let (_dir, opts) = setup(
        "mirrors:\n  \"*\":\n  docker.io:\n    endpoint: [\"http://localhost:5000\"]\n  ghcr.io:\n    endpoint: []\n",
        &[],
    );
    let (files, warnings) = render(&opts).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(files.keys().collect::<Vec<_>>(), ["docker.io"]);
    let (order, _) = parsed(&files["docker.io"]);
    assert_eq!(
        order,
        ["http://localhost:5000"],
        "localhost on a port: http"
    );

    // Peers alone, no registries file: _default with the peers, no server but its own.
    let opts = Options {
        registries: None,
        hosts_dir: "/nonexistent".into(),
        peers: vec!["http://10.0.0.5:5050".into()],
    };
    let (files, _) = render(&opts).unwrap();
    let (order, t) = parsed(&files["_default"]);
    assert_eq!((order.len(), t["server"].as_str()), (1, Some("")));

    // TLS with no host entries: an empty [host] table (containerd 1.7 needs one).
    let (_dir, opts) = setup(
        "configs:\n  quay.io:\n    tls:\n      ca_file: /ca.pem\n",
        &[],
    );
    let (files, _) = render(&opts).unwrap();
    assert!(files["quay.io"].contains("\n[host]\n"));
    parsed(&files["quay.io"]);
}

#[test]
fn awkward_strings_are_escaped() {
    let (_dir, opts) = setup(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\n    rewrite:\n      '^a\"b\\\\(.*)': \"x\\ty\"\nconfigs:\n  m.example.com:\n    tls:\n      ca_file: \"/etc/ca \\\"quoted\\\".pem\"\n",
        &[],
    );
    let (files, _) = render(&opts).unwrap();
    let (_, t) = parsed(&files["docker.io"]);
    let h = host(&t, "https://m.example.com");
    assert_eq!(h["ca"].as_str(), Some("/etc/ca \"quoted\".pem"));
    assert_eq!(h["rewrite"]["^a\"b\\\\(.*)"].as_str(), Some("x\ty"));
}

#[test]
fn bad_input_is_named_with_the_file_and_the_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
            &[
                "registries.yaml",
                "mirrors.\"docker.io\".endpoint[0] \"ftp://x\"",
                "not http or https",
            ],
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: [\"https://\"]\n",
            &["endpoint[0]", "no host"],
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: [\"https://a b\"]\n",
            &["not a host name"],
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: [\"https://u:p@x\"]\n",
            &["credentials in the URL"],
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: [\"https://x:99999\"]\n",
            &["port \"99999\""],
        ),
        (
            "mirrors:\n  \"https://docker.io\":\n    endpoint: [\"x\"]\n",
            &["registry \"https://docker.io\" is not a registry host"],
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: [x]\n    rewrite:\n      \"(\": y\n",
            &["mirrors.\"docker.io\".rewrite", "not a regular expression"],
        ),
        (
            "configs:\n  x.io:\n    tls:\n      key_file: /k\n",
            &["configs.\"x.io\".tls: key_file without cert_file"],
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: x\n",
            &["registries.yaml", "line 3"],
        ),
        ("mirrors: [\n", &["registries.yaml", "line"]),
    ];
    for (yaml, wants) in cases {
        let (_dir, opts) = setup(yaml, &[]);
        let e = render(&opts).unwrap_err().to_string();
        for w in *wants {
            assert!(e.contains(w), "{yaml}: {e:?} lacks {w:?}");
        }
    }
    for (peer, want) in [
        ("10.0.0.5:5050", "give the scheme"),
        ("http://10.0.0.5:5050/v1", "no path"),
        ("gopher://x", "not http or https"),
    ] {
        let opts = Options {
            registries: None,
            hosts_dir: "/x".into(),
            peers: vec![peer.into()],
        };
        let e = render(&opts).unwrap_err().to_string();
        assert!(
            e.contains(&format!("peer {peer:?}")) && e.contains(want),
            "{e}"
        );
    }
    let opts = Options {
        registries: Some("/nonexistent/registries.yaml".into()),
        hosts_dir: "/x".into(),
        peers: vec![],
    };
    let e = render(&opts).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/registries.yaml") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn duplicates_are_skipped_with_a_warning() {
    let (_dir, opts) = setup(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://10.0.0.5:5050\", m.example.com, \"https://m.example.com/\"]\n",
        &["http://10.0.0.5:5050"],
    );
    let (files, warnings) = render(&opts).unwrap();
    let (order, _) = parsed(&files["docker.io"]);
    assert_eq!(order, ["http://10.0.0.5:5050", "https://m.example.com"]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("endpoint[0]") && warnings[0].contains("skipped"));
}

#[test]
fn files_are_backed_up_restored_and_rewritten_only_when_they_change() {
    let (dir, mut opts) = setup(
        "mirrors:\n  docker.io:\n    endpoint: [m.example.com]\n  quay.io:\n    endpoint: [q.example.com]\n",
        &["http://10.0.0.5:5050"],
    );
    let root = opts.hosts_dir.clone();
    // Someone else's files: docker.io's (replaced, kept), ghcr.io's (not ours to touch).
    fs::create_dir_all(root.join("docker.io")).unwrap();
    fs::write(
        root.join("docker.io/hosts.toml"),
        "server = \"https://theirs\"\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("ghcr.io")).unwrap();
    fs::write(root.join("ghcr.io/hosts.toml"), "# theirs\n").unwrap();

    let actions = |r: &Report| -> Vec<(String, Action)> {
        r.changes
            .iter()
            .map(|c| {
                let rel = c.path.strip_prefix(&root).unwrap();
                (rel.display().to_string(), c.action.clone())
            })
            .collect()
    };
    let r = apply(&opts).unwrap();
    assert_eq!(
        actions(&r),
        [
            ("_default/hosts.toml".into(), Action::Created),
            ("docker.io/hosts.toml".into(), Action::Replaced),
            ("quay.io/hosts.toml".into(), Action::Created),
        ]
    );
    assert_eq!(
        fs::read_to_string(root.join("docker.io").join(BACKUP)).unwrap(),
        "server = \"https://theirs\"\n"
    );
    let written = fs::read_to_string(root.join("docker.io/hosts.toml")).unwrap();
    assert!(written.contains("[host.\"https://m.example.com\"]"));
    let mtime = |p: &str| fs::metadata(root.join(p)).unwrap().modified().unwrap();
    let before = mtime("docker.io/hosts.toml");

    // Again, the same input: nothing written, no backup of airlift's own file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = apply(&opts).unwrap();
    assert!(
        r.changes.iter().all(|c| c.action == Action::Unchanged),
        "{r:?}"
    );
    assert_eq!(mtime("docker.io/hosts.toml"), before);
    assert_eq!(
        fs::read_to_string(root.join("docker.io").join(BACKUP)).unwrap(),
        "server = \"https://theirs\"\n"
    );

    // quay.io no longer mirrored, docker.io's endpoint changed: quay.io's file goes (it
    // replaced nothing), docker.io's is rewritten, its backup untouched.
    fs::write(
        opts.registries.as_ref().unwrap(),
        "mirrors:\n  docker.io:\n    endpoint: [m2.example.com]\n",
    )
    .unwrap();
    opts.peers.clear();
    let r = apply(&opts).unwrap();
    assert_eq!(
        actions(&r),
        [
            ("docker.io/hosts.toml".into(), Action::Updated),
            ("_default/hosts.toml".into(), Action::Removed),
            ("quay.io/hosts.toml".into(), Action::Removed),
        ]
    );
    assert!(
        !root.join("quay.io").exists(),
        "an empty directory airlift made goes"
    );
    assert_eq!(
        fs::read_to_string(root.join("docker.io").join(BACKUP)).unwrap(),
        "server = \"https://theirs\"\n"
    );

    // --remove: docker.io's file back as it was, ghcr.io's untouched.
    let r = remove(&root).unwrap();
    assert_eq!(
        actions(&r),
        [("docker.io/hosts.toml".into(), Action::Restored)]
    );
    assert_eq!(
        fs::read_to_string(root.join("docker.io/hosts.toml")).unwrap(),
        "server = \"https://theirs\"\n"
    );
    assert!(!root.join("docker.io").join(BACKUP).exists());
    assert_eq!(
        fs::read_to_string(root.join("ghcr.io/hosts.toml")).unwrap(),
        "# theirs\n"
    );
    assert!(remove(&root).unwrap().changes.is_empty());
    // No temporary files anywhere.
    for d in ["docker.io", "ghcr.io"] {
        let names: Vec<String> = fs::read_dir(root.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["hosts.toml"], "{d}");
    }
    drop(dir);
}

#[test]
fn one_writer_at_a_time() {
    let (_dir, opts) = setup(
        "mirrors:\n  docker.io:\n    endpoint: [m.example.com]\n",
        &[],
    );
    fs::create_dir_all(&opts.hosts_dir).unwrap();
    let held = fs::File::open(&opts.hosts_dir).unwrap();
    assert!(crate::sys::try_lock(&held));
    let e = apply(&opts).unwrap_err().to_string();
    assert!(
        e.contains("locking the hosts directory") && e.contains("another airlift"),
        "{e}"
    );
    assert!(remove(&opts.hosts_dir).is_err());
    drop(held);
    apply(&opts).unwrap();
    remove(&opts.hosts_dir).unwrap();
}

#[test]
fn peers_get_the_tls_of_their_host() {
    let (_dir, opts) = setup(
        "configs:\n  10.0.0.5:5050:\n    tls:\n      ca_file: /etc/airlift/nodes-ca.pem\n",
        &["https://10.0.0.5:5050"],
    );
    let (files, _) = render(&opts).unwrap();
    let (_, t) = parsed(&files["_default"]);
    assert_eq!(
        host(&t, "https://10.0.0.5:5050")["ca"].as_str(),
        Some("/etc/airlift/nodes-ca.pem")
    );
    // The peer's host is a registry named in configs too: its own file, the peer first.
    let (order, t) = parsed(&files["10.0.0.5_5050_"]);
    assert_eq!(order, ["https://10.0.0.5:5050"]);
    assert_eq!(t["server"].as_str(), Some("https://10.0.0.5:5050"));
}

#[test]
fn a_file_someone_put_over_airlifts_is_left_with_its_backup() {
    let (_dir, opts) = setup(
        "mirrors:\n  docker.io:\n    endpoint: [m.example.com]\n",
        &[],
    );
    let root = opts.hosts_dir.clone();
    fs::create_dir_all(root.join("docker.io")).unwrap();
    fs::write(root.join("docker.io/hosts.toml"), "# first\n").unwrap();
    apply(&opts).unwrap();
    fs::write(root.join("docker.io/hosts.toml"), "# second\n").unwrap();
    let r = remove(&root).unwrap();
    assert!(r.changes.is_empty());
    assert!(r.warnings[0].contains(BACKUP) && r.warnings[0].contains("not airlift's"));
    assert_eq!(
        fs::read_to_string(root.join("docker.io/hosts.toml")).unwrap(),
        "# second\n"
    );
}

#[test]
fn an_unwritable_hosts_directory_is_named() {
    let (dir, mut opts) = setup(
        "mirrors:\n  docker.io:\n    endpoint: [m.example.com]\n",
        &[],
    );
    // A regular file where the hosts directory should be (root can write anywhere else).
    let blocker = dir.path().join("file");
    fs::write(&blocker, "").unwrap();
    opts.hosts_dir = blocker.join("certs.d");
    let e = apply(&opts).unwrap_err().to_string();
    assert!(
        e.contains(&blocker.join("certs.d").display().to_string())
            && e.contains("creating the hosts directory"),
        "{e}"
    );
    opts.hosts_dir = dir.path().join("certs.d");
    fs::create_dir_all(&opts.hosts_dir).unwrap();
    fs::write(opts.hosts_dir.join("docker.io"), "").unwrap();
    let e = apply(&opts).unwrap_err().to_string();
    assert!(
        e.contains("docker.io/hosts.toml") || e.contains("docker.io:"),
        "{e}"
    );
}
