//! Fuzzing: the code each `cargo fuzz` target in `fuzz/` runs on one input, shared with the test
//! that replays every saved reproducer and seed (`plugin/tests/fuzz_regressions.rs`), so that a
//! crash the fuzzer found stays a failing test until it is fixed.
//!
//! Every function takes arbitrary bytes and must never panic, except where it checks a property
//! of airlift (an `assert!` saying what broke). Each is deterministic, touches no network and
//! removes whatever it creates before it returns. Memory and time per input are bounded: an
//! archive may decode to at most [`DECODED_LIMIT`] bytes before it is ingested (a decompression
//! bomb is only walked that far), blobs larger than that are refused by the in-memory store the
//! ingest writes to, as a full disk would refuse them, and a Write session runs at most
//! [`WRITE_OPS`] requests.
//!
//! The targets:
//!
//! - [`archive`]: bytes as an archive file, through decode, walk, ingest (into memory) and
//!   planning with several option sets; decoding must not depend on read sizes, and every image of
//!   a plan must be able to find each of its blobs;
//! - [`understand`]: a list of named files whose digests are taken on trust (the names declare
//!   them, as a real archive's would if the fuzzer could forge SHA-256), through planning, so that
//!   manifests and indexes the fuzzer mutates still reach the planner;
//! - [`reference`]: image references, compared with containerd's own grammar
//!   (`reference/docker.ParseDockerRef`);
//! - [`platform`]: platform parsing, normalisation and matching;
//! - [`filters`]: containerd's filter syntax, parsed and evaluated against labelled items;
//! - [`config`]: the daemon's configuration file;
//! - [`proxy_write`]: the content proxy's `Write` streams (STAT, WRITE, COMMIT, and Abort),
//!   interpreted from bytes, against a model of what each request must answer; committed blobs
//!   must hash to their digest.

use crate::archive::understand::{self, FileRecord, Inventory, Plan, PlanOptions};
use crate::archive::{decode, walk};
use crate::digest::Digest;
use crate::filters::{map_field, Adaptor, Filter, FilterError};
use crate::ingest::{self, Counters};
use crate::platform::{Platform, PlatformPolicy};
use crate::proxy::api::content_server::Content;
use crate::proxy::{api, ContentService, MAX_MESSAGE};
use crate::reference::{is_full_reference, valid_tag, Reference};
use crate::store::layout::ContentRoot;
use crate::store::local::LocalStore;
use crate::store::memory::MemoryStore;
use crate::store::{ContentStore, Put, StoreError, StoreKind};
use regex::Regex;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::OnceLock;

/// Most bytes an input may decode to and still be ingested; beyond that it is only walked this
/// far.
pub const DECODED_LIMIT: u64 = 4 << 20;

/// Most requests (and other operations) one [`proxy_write`] input runs.
pub const WRITE_OPS: usize = 64;

// ---------------------------------------------------------------------------------------------
// archive

/// An archive file's bytes through decode, walk, ingest into memory, and planning.
pub fn archive(data: &[u8]) {
    let Ok(scratch) = tempfile::tempdir() else {
        return;
    };
    match decoded_len(data, scratch.path()) {
        None => {}
        Some(n) if n > DECODED_LIMIT => walk_prefix(data, scratch.path()),
        Some(_) => ingest_and_plan(data, scratch.path()),
    }
}

/// How a decode pass ended.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// The whole stream, within the limit: its length and digest.
    Whole(u64, Digest),
    /// More than the limit: the digest of its first `DECODED_LIMIT + 1` bytes.
    TooLong(Digest),
    /// The decoder failed.
    Broken,
}

/// Decodes `data` in reads of the sizes `sizes` cycles through, up to one byte past the limit.
/// `None` when it is not an archive at all.
fn decode_pass(data: &[u8], scratch: &Path, sizes: &[usize]) -> Option<Decoded> {
    let (mut r, _) = decode::open(Cursor::new(data.to_vec()), scratch).ok()?;
    let mut hasher = crate::digest::Hasher::default();
    let mut buf = vec![0u8; sizes.iter().copied().max().unwrap_or(1)];
    let cap = DECODED_LIMIT + 1;
    for &size in sizes.iter().cycle() {
        let want = (size as u64).min(cap - hasher.len()) as usize;
        match r.read(&mut buf[..want]) {
            Ok(0) => return Some(Decoded::Whole(hasher.len(), hasher.finish())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Decoded::Broken),
        }
        if hasher.len() == cap {
            return Some(Decoded::TooLong(hasher.finish()));
        }
    }
    unreachable!("cycling through a non-empty list never ends")
}

