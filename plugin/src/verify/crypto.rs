//! Keys and certificates: PEM public keys as ring verifiers, certificate paths checked by webpki,
//! and what a signing certificate says (emails, host names, the Fulcio OIDC issuer).
//!
//! Signatures are checked as containers/image checks them: SHA-256 for every key type (ECDSA
//! with ASN.1 signatures, RSA PKCS#1 v1.5, Ed25519 pure), and SHA-384 for P-384 keys as well
//! (cosign 3.x's choice for them). cosign 3.x signs with Ed25519ph for Ed25519 keys, which
//! containers/image does not verify, nor ring, nor airlift. Certificate paths as Go's
//! `x509.Verify` with the code-signing extended key usage, where a certificate without the
//! extension may be used for anything (webpki's `required_if_present`).

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use std::time::Duration;
use x509_cert::der::asn1::{ObjectIdentifier, UintRef, Utf8StringRef};
use x509_cert::der::{self, Decode, Encode, Reader, SliceReader};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// Fulcio's OIDC issuer, v1: the raw string as the extension's value.
const OID_FULCIO_ISSUER_V1: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's OIDC issuer, v2: a DER UTF8String.
const OID_FULCIO_ISSUER_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Why a key or certificate cannot be used: a policy's key or CA file at load, or a signing
/// certificate at verification (containers/image's messages where it has one).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// No PEM block where one was expected.
    #[error("no PEM block found")]
    NoPem,
    /// A PEM block that does not decode.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A PEM block of another kind than a public key.
    #[error("a PEM block of type {0:?}, not a PUBLIC KEY")]
    NotAPublicKey(String),
    /// DER that does not parse as what it claims to be.
    #[error("invalid {what}: {why}")]
    Der { what: &'static str, why: String },
    /// A key of a type or size airlift does not verify.
    #[error("unsupported key type: {0} (airlift verifies ECDSA P-256 and P-384, RSA of 2048 to 8192 bits, and Ed25519)")]
    Unsupported(String),
    /// A key that must be ECDSA (a Rekor key) and is not.
    #[error("not an ECDSA key (a Rekor public key must be ECDSA)")]
    NotEcdsa,
    /// A certificate file with no certificate in it.
    #[error("no certificate found")]
    NoCertificate,
    /// A certificate webpki cannot use as a trust anchor.
    #[error("not usable as a trusted root: {0}")]
    Anchor(webpki::Error),
    /// A signing certificate with no path to a trusted root, for code signing, at the time it
    /// is checked at ("veryfing" is containers/image's spelling, kept so messages match).
    #[error("veryfing leaf certificate failed: {0}")]
    Path(webpki::Error),
    /// A signing certificate not valid for the host name a `pki` requirement names.
    #[error("certificate is not valid for {host}: {why}")]
    Hostname { host: String, why: String },
    /// A signing certificate without the Fulcio OIDC issuer extensions.
    #[error("Fulcio certificate is missing the issuer extension")]
    IssuerMissing,
    /// One of the Fulcio issuer extensions twice (`v1` or `v2`).
    #[error("Fulcio certificate has a duplicate OIDC issuer {0} extension")]
    IssuerDuplicate(&'static str),
    /// A v2 issuer extension that is no DER UTF8String.
    #[error("invalid ASN.1 in OIDC issuer v2 extension: {0}")]
    IssuerEncoding(String),
    /// Both issuer extensions, saying different things.
    #[error("inconsistent OIDC issuer extension values: v1 {v1:?}, v2 {v2:?}")]
    IssuerInconsistent { v1: String, v2: String },
}

/// A key type ring verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa,
    Ed25519,
}

/// A public key, ready to verify signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// What ring takes: the SEC1 point, the PKCS#1 RSAPublicKey, or the 32 Ed25519 bytes.
    raw: Vec<u8>,
    /// The SubjectPublicKeyInfo DER (what a Rekor entry's PEM must hold).
    spki: Vec<u8>,
}

