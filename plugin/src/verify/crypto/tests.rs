//! Keys of each type, certificate paths and what a certificate says, on the fixtures.

use super::*;
use crate::verify::signature::testkit::{leaf_validity, read, sign, while_valid};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair};

fn key(name: &str) -> PublicKey {
    PublicKey::from_pem(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn cert(name: &str) -> CertificateDer<'static> {
    certificates(&read(name)).unwrap().remove(0)
}

#[test]
fn key_types() {
    assert_eq!(key("site.pub").kind, KeyKind::EcdsaP256);
    assert_eq!(key("p384.pub").kind, KeyKind::EcdsaP384);
    assert_eq!(key("rsa.pub").kind, KeyKind::Rsa);
    assert_eq!(key("ed25519.pub").kind, KeyKind::Ed25519);
    assert!(key("site.pub").is_ecdsa() && !key("rsa.pub").is_ecdsa());
    assert_eq!(
        PublicKey::from_pem(&read("p521.pub")).unwrap_err(),
        CryptoError::Unsupported("ECDSA P-521".into())
    );
    assert_eq!(
        PublicKey::from_pem(&read("root.pem")).unwrap_err(),
        CryptoError::NotAPublicKey("CERTIFICATE".into())
    );
    assert_eq!(
        PublicKey::from_pem(b"not a key").unwrap_err(),
        CryptoError::NoPem
    );
    assert!(matches!(
        PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        Err(CryptoError::Der { .. })
    ));
}

#[test]
fn pkcs1_rsa_keys_are_the_same_key() {
    let spki = key("rsa.pub");
    let pem =
        der::pem::encode_string("RSA PUBLIC KEY", der::pem::LineEnding::LF, &spki.raw).unwrap();
    let pkcs1 = PublicKey::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(pkcs1, spki);
}

#[test]
fn keys_verify_their_signatures_only() {
    let msg = b"payload";
    let sig = sign("site.p8", msg);
    assert!(key("site.pub").verify(msg, &sig));
    assert!(!key("other.pub").verify(msg, &sig));
    assert!(!key("site.pub").verify(b"payloae", &sig));
    assert!(!key("rsa.pub").verify(msg, &sig));
}

#[test]
fn p384_keys_verify_sha384_too() {
    // (P-384 with SHA-256 is containers/image's hash; cosign 3.1.1's is the sig-p384 fixture.)
    let rng = SystemRandom::new();
    let alg = &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING;
    let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
    let k = PublicKey {
        kind: KeyKind::EcdsaP384,
        raw: pair.public_key().as_ref().to_vec(),
        spki: Vec::new(),
    };
    let sig = pair.sign(&rng, b"m").unwrap();
    assert!(k.verify(b"m", sig.as_ref()));
    assert!(!k.verify(b"n", sig.as_ref()));
}

#[test]
fn pem_blocks_skip_text_around_them() {
    let mut text = b"a key follows\n".to_vec();
    text.extend(read("site.pub"));
    text.extend(b"\nand another\n");
    text.extend(read("other.pub"));
    let blocks = pem_blocks(&text).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].1, key("site.pub").spki);
    assert_eq!(PublicKey::from_pem(&text).unwrap(), key("site.pub"));
    assert!(pem_blocks(b"-----BEGIN X-----\nAAAA\n").is_err());
}

#[test]
fn certificate_files() {
    let mut both = read("int.pem");
    both.extend(read("root.pem"));
    assert_eq!(certificates(&both).unwrap().len(), 2);
    assert_eq!(
        certificates(&read("site.pub")).unwrap_err(),
        CryptoError::NoCertificate
    );
    assert_eq!(trust_anchors(&read("root.pem")).unwrap().len(), 1);
}

#[test]
fn what_the_signing_certificate_says() {
    let l = leaf(&cert("leaf.pem")).unwrap();
    assert_eq!(l.emails, ["signer@example.com"]);
    assert_eq!(l.issuer.as_deref(), Ok("https://issuer.example.com"));
    assert!(l.not_after > l.not_before);
    // its key is the one cosign signed with (leaf.p8)
    assert!(l.key.verify(b"x", &sign("leaf.p8", b"x")));
    // a CA certificate has no Fulcio issuer
    assert_eq!(
        leaf(&cert("int.pem")).unwrap().issuer,
        Err(CryptoError::IssuerMissing)
    );
}

#[test]
fn certificate_paths() {
    let roots = trust_anchors(&read("root.pem")).unwrap();
    let other = trust_anchors(&read("other-root.pem")).unwrap();
    let ints = certificates(&read("int.pem")).unwrap();
    let (nb, na) = leaf_validity();
    let t = unix_time(while_valid());
    let leaf = cert("leaf.pem");
    assert_eq!(verify_path(&leaf, &roots, &ints, t), Ok(()));
    // the same name, another key
    let e = verify_path(&leaf, &other, &ints, t).unwrap_err();
    assert!(matches!(e, CryptoError::Path(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("veryfing leaf certificate failed: "),
        "{e}"
    );
    // no intermediate
    assert!(verify_path(&leaf, &roots, &[], t).is_err());
    // before and after its validity
    let path_error = |at| verify_path(&leaf, &roots, &ints, unix_time(at)).unwrap_err();
    assert!(path_error(nb - 1).to_string().contains("NotValidYet"));
    assert!(path_error(na + 1).to_string().contains("Expired"));
    // a TLS certificate from the same CA is not for code signing
    let tls = cert("tls-leaf.pem");
    let e = verify_path(&tls, &roots, &ints, t).unwrap_err();
    assert!(e.to_string().contains("RequiredEku"), "{e}");
}

#[test]
fn host_names() {
    let leaf = cert("leaf.pem");
    assert_eq!(verify_hostname(&leaf, "signer.example.com"), Ok(()));
    assert!(matches!(
        verify_hostname(&leaf, "other.example.com"),
        Err(CryptoError::Hostname { .. })
    ));
    assert!(verify_hostname(&leaf, "not a host").is_err());
}