/// How many bytes `data` decodes to (at most one past the limit), `None` when it is not an
/// archive. Decoding twice, in large and in irregular reads, must give the same bytes.
fn decoded_len(data: &[u8], scratch: &Path) -> Option<u64> {
    let large = decode_pass(data, scratch, &[64 << 10])?;
    let irregular = decode_pass(data, scratch, &[1, 13, 512, 4099, 65536, 7, 131072])?;
    match (&large, &irregular) {
        (Decoded::Broken, _) | (_, Decoded::Broken) => {
            // Where a broken stream stops may depend on the reads; that it is broken may not,
            // unless the other pass stopped at the limit before reaching the damage.
            let either_too_long =
                matches!(large, Decoded::TooLong(_)) || matches!(irregular, Decoded::TooLong(_));
            assert!(
                large == irregular || either_too_long,
                "decoding depends on read sizes: {large:?} in large reads, {irregular:?} in \
                 irregular ones"
            );
        }
        _ => assert_eq!(large, irregular, "decoding depends on read sizes"),
    }
    Some(match (large, irregular) {
        (Decoded::TooLong(_), _) | (_, Decoded::TooLong(_)) => DECODED_LIMIT + 1,
        (Decoded::Whole(n, _), _) => n,
        // Broken within the limit: the ingest stops at the damage too.
        _ => 0,
    })
}

/// A decompression bomb: only its first [`DECODED_LIMIT`] bytes are walked.
fn walk_prefix(data: &[u8], scratch: &Path) {
    let Ok((r, _)) = decode::open(Cursor::new(data.to_vec()), scratch) else {
        return;
    };
    let _ = walk::walk(r.take(DECODED_LIMIT), |entry| {
        if let walk::Entry::File { data, .. } = entry {
            let _ = io::copy(data, &mut io::sink());
        }
        Ok::<(), walk::WalkError>(())
    });
}

/// The in-memory store, refusing blobs larger than [`DECODED_LIMIT`] as a full disk refuses
/// blobs larger than its free space (the memory store itself takes any size on trust).
#[derive(Default)]
struct BoundedStore {
    inner: MemoryStore,
}

impl ContentStore for BoundedStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn exists(&self, digest: &Digest) -> crate::store::Result<Option<u64>> {
        self.inner.exists(digest)
    }

    fn write(
        &self,
        data: &mut dyn Read,
        size: u64,
        want: Option<&Digest>,
    ) -> crate::store::Result<Put> {
        if size > DECODED_LIMIT {
            return Err(StoreError::NoRoom {
                what: want.map_or("a blob".into(), |d| format!("blob {d}")),
                size,
                path: "memory".into(),
                free: DECODED_LIMIT,
            });
        }
        self.inner.write(data, size, want)
    }

    fn read(&self, digest: &Digest) -> crate::store::Result<Vec<u8>> {
        self.inner.read(digest)
    }
}

/// The option sets every inventory is planned with.
fn plan_options() -> [PlanOptions; 3] {
    [
        PlanOptions::default(),
        PlanOptions {
            platforms: PlatformPolicy::All,
            base_name: Some("example.com/base".into()),
            index_name: Some("example.com/fuzz/index:all".into()),
            digest_refs: true,
        },
        PlanOptions {
            platforms: PlatformPolicy::Only(vec![
                Platform::new("linux", "arm64", ""),
                Platform::new("linux", "arm", "v6"),
            ]),
            base_name: Some("Not A Base".into()),
            index_name: None,
            digest_refs: false,
        },
    ]
}

fn ingest_and_plan(data: &[u8], scratch: &Path) {
    let store = BoundedStore::default();
    let mut counters = Counters::default();
    let inv = match ingest::ingest(Cursor::new(data.to_vec()), &store, scratch, &mut counters) {
        Ok(inv) => inv,
        Err(e) => {
            let _ = (e.to_string(), e.is_archive_fault());
            return;
        }
    };
    for (digest, bytes) in &inv.json {
        assert_eq!(
            Digest::of(bytes),
            *digest,
            "a JSON document kept under another digest"
        );
    }
    for opts in plan_options() {
        match understand::plan(&inv, &opts) {
            Ok(plan) => {
                check_plan(&inv, &plan, |d| store.exists(d).ok().flatten().is_some());
                store_what_images_need(&inv, &plan, &store);
            }
            Err(e) => drop(e.to_string()),
        }
    }
}