impl PublicKey {
    /// The first PEM block of `data`, a `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1), as
    /// sigstore's `UnmarshalPEMToPublicKey` reads it.
    pub fn from_pem(data: &[u8]) -> Result<PublicKey, CryptoError> {
        let (label, der) = pem_blocks(data)?
            .into_iter()
            .next()
            .ok_or(CryptoError::NoPem)?;
        match label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                rsa_bits(&der)?;
                let spki = rsa_spki(&der)?;
                Ok(PublicKey {
                    kind: KeyKind::Rsa,
                    raw: der,
                    spki,
                })
            }
            other => Err(CryptoError::NotAPublicKey(other.to_string())),
        }
    }

    /// A SubjectPublicKeyInfo in DER.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let spki = SubjectPublicKeyInfoOwned::from_der(der).map_err(|e| CryptoError::Der {
            what: "public key",
            why: e.to_string(),
        })?;
        PublicKey::from_spki(&spki)
    }

    fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, CryptoError> {
        let raw = spki.subject_public_key.raw_bytes().to_vec();
        let kind = match spki.algorithm.oid {
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
                match curve {
                    Some(OID_P256) => KeyKind::EcdsaP256,
                    Some(OID_P384) => KeyKind::EcdsaP384,
                    Some(OID_P521) => return Err(CryptoError::Unsupported("ECDSA P-521".into())),
                    Some(c) => return Err(CryptoError::Unsupported(format!("ECDSA curve {c}"))),
                    None => {
                        return Err(CryptoError::Unsupported(
                            "ECDSA without a named curve".into(),
                        ))
                    }
                }
            }
            OID_RSA => {
                rsa_bits(&raw)?;
                KeyKind::Rsa
            }
            OID_ED25519 => KeyKind::Ed25519,
            other => return Err(CryptoError::Unsupported(format!("algorithm {other}"))),
        };
        let spki = spki.to_der().map_err(|e| CryptoError::Der {
            what: "public key",
            why: e.to_string(),
        })?;
        Ok(PublicKey { kind, raw, spki })
    }

    /// Whether `sig` signs `msg`: with SHA-256 for every key type (containers/image's one hash),
    /// and for a P-384 key with SHA-384 too — what cosign 3.x signs with for such keys, which
    /// containers/image refuses (a superset: the signature binds the same bytes either way).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use ring::signature as rs;
        let alg: &'static dyn rs::VerificationAlgorithm = match self.kind {
            KeyKind::EcdsaP256 => &rs::ECDSA_P256_SHA256_ASN1,
            KeyKind::EcdsaP384 => &rs::ECDSA_P384_SHA256_ASN1,
            KeyKind::Rsa => &rs::RSA_PKCS1_2048_8192_SHA256,
            KeyKind::Ed25519 => &rs::ED25519,
        };
        let ok = |alg: &'static dyn rs::VerificationAlgorithm| {
            rs::UnparsedPublicKey::new(alg, &self.raw)
                .verify(msg, sig)
                .is_ok()
        };
        ok(alg) || (self.kind == KeyKind::EcdsaP384 && ok(&rs::ECDSA_P384_SHA384_ASN1))
    }

    /// Whether this is an ECDSA key (a Rekor key must be).
    pub fn is_ecdsa(&self) -> bool {
        matches!(self.kind, KeyKind::EcdsaP256 | KeyKind::EcdsaP384)
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
}

/// The bits of a PKCS#1 RSAPublicKey's modulus, refused outside what ring verifies (2048–8192).
fn rsa_bits(pkcs1: &[u8]) -> Result<usize, CryptoError> {
    let bad = |e: der::Error| CryptoError::Der {
        what: "RSA public key",
        why: e.to_string(),
    };
    let mut r = SliceReader::new(pkcs1).map_err(bad)?;
    let bits = r
        .sequence(|r| {
            let n = UintRef::decode(r)?;
            let _e = UintRef::decode(r)?;
            let b = n.as_bytes();
            Ok::<_, der::Error>(b.len() * 8 - b.first().map_or(8, |x| x.leading_zeros() as usize))
        })
        .map_err(bad)?;
    if (2048..=8192).contains(&bits) {
        Ok(bits)
    } else {
        Err(CryptoError::Unsupported(format!("RSA of {bits} bits")))
    }
}

/// The SPKI DER of a PKCS#1 RSA key (rsaEncryption with NULL parameters, as Go marshals it).
fn rsa_spki(pkcs1: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
            oid: OID_RSA,
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: der::asn1::BitString::from_bytes(pkcs1).map_err(|e| {
            CryptoError::Der {
                what: "RSA public key",
                why: e.to_string(),
            }
        })?,
    };
    spki.to_der().map_err(|e| CryptoError::Der {
        what: "RSA public key",
        why: e.to_string(),
    })
}

/// Every PEM block of `data` as (label, DER), skipping text around them as Go's `pem.Decode` does.
pub fn pem_blocks(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, CryptoError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(start) = find(rest, BEGIN) {
        let block = &rest[start..];
        let end = find(block, END).ok_or_else(|| CryptoError::Pem("no END line".into()))?;
        // The END line runs to its closing dashes.
        let close = find(&block[end + END.len()..], b"-----")
            .ok_or_else(|| CryptoError::Pem("unterminated END line".into()))?
            + end
            + END.len()
            + 5;
        let mut decoder = der::pem::Decoder::new_detect_wrap(&block[..close])
            .map_err(|e| CryptoError::Pem(e.to_string()))?;
        let label = decoder.type_label().to_string();
        let mut der = Vec::new();
        decoder
            .decode_to_end(&mut der)
            .map_err(|e| CryptoError::Pem(e.to_string()))?;
        out.push((label, der));
        rest = &block[close..];
    }
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every `CERTIFICATE` block of `data`, each parsed (other blocks are skipped, as Go's
/// `AppendCertsFromPEM` skips them).
pub fn certificates(data: &[u8]) -> Result<Vec<CertificateDer<'static>>, CryptoError> {
    let mut out = Vec::new();
    for (label, der) in pem_blocks(data)? {
        if label != "CERTIFICATE" {
            continue;
        }
        Certificate::from_der(&der).map_err(|e| CryptoError::Der {
            what: "certificate",
            why: e.to_string(),
        })?;
        out.push(CertificateDer::from(der));
    }
    if out.is_empty() {
        return Err(CryptoError::NoCertificate);
    }
    Ok(out)
}

/// Trusted roots (a CA file): every certificate must be usable as a webpki trust anchor.
pub fn trust_anchors(data: &[u8]) -> Result<Vec<TrustAnchor<'static>>, CryptoError> {
    certificates(data)?
        .iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(CryptoError::Anchor)
        })
        .collect()
}

