//! JSON read the way containers/image reads its own formats (policy.json, simple-signing
//! payloads, Rekor SETs): no object may repeat a key, and each object is checked for unknown and
//! missing keys by its reader, with containers/image's messages.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Why a JSON document is not what its reader accepts. `at` is where, as a path
/// (`transports.docker["docker.io"][0].keyPath`; empty for the top-level object).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all, or a key repeated (serde_json's message, with line and column).
    #[error("{0}")]
    Syntax(String),
    /// A key the object's reader does not know.
    #[error("{}Unknown key {key:?}", place(at))]
    Unknown { at: String, key: String },
    /// A key the object's reader requires.
    #[error("{}Key {key:?} missing in a JSON object", place(at))]
    Missing { at: String, key: String },
    /// A value of the wrong JSON type.
    #[error("{}{want} expected", place(at))]
    Type { at: String, want: &'static str },
}

/// `at: `, or nothing at the top level.
fn place(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

/// Parses `text`, refusing any object with a repeated key (`Duplicate key "x"`).
pub(crate) fn parse(text: &[u8]) -> Result<Value, JsonError> {
    serde_json::from_slice::<Strict>(text)
        .map(|s| s.0)
        .map_err(|e| JsonError::Syntax(e.to_string()))
}

/// A JSON value whose objects have no repeated keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("Duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// One JSON object being read, and where it is.
pub(crate) struct Object<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

impl<'a> Object<'a> {
    /// `v` as an object; `at` names it in errors.
    pub(crate) fn new(v: &'a Value, at: impl Into<String>) -> Result<Object<'a>, JsonError> {
        let at = at.into();
        match v {
            Value::Object(map) => Ok(Object { map, at }),
            _ => Err(JsonError::Type {
                at,
                want: "JSON object",
            }),
        }
    }

    /// Where this object is.
    pub(crate) fn at(&self) -> &str {
        &self.at
    }

    /// The path of `key` inside this object.
    pub(crate) fn at_key(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// The keys, in document order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.map.iter()
    }

    /// Refuses any key not in `known`.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), JsonError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(JsonError::Unknown {
                at: self.at.clone(),
                key: key.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses any key not in `fields`, and requires each of them.
    pub(crate) fn exactly(&self, fields: &[&str]) -> Result<(), JsonError> {
        self.only(fields)?;
        match fields.iter().find(|k| !self.map.contains_key(**k)) {
            Some(key) => Err(JsonError::Missing {
                at: self.at.clone(),
                key: key.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The value of a key `exactly` required.
    pub(crate) fn field(&self, key: &str) -> Result<&'a Value, JsonError> {
        self.get(key).ok_or_else(|| JsonError::Missing {
            at: self.at.clone(),
            key: key.to_string(),
        })
    }

    /// A string value, if the key is present (JSON `null` reads as absent, as Go's decoder does).
    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, JsonError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(key, "JSON string")),
        }
    }

    /// A required string value.
    pub(crate) fn required_str(&self, key: &str) -> Result<&'a str, JsonError> {
        self.field(key)?;
        self.str(key)?.ok_or_else(|| self.wrong(key, "JSON string"))
    }

    /// A list of strings, if the key is present.
    pub(crate) fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, JsonError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| self.wrong(key, "list of JSON strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.wrong(key, "list of JSON strings")),
        }
    }

    /// An integer value (Go decodes JSON numbers into `int64` only when they are integers).
    pub(crate) fn required_i64(&self, key: &str) -> Result<i64, JsonError> {
        self.field(key)?
            .as_i64()
            .ok_or_else(|| self.wrong(key, "JSON integer"))
    }

    fn wrong(&self, key: &str, want: &'static str) -> JsonError {
        JsonError::Type {
            at: self.at_key(key),
            want,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert!(parse(br#"{"a":{"b":1,"c":[{"d":1}]}}"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":1}"#[..],
            br#"{"a":{"b":1,"b":2}}"#,
            br#"[{"x":{"y":[{"z":1,"z":1}]}}]"#,
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("Duplicate key"), "{e}");
        }
        assert!(matches!(parse(b"{"), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn objects_check_their_keys() {
        let v = parse(br#"{"type":"x","extra":1}"#).unwrap();
        let o = Object::new(&v, "default[0]").unwrap();
        assert_eq!(
            o.only(&["type"]).unwrap_err().to_string(),
            r#"default[0]: Unknown key "extra""#
        );
        assert_eq!(
            o.exactly(&["type", "extra", "more"])
                .unwrap_err()
                .to_string(),
            r#"default[0]: Key "more" missing in a JSON object"#
        );
        assert_eq!(o.required_str("type").unwrap(), "x");
        assert_eq!(
            o.required_str("extra").unwrap_err().to_string(),
            "default[0].extra: JSON string expected"
        );
        assert!(Object::new(&Value::Null, "x").is_err());
        // the top-level object has no place to name
        let top = Object::new(&v, "").unwrap();
        assert_eq!(
            top.only(&["type"]).unwrap_err().to_string(),
            r#"Unknown key "extra""#
        );
        assert_eq!(top.at_key("type"), "type");
    }
}