/// What the import does after planning ([`crate::import::store_planned`]), after which every blob
/// of every image is in the store.
fn store_what_images_need(inv: &Inventory, plan: &Plan, store: &dyn ContentStore) {
    let mut counters = Counters::default();
    let stored = crate::import::store_planned(inv, plan, store, &mut counters);
    assert!(stored.is_ok(), "storing the plan's blobs: {stored:?}");
    for d in plan.images.iter().flat_map(|i| i.blobs.iter()) {
        assert!(
            matches!(store.exists(d), Ok(Some(_))),
            "blob {d} of an image is not in the store after the plan's blobs were stored"
        );
    }
}

/// Properties of every plan: image names are valid, normalised references, each once; each
/// image's blobs include its target and can be found (in the store, among the JSON documents
/// kept, or synthesised); synthesised blobs hash to their digest.
fn check_plan(inv: &Inventory, plan: &Plan, stored: impl Fn(&Digest) -> bool) {
    let mut names = BTreeSet::new();
    for image in &plan.images {
        let parsed = Reference::parse_normalized(&image.name);
        assert!(
            parsed.as_ref().is_ok_and(|r| r.to_string() == image.name),
            "image name {:?} is not a normalised reference: {parsed:?}",
            image.name
        );
        assert!(
            names.insert(&image.name),
            "image {:?} planned twice",
            image.name
        );
        assert!(
            image.blobs.contains(&image.target.digest),
            "image {:?} does not hold its own target",
            image.name
        );
        for d in &image.blobs {
            assert!(
                stored(d) || inv.json.contains_key(d) || plan.synthesized.contains_key(d),
                "blob {d} of image {:?} is nowhere",
                image.name
            );
        }
    }
    for (d, bytes) in &plan.synthesized {
        assert_eq!(
            Digest::of(bytes),
            *d,
            "a synthesised blob under another digest"
        );
    }
    let _ = format!("{:?}", plan.problems);
}

// ---------------------------------------------------------------------------------------------
// understand

/// Separates the files of an [`understand`] input: a line `== <name>` starts a file (its content
/// runs to the newline before the next such line), `=> <name> -> <target>` is a link.
const FILE_MARK: &[u8] = b"== ";
const LINK_MARK: &[u8] = b"=> ";

/// The records of an [`understand`] input: (is a link, header line, content).
fn records(data: &[u8]) -> Vec<(bool, &[u8], &[u8])> {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| i == 0 || data[i - 1] == b'\n')
        .filter(|&i| data[i..].starts_with(FILE_MARK) || data[i..].starts_with(LINK_MARK))
        .collect();
    let mut out = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&next| next - 1);
        let record = &data[start + FILE_MARK.len()..end.max(start + FILE_MARK.len())];
        let (header, content) = match record.iter().position(|b| *b == b'\n') {
            Some(nl) => (&record[..nl], &record[nl + 1..]),
            None => (record, &record[record.len()..]),
        };
        out.push((data[start..].starts_with(LINK_MARK), header, content));
    }
    out
}

/// The inventory a walk of these files would give if every declared digest were right.
fn trusted_inventory(data: &[u8]) -> Option<Inventory> {
    let mut inv = Inventory::default();
    for (is_link, header, content) in records(data) {
        let header = String::from_utf8_lossy(header);
        if is_link {
            let (name, target) = header.split_once(" -> ")?;
            let (name, target) = (walk::normalize(name).ok()?, walk::normalize(target).ok()?);
            inv.links.insert(name, target);
            continue;
        }
        // A name that escapes makes the walk refuse the whole archive.
        let name = walk::normalize(&header).ok()?;
        match name.as_str() {
            "oci-layout" => inv.oci_layout = Some(content.to_vec()),
            "index.json" => inv.index_json = Some(content.to_vec()),
            "manifest.json" => inv.manifest_json = Some(content.to_vec()),
            "repositories" => {}
            _ => {
                let digest = ingest::declared_digest(&name)
                    .map(|d| d.unwrap_or_else(|| Digest::of(content)));
                let json = content
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'{' || *b == b'[');
                if let (true, Ok(d)) = (json, &digest) {
                    inv.deferred.insert(d.clone());
                    inv.json.insert(d.clone(), content.to_vec());
                }
                let head = content[..content.len().min(16)].to_vec();
                let size = content.len() as u64;
                inv.files.insert(name, FileRecord { digest, size, head });
            }
        }
    }
    Some(inv)
}

