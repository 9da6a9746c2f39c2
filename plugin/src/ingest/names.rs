//! What an entry's name says: the layout files, docker save's legacy metadata (never
//! content), and the digest a blob's path or name declares.

use crate::archive::understand::{BlobError, Inventory};
use crate::digest::Digest;

/// Whether `name` is a layout file: kept in memory for the plan ([`keep_layout_file`]), never
/// stored.
pub(crate) fn is_layout_file(name: &str) -> bool {
    matches!(
        name,
        "oci-layout" | "index.json" | "manifest.json" | "repositories"
    )
}

/// Keeps a layout document in the inventory (`repositories`, docker save's legacy list, is not
/// kept).
pub(crate) fn keep_layout_file(inv: &mut Inventory, name: &str, doc: Vec<u8>) {
    match name {
        "oci-layout" => inv.oci_layout = Some(doc),
        "index.json" => inv.index_json = Some(doc),
        "manifest.json" => inv.manifest_json = Some(doc),
        _ => {}
    }
}

/// docker save's legacy per-layer metadata (`<id>/json`, `<id>/VERSION`): never content.
pub(crate) fn is_legacy_metadata(name: &str) -> bool {
    match name.split_once('/') {
        Some((dir, file)) => Digest::from_hex(dir).is_some() && matches!(file, "json" | "VERSION"),
        None => false,
    }
}

/// The digest an entry's path declares: `blobs/sha256/<hex>` (OCI), or `<hex>.json` / `<hex>.tar`
/// (docker save names configs and layers by digest). `Err` for an OCI blob path that is not a
/// usable digest.
pub fn declared_digest(name: &str) -> Result<Option<Digest>, BlobError> {
    if let Some(rest) = name.strip_prefix("blobs/") {
        return match rest.split_once('/') {
            Some(("sha256", hex)) => Digest::from_hex(hex)
                .map(Some)
                .ok_or_else(|| BlobError::Path(name.to_string())),
            Some((alg, _)) => Err(BlobError::Algorithm(alg.to_string())),
            None => Ok(None),
        };
    }
    if !name.contains('/') {
        if let Some(hex) = name
            .strip_suffix(".json")
            .or_else(|| name.strip_suffix(".tar"))
        {
            return Ok(Digest::from_hex(hex));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_digests() {
        let hex = "3c63c9c166711109a348b05fd7860edf5355b932eac5e2835313507de144cf40";
        assert_eq!(
            declared_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(
            declared_digest(&format!("{hex}.json"))
                .unwrap()
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(
            declared_digest(&format!("{hex}.tar"))
                .unwrap()
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(declared_digest(&format!("{hex}/layer.tar")).unwrap(), None);
        assert!(declared_digest("blobs/sha512/abc").is_err());
        assert!(declared_digest("blobs/sha256/XYZ").is_err());
        assert!(is_legacy_metadata(&format!("{hex}/json")));
        assert!(!is_legacy_metadata(&format!("{hex}/layer.tar")));
    }
}
