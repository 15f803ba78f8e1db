//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! read into JSON for the kinds kubectl's `create` subcommands send that way: `Namespace`,
//! `ConfigMap`, `Secret` and `ServiceAccount`. (kubectl falls back to JSON after a 415 only
//! for CBOR, so answering 415 would leave `kubectl create namespace` failing.)
//!
//! The body is the `k8s\0` magic and a `runtime.Unknown` message: the object's `TypeMeta`
//! and its own message in `raw`. Fields are read by the numbers in Kubernetes'
//! `generated.proto`; Go's encoder writes empty strings, zeros and zero times for fields
//! that JSON would leave out, so those are left out here too. A field this reader does not
//! know is an error that names it, never dropped in silence.

use base64::Engine as _;
use serde_json::Map;
use serde_json::Value;

/// The media type, as clients send it in `Content-Type`.
pub(super) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// How one field of a message becomes JSON.
#[derive(Clone, Copy)]
enum Kind {
    String,
    Int,
    Bool,
    /// A `Time`: seconds and nanos, as RFC 3339.
    Time,
    Message(&'static [Field]),
    StringMap,
    /// `map<string, bytes>`: base64 in JSON.
    BytesMap,
    Strings,
    Messages(&'static [Field]),
}

type Field = (u64, &'static str, Kind);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Kind::String),
    (3, "name", Kind::String),
    (4, "uid", Kind::String),
    (5, "apiVersion", Kind::String),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Kind::String),
    (2, "generateName", Kind::String),
    (3, "namespace", Kind::String),
    (4, "selfLink", Kind::String),
    (5, "uid", Kind::String),
    (6, "resourceVersion", Kind::String),
    (7, "generation", Kind::Int),
    (8, "creationTimestamp", Kind::Time),
    (9, "deletionTimestamp", Kind::Time),
    (10, "deletionGracePeriodSeconds", Kind::Int),
    (11, "labels", Kind::StringMap),
    (12, "annotations", Kind::StringMap),
    (13, "ownerReferences", Kind::Messages(OWNER_REFERENCE)),
    (14, "finalizers", Kind::Strings),
];

const LOCAL_OBJECT_REFERENCE: &[Field] = &[(1, "name", Kind::String)];

/// The kinds read, by `apiVersion` and `kind`: each one's top-level fields.
const KINDS: &[(&str, &str, &[Field])] = &[
    (
        "v1",
        "Namespace",
        &[
            (1, "metadata", Kind::Message(OBJECT_META)),
            (2, "spec", Kind::Message(&[(1, "finalizers", Kind::Strings)])),
            (3, "status", Kind::Message(&[(1, "phase", Kind::String)])),
        ],
    ),
    (
        "v1",
        "ConfigMap",
        &[
            (1, "metadata", Kind::Message(OBJECT_META)),
            (2, "data", Kind::StringMap),
            (3, "binaryData", Kind::BytesMap),
            (4, "immutable", Kind::Bool),
        ],
    ),
    (
        "v1",
        "Secret",
        &[
            (1, "metadata", Kind::Message(OBJECT_META)),
            (2, "data", Kind::BytesMap),
            (3, "type", Kind::String),
            (4, "stringData", Kind::StringMap),
            (5, "immutable", Kind::Bool),
        ],
    ),
    (
        "v1",
        "ServiceAccount",
        &[
            (1, "metadata", Kind::Message(OBJECT_META)),
            (3, "imagePullSecrets", Kind::Messages(LOCAL_OBJECT_REFERENCE)),
            (4, "automountServiceAccountToken", Kind::Bool),
        ],
    ),
];

/// The object in a protobuf request body, as JSON.
///
/// # Errors
///
/// What is wrong with the body, in words for a `400` or `415` answer: not the envelope, a kind
/// this reader does not know, or a field it does not know.
pub(super) fn decode(body: &[u8]) -> Result<Value, Unreadable> {
    let envelope = body.strip_prefix(MAGIC).ok_or(Unreadable::Malformed("no k8s\\0 prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for field in Fields(envelope) {
        match field? {
            (1, Wire::Bytes(type_meta)) => {
                for field in Fields(type_meta) {
                    match field? {
                        (1, Wire::Bytes(value)) => api_version = utf8(value)?,
                        (2, Wire::Bytes(value)) => kind = utf8(value)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            (3 | 4, Wire::Bytes(value)) if !value.is_empty() => {
                return Err(Unreadable::Malformed("a content encoding or type inside the envelope"));
            }
            _ => {}
        }
    }
    let fields = KINDS
        .iter()
        .find(|(version, name, _)| *version == api_version && *name == kind)
        .map(|(_, _, fields)| *fields)
        .ok_or_else(|| Unreadable::Kind(format!("{kind} ({api_version})")))?;
    let mut object = message(raw, fields, &kind)?;
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    Ok(Value::Object(object))
}

/// Why a protobuf body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// Not protobuf as Kubernetes writes it.
    Malformed(&'static str),
    /// A kind this reader has no fields for.
    Kind(String),
    /// A field this reader does not know: `Kind.field number`.
    Field(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "the protobuf body is malformed: {what}"),
            Self::Kind(kind) => write!(
                f,
                "the in-memory API server reads protobuf bodies of Namespace, ConfigMap, Secret and ServiceAccount \
                 only, not {kind}: send it as application/json"
            ),
            Self::Field(field) => write!(
                f,
                "the in-memory API server does not read field {field} of a protobuf body: send it as application/json"
            ),
        }
    }
}

fn message(bytes: &[u8], fields: &[Field], name: &str) -> Result<Map<String, Value>, Unreadable> {
    let mut object = Map::new();
    for field in Fields(bytes) {
        let (number, wire) = field?;
        let (_, key, kind) = fields
            .iter()
            .find(|(known, _, _)| *known == number)
            .ok_or_else(|| Unreadable::Field(format!("{name}.{number}")))?;
        let path = format!("{name}.{key}");
        let value = match (kind, wire) {
            (Kind::String, Wire::Bytes(value)) => {
                Some(utf8(value)?.into()).filter(|value: &Value| value != "")
            }
            (Kind::Int, Wire::Varint(value)) => Some(Value::from(value as i64)).filter(|value| value != 0),
            (Kind::Bool, Wire::Varint(value)) => Some((value != 0).into()),
            (Kind::Time, Wire::Bytes(value)) => time(value)?,
            (Kind::Message(fields), Wire::Bytes(value)) => Some(message(value, fields, &path)?.into()),
            (Kind::Strings, Wire::Bytes(value)) => {
                push(&mut object, key, utf8(value)?.into());
                None
            }
            (Kind::Messages(fields), Wire::Bytes(value)) => {
                push(&mut object, key, message(value, fields, &path)?.into());
                None
            }
            (Kind::StringMap | Kind::BytesMap, Wire::Bytes(entry)) => {
                let (entry_key, entry_value) = map_entry(entry)?;
                let entry_value = match kind {
                    Kind::BytesMap => base64::engine::general_purpose::STANDARD.encode(entry_value),
                    _ => utf8(entry_value)?,
                };
                let map = object.entry(*key).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(entry_key, entry_value.into());
                }
                None
            }
            _ => return Err(Unreadable::Malformed("a field of the wrong wire type")),
        };
        if let Some(value) = value {
            object.insert((*key).to_owned(), value);
        }
    }
    Ok(object)
}

fn push(object: &mut Map<String, Value>, key: &str, value: Value) {
    if let Value::Array(items) = object.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
        items.push(value);
    }
}

/// A `map<string, _>` entry: key 1, value 2.
fn map_entry(entry: &[u8]) -> Result<(String, &[u8]), Unreadable> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for field in Fields(entry) {
        match field? {
            (1, Wire::Bytes(bytes)) => key = utf8(bytes)?,
            (2, Wire::Bytes(bytes)) => value = bytes,
            _ => return Err(Unreadable::Malformed("a map entry with a field other than key and value")),
        }
    }
    Ok((key, value))
}