/// A list of named files (see [`FILE_MARK`]) whose declared digests are trusted, through
/// planning.
pub fn understand(data: &[u8]) {
    let Some(inv) = trusted_inventory(data) else {
        return;
    };
    for opts in plan_options() {
        match understand::plan(&inv, &opts) {
            Ok(plan) => check_plan(&inv, &plan, |d| {
                inv.files.values().any(|f| f.digest.as_ref() == Ok(d))
            }),
            Err(e) => drop(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// reference

/// containerd's reference grammar (`distribution/reference`'s regular expressions).
struct Grammar {
    reference: Regex,
    identifier: Regex,
    tag: Regex,
}

fn grammar() -> &'static Grammar {
    static GRAMMAR: OnceLock<Grammar> = OnceLock::new();
    GRAMMAR.get_or_init(|| {
        let alnum = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let component = format!("{alnum}(?:{separator}{alnum})*");
        let label = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let host = format!(r"(?:{label}(?:\.{label})*|\[(?:[a-fA-F0-9:]+)\])");
        let domain = format!("{host}(?::[0-9]+)?");
        let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}";
        let name = format!("(?:({domain})/)?{component}(?:/{component})*");
        Grammar {
            reference: Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$"))
                .expect("the reference grammar"),
            identifier: Regex::new("^[a-f0-9]{64}$").expect("the identifier grammar"),
            tag: Regex::new(&format!("^{tag}$")).expect("the tag grammar"),
        }
    })
}

/// containerd's `reference/docker.ParseDockerRef`, transcribed, printed: `None` where it fails,
/// and where airlift departs from it on purpose: digests are sha256 only (the one algorithm of
/// airlift's digests), and a name always has a registry host (see below).
fn containerd_parse(s: &str) -> Option<String> {
    let g = grammar();
    if g.identifier.is_match(s) {
        return None; // "cannot specify 64-byte hexadecimal strings"
    }
    // splitDockerDomain
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), s.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.to_lowercase() != remote {
        return None;
    }
    let full = format!("{domain}/{remainder}");
    let caps = g.reference.captures(&full)?;
    // A first component that looks like a registry host but is not a valid one (`a_b.c/d`) is
    // read by containerd's grammar as a path component, giving a name without a domain: airlift
    // refuses such names instead ("the registry host is not valid").
    let _domain = caps.get(2)?;
    let name = caps.get(1)?.as_str();
    if name.len() > 255 {
        return None;
    }
    let tag = caps.get(3).map(|m| m.as_str());
    let digest = caps.get(4).map(|m| m.as_str());
    if let Some(d) = digest {
        d.parse::<Digest>().ok()?;
    }
    Some(match (tag, digest) {
        (_, Some(d)) => format!("{name}@{d}"),
        (Some(t), None) => format!("{name}:{t}"),
        (None, None) => format!("{name}:latest"),
    })
}

/// A string as an image reference: airlift's parse agrees with containerd's, and a parsed
/// reference prints as itself.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_full_reference(s);
    assert_eq!(valid_tag(s), grammar().tag.is_match(s), "tag {s:?}");
    let parsed = Reference::parse_normalized(s);
    assert_eq!(
        parsed.as_ref().ok().map(|r| r.to_string()),
        containerd_parse(s),
        "{s:?} parses unlike containerd's ParseDockerRef ({parsed:?})"
    );
    let r = match parsed {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let printed = r.to_string();
    assert_eq!(
        Reference::parse_normalized(&printed).as_ref(),
        Ok(&r),
        "{printed:?}"
    );
    assert!(printed.starts_with(&r.repository()));
    assert_eq!(r.repository(), format!("{}/{}", r.domain(), r.path()));
    assert!(r.repository().len() <= 255);
    match r.tag() {
        Some(t) => assert!(valid_tag(t) && r.object() == t, "{printed:?}"),
        None => assert!(r.object().starts_with("@sha256:"), "{printed:?}"),
    }
    let pinned = r.with_digest(&Digest::of(data));
    assert_eq!(
        Reference::parse_normalized(&pinned.to_string()).as_ref(),
        Ok(&pinned)
    );
}

// ---------------------------------------------------------------------------------------------
// platform

/// Platform strings and raw platforms (one per line, `os/arch/variant`), and the whole input as
/// a JSON platform: normalisation is idempotent, parsing gives normalised platforms that print
/// and parse as themselves, matching ignores normalisation and a platform matches itself.
pub fn platform(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut all = Vec::new();
    for line in text.lines().take(8) {
        if let Ok(p) = Platform::parse(line) {
            assert_eq!(p.clone().normalized(), p, "{line:?} parses unnormalised");
            assert_eq!(Platform::parse(&p.to_string()).as_ref(), Ok(&p), "{line:?}");
            all.push(p);
        }
        let mut parts = line.splitn(3, '/');
        let raw = Platform {
            os: parts.next().unwrap_or_default().to_string(),
            architecture: parts.next().unwrap_or_default().to_string(),
            variant: parts.next().unwrap_or_default().to_string(),
            ..Platform::default()
        };
        all.push(raw);
    }
    if let Ok(p) = serde_json::from_slice::<Platform>(data) {
        let again: Platform = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again, p, "a platform's JSON does not read back");
        all.push(p);
    }
    for p in &all {
        let n = p.clone().normalized();
        assert_eq!(n.clone().normalized(), n, "normalising {p:?} twice");
        assert!(
            PlatformPolicy::Only(vec![n.clone()]).matches(p),
            "{n} and {p:?}"
        );
        assert!(PlatformPolicy::All.matches(p));
        assert_eq!(
            PlatformPolicy::Host.matches(p),
            PlatformPolicy::Only(vec![Platform::host()]).matches(p)
        );
        for q in &all {
            let only = PlatformPolicy::Only(vec![q.clone().normalized()]);
            assert_eq!(only.matches(p), only.matches(&n), "{q:?} matching {p:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// filters

/// An item to match filters against: a name and labels.
struct Item {
    name: String,
    labels: HashMap<String, String>,
}

impl Adaptor for Item {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.name.clone()),
            Some("labels") => map_field(&path[1..], &self.labels),
            _ => None,
        }
    }
}

fn item(name: &str, labels: &[(&str, &str)]) -> Item {
    Item {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Filter strings (one per line, up to a line `--`), then `key=value` labels of one more item:
/// a request matches what any of its strings matches, a string's error names the right string,
/// and joining two strings with `,` matches what both match.
pub fn filters(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let strings: Vec<&str> = lines.by_ref().take_while(|l| *l != "--").take(8).collect();
    let mut items = vec![
        item("foo", &[("foo", "true")]),
        item("bar", &[]),
        item(
            "",
            &[("a.b", "c"), ("example.com/x", "a b \"c\""), ("", "empty")],
        ),
    ];
    items.push(Item {
        name: strings.first().copied().unwrap_or_default().to_string(),
        labels: lines
            .take(16)
            .map(|l| l.split_once('=').unwrap_or((l, "")))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    let each: Vec<Result<Filter, FilterError>> =
        strings.iter().map(|s| Filter::parse(&[s])).collect();
    match Filter::parse(&strings) {
        Ok(f) => {
            for it in &items {
                let any = each.iter().any(|e| {
                    e.as_ref()
                        .expect("each string of a valid request")
                        .matches(it)
                });
                assert_eq!(f.matches(it), strings.is_empty() || any, "{strings:?}");
            }
        }
        Err(e) => {
            let FilterError::Syntax { index, .. } = &e;
            let _ = e.to_string();
            assert!(each[*index].is_err(), "error names a valid string: {e}");
            assert!(each[..*index].iter().all(Result::is_ok), "{e}");
        }
    }
    if let [Ok(a), Ok(b), ..] = &each[..] {
        if !strings[0].is_empty() && !strings[1].is_empty() {
            let joined = format!("{},{}", strings[0], strings[1]);
            let both = Filter::parse(&[&joined]);
            let both = both.unwrap_or_else(|e| panic!("{joined:?}: {e}"));
            for it in &items {
                assert_eq!(
                    both.matches(it),
                    a.matches(it) && b.matches(it),
                    "{joined:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config

/// TOML text as the daemon's configuration file: a configuration that parses is valid, and its
/// derived settings can all be had.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match crate::config::Config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(c.validate().is_ok(), "parsed, yet invalid: {c:?}");
    assert!(c.platform_policy().is_ok() && c.priority_set().is_ok());
    let _ = c.settle();
    let dirs = c.watched_dirs();
    let follow = usize::from(!c.follow.is_empty());
    assert_eq!(
        dirs.len(),
        c.images_dirs.len() + c.intake_dirs.len() + follow
    );
    for d in &c.intake_dirs {
        assert!(c.is_intake(&d.join("archive.tar")), "{d:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// proxy_write

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

/// The bytes a writer on `reference` resumes with: the ingest's data when it is this ref's and
/// its total agrees (as `LocalStore::writer` decides).
fn resumable(root: &ContentRoot, reference: &str, total: u64) -> Vec<u8> {
    let dir = root.ingest(reference);
    let (Ok(r), Ok(data)) = (
        std::fs::read_to_string(dir.join("ref")),
        std::fs::read(dir.join("data")),
    ) else {
        return Vec::new();
    };
    let on_disk: u64 = std::fs::read_to_string(dir.join("total"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if r != reference || (total > 0 && on_disk > 0 && total != on_disk) {
        return Vec::new();
    }
    data
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
