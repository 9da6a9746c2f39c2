//! Chain IDs: the names of committed layer snapshots, as the OCI image spec defines them
//! (`identity.ChainID` in containerd): the chain of one layer is its diff ID, the chain of
//! `n` layers is `sha256(chain(n-1) + " " + diffid(n))`.

use crate::digest::Digest;

/// The chain ID of `parent` (the chain below) topped with the layer `diff_id`.
pub fn next(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// The chain ID of every prefix of `diff_ids`: `[chain(1), chain(2), …]`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let c = next(out.last(), d);
        out.push(c);
    }
    out
}

/// The chain ID of all of `diff_ids` (`None` for an image without layers).
pub fn top(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(hex_byte: char) -> Digest {
        Digest::from_hex(&hex_byte.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn one_layer_is_its_own_chain() {
        assert_eq!(chain_ids(&[d('a')]), vec![d('a')]);
        assert_eq!(top(&[]), None);
    }

    #[test]
    fn chains_hash_the_parent_a_space_and_the_diff_id() {
        let (a, b, c) = (d('a'), d('b'), d('c'));
        let ab = Digest::of(format!("{a} {b}").as_bytes());
        let abc = Digest::of(format!("{ab} {c}").as_bytes());
        assert_eq!(
            chain_ids(&[a.clone(), b.clone(), c.clone()]),
            vec![a.clone(), ab, abc.clone()]
        );
        assert_eq!(top(&[a, b, c]), Some(abc));
    }

    #[test]
    fn agrees_with_sha256sum() {
        // printf 'sha256:aaa…a sha256:bbb…b' | sha256sum
        let want = "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c";
        assert_eq!(chain_ids(&[d('a'), d('b')])[1].to_string(), want);
    }
}