/// A `Time` (seconds 1, nanos 2) as RFC 3339; `None` for Go's zero time, which JSON leaves out.
fn time(bytes: &[u8]) -> Result<Option<Value>, Unreadable> {
    const GO_ZERO: i64 = -62_135_596_800;
    let mut seconds = 0;
    for field in Fields(bytes) {
        if let (1, Wire::Varint(value)) = field? {
            seconds = value as i64;
        }
    }
    if seconds == GO_ZERO || seconds == 0 {
        return Ok(None);
    }
    let at =
        jiff::Timestamp::from_second(seconds).map_err(|_| Unreadable::Malformed("a time out of range"))?;
    Ok(Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into()))
}

fn utf8(bytes: &[u8]) -> Result<String, Unreadable> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Unreadable::Malformed("a string that is not UTF-8"))
}

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), Unreadable>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Wire<'a>), Unreadable> {
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let length =
                    usize::try_from(self.varint()?).map_err(|_| Unreadable::Malformed("a length"))?;
                let bytes = self.0.get(..length).ok_or(Unreadable::Malformed("a length past the end"))?;
                self.0 = &self.0[length..];
                Wire::Bytes(bytes)
            }
            5 => self.skip(4)?,
            _ => return Err(Unreadable::Malformed("an unknown wire type")),
        };
        Ok((tag >> 3, wire))
    }

    fn skip(&mut self, length: usize) -> Result<Wire<'a>, Unreadable> {
        self.0 = self.0.get(length..).ok_or(Unreadable::Malformed("a fixed-size field past the end"))?;
        Ok(Wire::Fixed)
    }

    fn varint(&mut self) -> Result<u64, Unreadable> {
        let mut value = 0_u64;
        for (index, byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.0 = &self.0[index + 1..];
                return Ok(value);
            }
        }
        Err(Unreadable::Malformed("a varint past the end"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn bytes(number: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3 | 2, &mut out);
        varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, raw), bytes(3, b""), bytes(4, b"")].concat()
    }

    /// As Go writes a ConfigMap: every string of ObjectMeta, empty or not, and a zero time.
    #[test]
    fn a_config_map_as_go_writes_it_reads_as_json_without_the_zero_values() {
        let zero_time = {
            let mut time = vec![1 << 3];
            varint((-62_135_596_800_i64) as u64, &mut time);
            time
        };
        let entry = |key: &str, value: &[u8]| [bytes(1, key.as_bytes()), bytes(2, value)].concat();
        let meta = [
            bytes(1, b"c"),
            bytes(2, b""),
            bytes(3, b"ns"),
            bytes(8, &zero_time),
            bytes(11, &entry("app", b"x")),
            bytes(14, b"a/f"),
            bytes(14, b"b/f"),
        ]
        .concat();
        let raw = [bytes(1, &meta), bytes(2, &entry("a", b"b")), bytes(3, &entry("bin", &[0, 1]))].concat();
        let object = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": "c", "namespace": "ns", "labels": { "app": "x" }, "finalizers": ["a/f", "b/f"] },
                "data": { "a": "b" },
                "binaryData": { "bin": "AAE=" },
            })
        );
    }

    #[test]
    fn what_is_not_read_is_named() {
        assert_eq!(decode(b"{}"), Err(Unreadable::Malformed("no k8s\\0 prefix")));
        let error = decode(&envelope("apps/v1", "Deployment", &[])).unwrap_err();
        assert_eq!(error, Unreadable::Kind("Deployment (apps/v1)".to_owned()));
        assert!(error.to_string().contains("send it as application/json"), "{error}");
        let unknown = bytes(1, &bytes(17, b""));
        assert_eq!(
            decode(&envelope("v1", "Secret", &unknown)),
            Err(Unreadable::Field("Secret.metadata.17".to_owned()))
        );
        assert_eq!(
            decode(&envelope("v1", "Secret", &[0x0a, 0x05, 0x01])),
            Err(Unreadable::Malformed("a length past the end"))
        );
    }
}
