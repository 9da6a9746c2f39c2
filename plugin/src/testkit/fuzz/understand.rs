//! The `understand` target: named files whose declared digests are taken on trust, through
//! planning.

use super::archive::{check_plan, plan_options};
use crate::archive::understand::{self, Inventory};
use crate::archive::walk;
use crate::digest::Digest;
use crate::ingest;

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
        if ingest::is_layout_file(&name) {
            ingest::keep_layout_file(&mut inv, &name, content.to_vec());
            continue;
        }
        if ingest::is_legacy_metadata(&name) {
            continue;
        }
        let digest =
            ingest::declared_digest(&name).map(|d| d.unwrap_or_else(|| Digest::of(content)));
        if let (true, Ok(d)) = (ingest::looks_like_json(content), &digest) {
            inv.deferred.insert(d.clone());
            inv.json.insert(d.clone(), content.to_vec());
        }
        ingest::remember(
            &mut inv,
            name,
            digest,
            content.len() as u64,
            content.to_vec(),
        );
    }
    Some(inv)
}

/// A list of named files (`== <name>` lines, see `FILE_MARK`) whose declared digests are trusted, through
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
