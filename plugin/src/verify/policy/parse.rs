//! policy.json to a [`Policy`], with containers/image's checks and messages
//! (`policy_config.go`, `policy_config_sigstore.go`): every requirement checked, and the keys
//! and CAs of the requirements airlift evaluates read and parsed as it goes.

use super::{
    Fulcio, KeyRole, NamedKey, Pki, Policy, PolicyError, Requirement, SigstoreSigned, Trust,
};
use crate::verify::crypto::{self, CryptoError, PublicKey};
use crate::verify::identity::SignedIdentity;
use crate::verify::json::{self, JsonError, Object};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The keys of a `sigstoreSigned` requirement.
const SIGSTORE_KEYS: &[&str] = &[
    "type",
    "keyPath",
    "keyPaths",
    "keyData",
    "keyDatas",
    "fulcio",
    "rekorPublicKeyPath",
    "rekorPublicKeyPaths",
    "rekorPublicKeyData",
    "rekorPublicKeyDatas",
    "pki",
    "signedIdentity",
];

/// The `keyType`s of a `signedBy` requirement.
const SIGNED_BY_KEY_TYPES: &[&str] = &[
    "GPGKeys",
    "signedByGPGKeys",
    "X509Certificates",
    "signedByX509CAs",
];

const ONE_KEY_SOURCE: &str =
    "exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio, and pki must be specified";
const ONE_REKOR_SOURCE: &str = "at most one of rekorPublickeyPath, rekorPublicKeyPaths, rekorPublickeyData and rekorPublicKeyDatas can be used simultaneously";

/// Reads one policy: its file name (for messages) and the directory relative paths start from.
pub(super) struct Loader<'a> {
    file: &'a str,
    base: &'a Path,
}

/// One key or CA of a source: a path, or a `…Data` field's name and its decoded bytes.
enum Spec<'v> {
    Path(&'v str),
    Data { field: String, bytes: Vec<u8> },
}

/// Bytes from a `…Path` or a `…Data` field, and how messages name them.
struct Source {
    label: String,
    bytes: Vec<u8>,
}

/// A `fulcio` object, checked, its CA not read yet.
struct FulcioSpec<'v> {
    ca: Spec<'v>,
    oidc_issuer: &'v str,
    subject_email: &'v str,
}

/// A `pki` object, checked, its CAs not read yet.
struct PkiSpec<'v> {
    roots: Spec<'v>,
    intermediates: Option<Spec<'v>>,
    subject_email: Option<String>,
    subject_hostname: Option<String>,
}