/// Seconds since the epoch as webpki's time.
pub fn unix_time(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

/// A signing certificate, checked to chain to `roots` through `intermediates` at `at`, for code
/// signing. The message is Go's for the same failure, with webpki's reason.
pub fn verify_path(
    leaf: &CertificateDer<'_>,
    roots: &[TrustAnchor<'static>],
    intermediates: &[CertificateDer<'static>],
    at: UnixTime,
) -> Result<(), CryptoError> {
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(CryptoError::Path)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        roots,
        intermediates,
        at,
        webpki::KeyUsage::required_if_present(EKU_CODE_SIGNING),
        None,
        None,
    )
    .map(|_| ())
    .map_err(CryptoError::Path)
}

/// Whether the certificate is valid for `host` (a DNS name or an IP address in its SAN), as
/// Go's `VerifyHostname`.
pub fn verify_hostname(leaf: &CertificateDer<'_>, host: &str) -> Result<(), CryptoError> {
    let not_valid = |why: String| CryptoError::Hostname {
        host: host.to_string(),
        why,
    };
    let name = ServerName::try_from(host).map_err(|e| not_valid(e.to_string()))?;
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|ee| ee.verify_is_valid_for_subject_name(&name))
        .map_err(|e| not_valid(e.to_string()))
}

/// What a signing certificate says about its signer.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The key that signs.
    pub key: PublicKey,
    /// SAN email addresses.
    pub emails: Vec<String>,
    /// The Fulcio OIDC issuer, or why there is none usable.
    pub issuer: Result<String, CryptoError>,
    /// Validity, in seconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
}

/// Reads a certificate's key, emails and Fulcio issuer (as containers/image's
/// `fulcioIssuerInCertificate`: v1 raw bytes, v2 a UTF8String, both must agree).
pub fn leaf(der_bytes: &[u8]) -> Result<Leaf, CryptoError> {
    let cert = Certificate::from_der(der_bytes).map_err(|e| CryptoError::Der {
        what: "certificate",
        why: e.to_string(),
    })?;
    let tbs = cert.tbs_certificate();
    let key = PublicKey::from_spki(tbs.subject_public_key_info())?;
    let mut emails = Vec::new();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for n in san.0 {
            if let GeneralName::Rfc822Name(e) = n {
                emails.push(e.to_string());
            }
        }
    }
    let issuer = fulcio_issuer(tbs);
    let validity = tbs.validity();
    Ok(Leaf {
        key,
        emails,
        issuer,
        not_before: validity.not_before.to_unix_duration().as_secs(),
        not_after: validity.not_after.to_unix_duration().as_secs(),
    })
}

/// The OIDC issuer Fulcio recorded, as containers/image's `fulcioIssuerInCertificate` reads
/// it: v1 raw bytes, v2 a UTF8String, each at most once, both equal when both are there.
fn fulcio_issuer(tbs: &x509_cert::TbsCertificate) -> Result<String, CryptoError> {
    let (mut v1, mut v2) = (None, None);
    for ext in tbs.extensions().into_iter().flatten() {
        let (slot, which) = if ext.extn_id == OID_FULCIO_ISSUER_V1 {
            (&mut v1, "v1")
        } else if ext.extn_id == OID_FULCIO_ISSUER_V2 {
            (&mut v2, "v2")
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(CryptoError::IssuerDuplicate(which));
        }
        *slot = Some(ext.extn_value.as_bytes());
    }
    let v1 = v1.map(|b| String::from_utf8_lossy(b).into_owned());
    let v2 = match v2 {
        Some(b) => Some(
            Utf8StringRef::from_der(b)
                .map(|s| s.to_string())
                .map_err(|e| CryptoError::IssuerEncoding(e.to_string()))?,
        ),
        None => None,
    };
    match (v1, v2) {
        (Some(v1), Some(v2)) if v1 != v2 => Err(CryptoError::IssuerInconsistent { v1, v2 }),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(CryptoError::IssuerMissing),
    }
}

#[cfg(test)]
mod tests;
