//! The tags signatures are kept under, as registries keep them, and the image each signs:
//! cosign's simple-signing tag `sha256-<hex>.sig` and the referrers tag schema's `sha256-<hex>`
//! (an index of the manifests whose `subject` is `sha256:<hex>`). airlift records both in
//! containerd as image records of the signed image's repository, labelled
//! [`crate::labels::SUBJECT`].

use crate::archive::understand::attached::tag_subject;
use crate::digest::Digest;
use std::collections::HashMap;

/// Which of the two tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `sha256-<hex>.sig`: cosign's simple-signing manifest.
    Sig,
    /// `sha256-<hex>`: the referrers tag schema's index.
    Referrers,
}

/// The image a signature tag names and which tag it is; `None` for any other tag (the
/// archive side's reading of the schema, [`tag_subject`], of which these two are served).
pub fn subject(tag: &str) -> Option<(Digest, Kind)> {
    match tag_subject(tag)? {
        (d, ".sig") => Some((d, Kind::Sig)),
        (d, "") => Some((d, Kind::Referrers)),
        _ => None,
    }
}

/// The referrers tag of `digest`: `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// The image a record tagged `tag` signs: the tag's subject, unless the record's
/// [`crate::labels::SUBJECT`] label names another (a record that contradicts itself signs
/// nothing served).
pub fn signs(tag: &str, labels: &HashMap<String, String>) -> Option<Digest> {
    let (digest, _) = subject(tag)?;
    match labels.get(crate::labels::SUBJECT) {
        Some(label) if *label != digest.to_string() => None,
        _ => Some(digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_tags_name_their_subject() {
        let d = Digest::of(b"image");
        let hex = d.hex();
        assert_eq!(
            subject(&format!("sha256-{hex}.sig")),
            Some((d.clone(), Kind::Sig))
        );
        assert_eq!(
            subject(&format!("sha256-{hex}")),
            Some((d.clone(), Kind::Referrers))
        );
        assert_eq!(referrers_tag(&d), format!("sha256-{hex}"));
        for other in [
            "latest".to_string(),
            format!("sha256-{hex}.att"),
            format!("sha256-{}", &hex[1..]),
            format!("sha512-{hex}"),
            format!("sha256-{}.sig", hex.to_uppercase()),
        ] {
            assert_eq!(subject(&other), None, "{other}");
        }
        let tag = format!("sha256-{hex}.sig");
        let mut labels = HashMap::new();
        assert_eq!(signs(&tag, &labels), Some(d.clone()));
        labels.insert(crate::labels::SUBJECT.to_string(), d.to_string());
        assert_eq!(signs(&tag, &labels), Some(d.clone()));
        labels.insert(
            crate::labels::SUBJECT.to_string(),
            Digest::of(b"another").to_string(),
        );
        assert_eq!(signs(&tag, &labels), None);
    }
}
