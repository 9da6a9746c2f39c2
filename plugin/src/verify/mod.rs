//! Verification at import: whether policy allows one image, decided offline from the
//! signatures that came with it, in the formats the ecosystem already uses.
//!
//! # What decides
//!
//! - [`policy`]: a containers-policy.json(5) file ([`Policy::load`]), read as strictly as
//!   containers/image reads it, every key and CA read and parsed at load; [`Policy::evaluate`]
//!   takes a [`Candidate`] (the name an image is imported under, its target digest, the
//!   [`Signature`]s found for that digest) and gives a [`Verdict`]: allowed (which scope, how
//!   each requirement was met) or refused (which scope and requirement, and why).
//! - [`lock`]: the digest lock, `NAME@sha256:…` lines; [`Lock::check`] says whether a name
//!   imports with the digest it is locked to.
//! - [`bindir`]: containerd's image verifier plugins, run as containerd runs them on a pull.
//!
//! The three are independent: the import flow asks each in turn, and an image any of them
//! refuses is not imported.
//!
//! # Signatures
//!
//! cosign 3.x writes two forms, and both count ([`signature`]):
//!
//! - simple signing ([`Signature::SimpleSigning`]): a layer of the `sha256-<hex>.sig`
//!   manifest, verified exactly as containers/image verifies it (`simple`): the payload's exact
//!   bytes signed with SHA-256 by a key of the policy, or by a certificate's key (`fulcio`:
//!   the chain checked at the time a Rekor SET proves; `pki`: checked now); then the payload
//!   read strictly, its `docker-manifest-digest` equal to the image's digest, its
//!   `docker-reference` accepted by the requirement's `signedIdentity`;
//! - Sigstore bundles v0.3 ([`Signature::Bundle`]): the layer of an OCI 1.1 referrer, a DSSE
//!   envelope over an in-toto statement (`bundle`): the envelope's PAE signed by a key of the
//!   policy or a certificate's key, the statement's predicate `https://sigstore.dev/cosign/sign/v1`
//!   and its subject digest the image's. Bundles of other predicates (attestations) are not
//!   signatures and are counted apart, as containers/image counts non-signature attachments.
//!
//! # Decisions containers/image leaves open
//!
//! - **Bundles sign no name.** containers/image cannot verify bundles at all. Here a bundle
//!   meets a `sigstoreSigned` requirement on its signer and digest alone, reported as "digest
//!   only, no signed identity" — except where the rule asks for a signed tag or digest
//!   (`matchExact`, `exactReference`): no bundle meets those, and the refusal says so. The
//!   default, `matchRepoDigestOrExact`, and `matchRepository`, `exactRepository` and
//!   `remapIdentity` accept a bundle. A site that wants names bound to bundle-signed digests
//!   writes them in the lock file.
//! - **Multi-platform images.** containers/image checks each platform's manifest against
//!   signatures made for it. An import stores the whole image under one name, so its
//!   [`Candidate::digest`] is the image's target, and for a multi-platform image that is the
//!   index: a signature on the index covers every platform (the index pins each manifest by
//!   digest). Signatures made only for a platform's manifest do not count (`cosign sign -r`
//!   signs the index too).
//! - **A bundle's evidence.** Its public-key hint is ignored (the policy's keys are tried),
//!   and so are its referrer manifest's annotations ([`Signature::Bundle`] carries them for
//!   reports only). With Rekor keys in the requirement, a bundle needs a `dsse` entry whose SET
//!   one of them signed; without, its log entries are not looked at, as containers/image
//!   ignores a simple signature's SET then.
//! - **Hashes.** SHA-256 for every key, as containers/image; for P-384 keys SHA-384 as well
//!   (what cosign after 3.1.1 signs with for them; the signature binds the same bytes). cosign
//!   signs Ed25519 keys with Ed25519ph, which containers/image does not verify, nor airlift:
//!   such signatures are refused like any that does not verify.
//! - **Keys are read at load**, not at each verification: a missing or unparsable key stops
//!   the command, naming the policy file, the scope and the key. Relative paths are taken from
//!   the policy file's directory. Evaluation does no I/O.
//! - **What cannot be verified is refused at load**: `signedBy` (GPG) and `signedBaseLayer`
//!   requirements where they would apply (`default`, `transports.docker`), P-521 and other key
//!   types ring does not verify. Other transports' scopes are checked as strictly and ignored.
//! - **What the caller finds.** [`Candidate::signatures`] holds the simple-signing layers of
//!   the digest's `.sig` manifest (of the simple-signing media type; containers/image skips
//!   other layers) and the bundle layers of its referrers (whatever their index entries say:
//!   cosign's referrers tag index gives a wrong `artifactType`).
//!
//! # Why these crates
//!
//! The cryptography is ring's (the same ring the TLS stack uses: one implementation, no C
//! toolchain beyond what rustls needs), certificate paths are webpki's (path building,
//! validity, basic and name constraints, extended key usage, with ring underneath), and
//! RustCrypto's `x509-cert` (with its `der` and `spki`) parses keys and certificates. The
//! Sigstore crates were tried and do not fit: `sigstore` 0.15 pulls an OIDC and HTTP stack,
//! OpenSSL or a second reqwest, and two generations of RustCrypto, and verifies only
//! certificate bundles with exactly one log entry; `sigstore-verify` 0.15 needs aws-lc-rs or
//! a hand-made provider and refuses every bundle made without a transparency log (as offline
//! signing makes them); neither verifies simple signing against a policy.json. The formats
//! themselves (policy.json, payloads, bundles, SETs) are small JSON read with serde_json,
//! RFC 8785 canonical JSON for SETs from `serde_json_canonicalizer`.

pub mod bindir;
mod bundle;
pub mod crypto;
mod evaluate;
pub mod gate;
pub mod identity;
mod json;
pub mod lock;
pub mod policy;
mod rekor;
pub mod signature;
mod simple;

pub use bindir::{Judgement, VerifierError, Verifiers};
pub use crypto::CryptoError;
pub use evaluate::{Candidate, Verdict};
pub use gate::{Decision, Gate, GateError, Settings};
pub use identity::{IdentityError, SignedIdentity};
pub use json::JsonError;
pub use lock::{Lock, LockError};
pub use policy::{KeyRole, Policy, PolicyError, Requirement};
pub use rekor::RekorError;
pub use signature::{Rejection, Signature};