impl<'a> Loader<'a> {
    pub(super) fn new(file: &'a str, base: &'a Path) -> Loader<'a> {
        Loader { file, base }
    }

    /// A JSON shape error, in this file.
    fn j<T>(&self, r: Result<T, JsonError>) -> Result<T, PolicyError> {
        r.map_err(|source| PolicyError::Json {
            file: self.file.to_string(),
            source,
        })
    }

    fn invalid(&self, at: &str, why: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_string(),
            at: at.to_string(),
            why: why.into(),
        }
    }

    fn key_error(&self, at: &str, role: KeyRole, key: &str, source: CryptoError) -> PolicyError {
        PolicyError::Key {
            file: self.file.to_string(),
            at: at.to_string(),
            role,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    pub(super) fn policy(&self, text: &[u8]) -> Result<Policy, PolicyError> {
        let doc = self.j(json::parse(text))?;
        let top = self.j(Object::new(&doc, ""))?;
        self.j(top.only(&["default", "transports"]))?;
        let default = match top.get("default") {
            None | Some(Value::Null) => {
                return Err(self.invalid("default", "Default policy is missing"))
            }
            Some(v) => self.requirements(v, "default", true)?,
        };
        let mut docker = BTreeMap::new();
        if let Some(t) = top.get("transports").filter(|v| !v.is_null()) {
            let transports = self.j(Object::new(t, "transports"))?;
            for (name, scopes) in transports.entries() {
                let scopes = self.j(Object::new(scopes, format!("transports.{name}")))?;
                let evaluated = name == "docker";
                for (scope, reqs) in scopes.entries() {
                    let at = format!("transports.{name}[{scope:?}]");
                    let reqs = self.requirements(reqs, &at, evaluated)?;
                    if evaluated {
                        docker.insert(scope.clone(), reqs);
                    }
                }
            }
        }
        Ok(Policy { default, docker })
    }

    /// A scope's requirements: a non-empty list. `evaluated`: whether airlift evaluates them
    /// (`default`, `transports.docker`); the others are checked and left out.
    fn requirements(
        &self,
        v: &Value,
        at: &str,
        evaluated: bool,
    ) -> Result<Vec<Requirement>, PolicyError> {
        let list = self.j(v.as_array().ok_or_else(|| JsonError::Type {
            at: at.to_string(),
            want: "list of requirements",
        }))?;
        if list.is_empty() {
            return Err(self.invalid(
                at,
                "List of verification policy requirements must not be empty",
            ));
        }
        let mut out = Vec::new();
        for (i, r) in list.iter().enumerate() {
            out.extend(self.requirement(r, &format!("{at}[{i}]"), evaluated)?);
        }
        Ok(out)
    }

    /// One requirement; `None` when it is not `evaluated`.
    fn requirement(
        &self,
        v: &Value,
        at: &str,
        evaluated: bool,
    ) -> Result<Option<Requirement>, PolicyError> {
        let o = self.j(Object::new(v, at))?;
        let t = self.j(o.str("type"))?.unwrap_or("");
        let unsupported = |kind, why| PolicyError::Unsupported {
            file: self.file.to_string(),
            at: at.to_string(),
            kind,
            why,
        };
        match t {
            "insecureAcceptAnything" | "reject" => {
                self.j(o.exactly(&["type"]))?;
                Ok(Some(if t == "reject" {
                    Requirement::Reject
                } else {
                    Requirement::InsecureAcceptAnything
                }))
            }
            "signedBy" if evaluated => Err(unsupported(
                "signedBy",
                "GPG signatures; sign with cosign and use sigstoreSigned",
            )),
            "signedBy" => self.signed_by(&o).map(|()| None),
            "signedBaseLayer" if evaluated => Err(unsupported(
                "signedBaseLayer",
                "base layer identities are not checked",
            )),
            "signedBaseLayer" => {
                self.j(o.exactly(&["type", "baseLayerIdentity"]))?;
                let identity = self.j(o.field("baseLayerIdentity"))?;
                self.identity(identity, &o.at_key("baseLayerIdentity"))?;
                Ok(None)
            }
            "sigstoreSigned" => Ok(self
                .sigstore(&o, evaluated)?
                .map(|s| Requirement::SigstoreSigned(Box::new(s)))),
            other => Err(self.invalid(at, format!("Unknown policy requirement type {other:?}"))),
        }
    }

    /// A `signedBy` requirement of a transport airlift does not evaluate: its shape only.
    fn signed_by(&self, o: &Object) -> Result<(), PolicyError> {
        let at = o.at();
        self.j(o.only(&[
            "type",
            "keyType",
            "keyPath",
            "keyPaths",
            "keyData",
            "signedIdentity",
        ]))?;
        if let Some(v) = o.get("signedIdentity") {
            self.identity(v, &o.at_key("signedIdentity"))?;
        }
        let key_type = self.j(o.str("keyType"))?.unwrap_or("");
        if !SIGNED_BY_KEY_TYPES.contains(&key_type) {
            return Err(self.invalid(at, format!("invalid keyType {key_type:?}")));
        }
        let path = self.j(o.str("keyPath"))?.filter(|p| !p.is_empty());
        let paths = self.j(o.strings("keyPaths"))?;
        let data = match self.j(o.str("keyData"))? {
            Some(d) => Some(self.decode(d, at, "keyData")?),
            None => None,
        };
        let sources = usize::from(path.is_some())
            + usize::from(paths.is_some())
            + usize::from(data.is_some());
        if sources != 1 {
            return Err(self.invalid(
                at,
                "exactly one of keyPath, keyPaths and keyData must be specified",
            ));
        }
        Ok(())
    }

    /// A `sigstoreSigned` requirement, checked; its keys and CAs read when `evaluated`.
    fn sigstore(&self, o: &Object, evaluated: bool) -> Result<Option<SigstoreSigned>, PolicyError> {
        let at = o.at();
        self.j(o.only(SIGSTORE_KEYS))?;
        let identity = match o.get("signedIdentity").filter(|v| !v.is_null()) {
            None => SignedIdentity::MatchRepoDigestOrExact,
            Some(v) => self.identity(v, &o.at_key("signedIdentity"))?,
        };
        let keys = self.spec(o, "key", ONE_KEY_SOURCE)?;
        let fulcio = match o.get("fulcio").filter(|v| !v.is_null()) {
            Some(f) => Some(self.fulcio_spec(f, &o.at_key("fulcio"))?),
            None => None,
        };
        let pki = match o.get("pki").filter(|v| !v.is_null()) {
            Some(p) => Some(self.pki_spec(p, &o.at_key("pki"))?),
            None => None,
        };
        let sources = usize::from(keys.is_some())
            + usize::from(fulcio.is_some())
            + usize::from(pki.is_some());
        if sources != 1 {
            return Err(self.invalid(at, ONE_KEY_SOURCE));
        }
        let rekor = self.spec(o, "rekorPublicKey", ONE_REKOR_SOURCE)?;
        if fulcio.is_some() && rekor.is_none() {
            return Err(self.invalid(at, "At least one of rekorPublickeyPath, rekorPublicKeyPaths, rekorPublickeyData and rekorPublicKeyDatas must be specified if fulcio is used"));
        }
        if pki.is_some() && rekor.is_some() {
            return Err(self.invalid(at, "rekorPublickeyPath, rekorPublicKeyPaths, rekorPublickeyData and rekorPublicKeyDatas are not supported for pki"));
        }
        if !evaluated {
            return Ok(None);
        }
        let trust = match (keys, fulcio, pki) {
            (Some(keys), _, _) => Trust::Keys(self.keys(keys, at, KeyRole::PublicKey)?),
            (_, Some(f), _) => Trust::Fulcio(self.fulcio(f, &o.at_key("fulcio"))?),
            (_, _, Some(p)) => Trust::Pki(self.pki(p, &o.at_key("pki"))?),
            (None, None, None) => unreachable!("exactly one key source was checked above"),
        };
        let rekor = match rekor {
            None => Vec::new(),
            Some(spec) => self
                .keys(spec, at, KeyRole::RekorKey)?
                .into_iter()
                .map(|k| {
                    if k.key.is_ecdsa() {
                        Ok(k.key)
                    } else {
                        let e = CryptoError::NotEcdsa;
                        Err(self.key_error(at, KeyRole::RekorKey, &k.label, e))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Some(SigstoreSigned {
            trust,
            rekor,
            identity,
        }))
    }

    /// `{prefix}Path`, `{prefix}Paths`, `{prefix}Data`, `{prefix}Datas`: at most one of them (an
    /// empty path counts as absent, as in containers/image; `several` is the message when more
    /// are given); a list must not be empty; data is decoded.
    fn spec<'v>(
        &self,
        o: &Object<'v>,
        prefix: &str,
        several: &str,
    ) -> Result<Option<Vec<Spec<'v>>>, PolicyError> {
        let at = o.at();
        let (path_k, paths_k) = (format!("{prefix}Path"), format!("{prefix}Paths"));
        let (data_k, datas_k) = (format!("{prefix}Data"), format!("{prefix}Datas"));
        let nonempty = |list: Vec<&'v str>, key: &str| {
            if list.is_empty() {
                Err(self.invalid(at, format!("{key:?} contains no entries")))
            } else {
                Ok(list)
            }
        };
        let mut found = Vec::new();
        if let Some(p) = self.j(o.str(&path_k))?.filter(|p| !p.is_empty()) {
            found.push(vec![Spec::Path(p)]);
        }
        if let Some(ps) = self.j(o.strings(&paths_k))? {
            found.push(
                nonempty(ps, &paths_k)?
                    .into_iter()
                    .map(Spec::Path)
                    .collect(),
            );
        }
        if let Some(d) = self.j(o.str(&data_k))? {
            let bytes = self.decode(d, at, &data_k)?;
            found.push(vec![Spec::Data {
                field: data_k,
                bytes,
            }]);
        }
        if let Some(ds) = self.j(o.strings(&datas_k))? {
            let mut specs = Vec::new();
            for (i, d) in nonempty(ds, &datas_k)?.into_iter().enumerate() {
                let field = format!("{datas_k}[{i}]");
                let bytes = self.decode(d, at, &field)?;
                specs.push(Spec::Data { field, bytes });
            }
            found.push(specs);
        }
        if found.len() > 1 {
            return Err(self.invalid(at, several));
        }
        Ok(found.pop())
    }

    /// `{path}` / `{data}` of a `fulcio` or `pki` object: at most one of them, exactly one
    /// when `required`.
    fn one_spec<'v>(
        &self,
        o: &Object<'v>,
        path_k: &str,
        data_k: &str,
        required: bool,
    ) -> Result<Option<Spec<'v>>, PolicyError> {
        let at = o.at();
        let path = self.j(o.str(path_k))?.filter(|p| !p.is_empty());
        let data = self.j(o.str(data_k))?;
        match (path, data) {
            (Some(_), Some(_)) => Err(self.invalid(
                at,
                format!("{path_k} and {data_k} cannot be used simultaneously"),
            )),
            (None, None) if required => Err(self.invalid(
                at,
                format!("At least one of {path_k} and {data_k} must be specified"),
            )),
            (None, None) => Ok(None),
            (Some(p), None) => Ok(Some(Spec::Path(p))),
            (None, Some(d)) => Ok(Some(Spec::Data {
                field: data_k.to_string(),
                bytes: self.decode(d, at, data_k)?,
            })),
        }
    }

    /// A `…Data` value: base64 of the PEM text (a Go `[]byte` in JSON; line breaks ignored).
    fn decode(&self, b64: &str, at: &str, field: &str) -> Result<Vec<u8>, PolicyError> {
        let clean: String = b64.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        STANDARD
            .decode(clean)
            .map_err(|e| self.invalid(at, format!("{field}: illegal base64 data: {e}")))
    }

    /// The bytes a [`Spec`] names: a file, relative paths from the policy's directory.
    fn load(&self, spec: Spec<'_>, at: &str, role: KeyRole) -> Result<Source, PolicyError> {
        match spec {
            Spec::Path(p) => {
                let full = self.base.join(p);
                let bytes = std::fs::read(&full).map_err(|source| PolicyError::KeyFile {
                    file: self.file.to_string(),
                    at: at.to_string(),
                    role,
                    path: full.clone(),
                    source,
                })?;
                Ok(Source {
                    label: full.display().to_string(),
                    bytes,
                })
            }
            Spec::Data { field, bytes } => Ok(Source {
                label: field,
                bytes,
            }),
        }
    }

    /// Every key of a source, read and parsed.
    fn keys(
        &self,
        spec: Vec<Spec<'_>>,
        at: &str,
        role: KeyRole,
    ) -> Result<Vec<NamedKey>, PolicyError> {
        spec.into_iter()
            .map(|s| {
                let source = self.load(s, at, role)?;
                match PublicKey::from_pem(&source.bytes) {
                    Ok(key) => Ok(NamedKey {
                        label: source.label,
                        key,
                    }),
                    Err(e) => Err(self.key_error(at, role, &source.label, e)),
                }
            })
            .collect()
    }

    /// A source of certificates, read and parsed by `parse`.
    fn certificates<T>(
        &self,
        spec: Spec<'_>,
        at: &str,
        role: KeyRole,
        parse: fn(&[u8]) -> Result<T, CryptoError>,
    ) -> Result<(T, String), PolicyError> {
        let source = self.load(spec, at, role)?;
        match parse(&source.bytes) {
            Ok(certs) => Ok((certs, source.label)),
            Err(e) => Err(self.key_error(at, role, &source.label, e)),
        }
    }

    /// A string field; empty counts as absent (a Go `string` left unset).
    fn text<'v>(&self, o: &Object<'v>, key: &str) -> Result<Option<&'v str>, PolicyError> {
        Ok(self.j(o.str(key))?.filter(|s| !s.is_empty()))
    }

    fn fulcio_spec<'v>(&self, v: &'v Value, at: &str) -> Result<FulcioSpec<'v>, PolicyError> {
        let o = self.j(Object::new(v, at))?;
        self.j(o.only(&["caPath", "caData", "oidcIssuer", "subjectEmail"]))?;
        let ca = self.one_spec(&o, "caPath", "caData", true)?;
        let oidc_issuer = self.text(&o, "oidcIssuer")?;
        let subject_email = self.text(&o, "subjectEmail")?;
        match (ca, oidc_issuer, subject_email) {
            (_, None, _) => Err(self.invalid(at, "oidcIssuer not specified")),
            (_, _, None) => Err(self.invalid(at, "subjectEmail not specified")),
            (Some(ca), Some(oidc_issuer), Some(subject_email)) => Ok(FulcioSpec {
                ca,
                oidc_issuer,
                subject_email,
            }),
            (None, ..) => unreachable!("one_spec requires caPath or caData"),
        }
    }

    fn fulcio(&self, spec: FulcioSpec<'_>, at: &str) -> Result<Fulcio, PolicyError> {
        let (roots, ca) =
            self.certificates(spec.ca, at, KeyRole::FulcioCa, crypto::trust_anchors)?;
        Ok(Fulcio {
            roots,
            ca,
            oidc_issuer: spec.oidc_issuer.to_string(),
            subject_email: spec.subject_email.to_string(),
        })
    }

    fn pki_spec<'v>(&self, v: &'v Value, at: &str) -> Result<PkiSpec<'v>, PolicyError> {
        let o = self.j(Object::new(v, at))?;
        self.j(o.only(&[
            "caRootsPath",
            "caRootsData",
            "caIntermediatesPath",
            "caIntermediatesData",
            "subjectEmail",
            "subjectHostname",
        ]))?;
        let roots = self.one_spec(&o, "caRootsPath", "caRootsData", true)?;
        let intermediates =
            self.one_spec(&o, "caIntermediatesPath", "caIntermediatesData", false)?;
        let subject_email = self.text(&o, "subjectEmail")?.map(str::to_string);
        let subject_hostname = self.text(&o, "subjectHostname")?.map(str::to_string);
        if subject_email.is_none() && subject_hostname.is_none() {
            return Err(self.invalid(
                at,
                "At least one of subjectEmail, subjectHostname must be specified",
            ));
        }
        Ok(PkiSpec {
            roots: roots.expect("one_spec requires caRootsPath or caRootsData"),
            intermediates,
            subject_email,
            subject_hostname,
        })
    }

    fn pki(&self, spec: PkiSpec<'_>, at: &str) -> Result<Pki, PolicyError> {
        let (roots, ca) =
            self.certificates(spec.roots, at, KeyRole::PkiRoots, crypto::trust_anchors)?;
        let intermediates = match spec.intermediates {
            Some(s) => {
                self.certificates(s, at, KeyRole::PkiIntermediates, crypto::certificates)?
                    .0
            }
            None => Vec::new(),
        };
        Ok(Pki {
            roots,
            intermediates,
            ca,
            subject_email: spec.subject_email,
            subject_hostname: spec.subject_hostname,
        })
    }

    /// A `signedIdentity` (or `baseLayerIdentity`) object at `at`.
    fn identity(&self, v: &Value, at: &str) -> Result<SignedIdentity, PolicyError> {
        let o = self.j(Object::new(v, at))?;
        let t = self.j(o.str("type"))?.unwrap_or("");
        let refused = |source| PolicyError::Identity {
            file: self.file.to_string(),
            at: at.to_string(),
            source,
        };
        Ok(match t {
            "matchExact" | "matchRepoDigestOrExact" | "matchRepository" => {
                self.j(o.exactly(&["type"]))?;
                match t {
                    "matchExact" => SignedIdentity::MatchExact,
                    "matchRepository" => SignedIdentity::MatchRepository,
                    _ => SignedIdentity::MatchRepoDigestOrExact,
                }
            }
            "exactReference" => {
                self.j(o.exactly(&["type", "dockerReference"]))?;
                let r = self.j(o.required_str("dockerReference"))?;
                SignedIdentity::exact_reference(r).map_err(refused)?
            }
            "exactRepository" => {
                self.j(o.exactly(&["type", "dockerRepository"]))?;
                let r = self.j(o.required_str("dockerRepository"))?;
                SignedIdentity::exact_repository(r).map_err(refused)?
            }
            "remapIdentity" => {
                self.j(o.exactly(&["type", "prefix", "signedPrefix"]))?;
                let prefix = self.j(o.required_str("prefix"))?;
                let signed_prefix = self.j(o.required_str("signedPrefix"))?;
                SignedIdentity::remap(prefix, signed_prefix).map_err(refused)?
            }
            other => {
                return Err(
                    self.invalid(at, format!("Unknown policy reference match type {other:?}"))
                )
            }
        })
    }
}
