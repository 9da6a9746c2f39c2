//! The OCI Distribution API's error responses: a status and a JSON body
//! `{"errors":[{"code","message","detail"}]}` with the spec's codes.

/// An error code of the distribution spec, with the status it is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 404: the blob is not served from this repository.
    BlobUnknown,
    /// 404: the manifest (tag or digest) is not served from this repository.
    ManifestUnknown,
    /// 404: no image of this repository is served.
    NameUnknown,
    /// 400: the repository name is invalid.
    NameInvalid,
    /// 400: the digest is not one.
    DigestInvalid,
    /// 405: this endpoint is read-only; any write is refused.
    Unsupported,
    /// 404: no such endpoint of the API.
    NotFound,
    /// 503: too many connections, or containerd unreachable.
    Unavailable,
}

impl Code {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Code::BlobUnknown | Code::ManifestUnknown | Code::NameUnknown | Code::NotFound => 404,
            Code::NameInvalid | Code::DigestInvalid => 400,
            Code::Unsupported => 405,
            Code::Unavailable => 503,
        }
    }

    /// The spec's code.
    pub fn code(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            // The spec has no code for these; distribution answers them with these names.
            Code::NotFound => "NOT_FOUND",
            Code::Unavailable => "UNAVAILABLE",
        }
    }

    /// The spec's message.
    pub fn message(self) -> &'static str {
        match self {
            Code::BlobUnknown => "blob unknown to registry",
            Code::ManifestUnknown => "manifest unknown",
            Code::NameUnknown => "repository name not known to registry",
            Code::NameInvalid => "invalid repository name",
            Code::DigestInvalid => "provided digest did not match uploaded content",
            Code::Unsupported => "the operation is unsupported: this registry is read-only",
            Code::NotFound => "no such endpoint",
            Code::Unavailable => "service unavailable",
        }
    }

    /// The JSON body, with `detail` (a string, omitted when empty).
    pub fn body(self, detail: &str) -> Vec<u8> {
        let mut e = serde_json::json!({ "code": self.code(), "message": self.message() });
        if !detail.is_empty() {
            e["detail"] = serde_json::Value::String(detail.to_string());
        }
        serde_json::to_vec(&serde_json::json!({ "errors": [e] })).expect("JSON of strings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_specs() {
        let body: serde_json::Value =
            serde_json::from_slice(&Code::BlobUnknown.body("sha256:ab")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"errors": [{
                "code": "BLOB_UNKNOWN",
                "message": "blob unknown to registry",
                "detail": "sha256:ab",
            }]})
        );
        let body: serde_json::Value = serde_json::from_slice(&Code::Unsupported.body("")).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
        assert!(body["errors"][0].get("detail").is_none());
        for (code, status) in [
            (Code::ManifestUnknown, 404),
            (Code::NameUnknown, 404),
            (Code::NameInvalid, 400),
            (Code::DigestInvalid, 400),
            (Code::Unsupported, 405),
            (Code::Unavailable, 503),
        ] {
            assert_eq!(code.status(), status, "{code:?}");
        }
        // A detail with quotes and control characters stays valid JSON.
        let body = Code::NameInvalid.body("a\"b\n\u{1}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["detail"], "a\"b\n\u{1}");
    }
}
