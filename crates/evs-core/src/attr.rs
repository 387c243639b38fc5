//! Attribute values: the table's item representation, independent of any SDK.
//!
//! [`AttrValue`] mirrors DynamoDB's attribute types one to one, so an item read
//! from the table, from a DynamoDB Streams record or from the in-memory store
//! round-trips without loss. This module converts between it and
//!
//! * plain JSON (`serde_json::Value`) for payloads and metadata: numbers stay
//!   exact because they are carried as their decimal text;
//! * DynamoDB JSON (`{"S": "…"}`, `{"N": "…"}`, …), the shape of stream records;
//!
//! and estimates an item's size by DynamoDB's rules. None of it does I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Number, Value};

/// An item: attribute name to value.
pub type Item = BTreeMap<String, AttrValue>;

/// One DynamoDB attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// String (`S`).
    S(String),
    /// Number (`N`), as its decimal text.
    N(String),
    /// Binary (`B`).
    B(Vec<u8>),
    /// Boolean (`BOOL`).
    Bool(bool),
    /// Null (`NULL`).
    Null,
    /// Map (`M`).
    M(BTreeMap<String, AttrValue>),
    /// List (`L`).
    L(Vec<AttrValue>),
    /// String set (`SS`).
    Ss(Vec<String>),
    /// Number set (`NS`).
    Ns(Vec<String>),
    /// Binary set (`BS`).
    Bs(Vec<Vec<u8>>),
}

/// Why a value cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    /// A number DynamoDB cannot store exactly.
    #[error("number {number} cannot be stored by DynamoDB: {reason}")]
    Number {
        /// The number's text.
        number: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// DynamoDB JSON that is not a valid attribute value.
    #[error("invalid DynamoDB JSON at {path}: {reason}")]
    DynamoJson {
        /// Where in the document (attribute path).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Largest number of significant digits DynamoDB keeps.
pub const MAX_NUMBER_DIGITS: usize = 38;

/// Checks that `text` is a number DynamoDB stores exactly: at most 38
/// significant digits and a magnitude between 1e-130 and 1e126.
pub fn validate_number(text: &str) -> Result<(), AttrError> {
    let err = |reason| AttrError::Number {
        number: text.to_owned(),
        reason,
    };
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    // The common case, an integer of at most 38 digits, is valid whatever
    // its zeros (this runs for every number read).
    if !body.is_empty()
        && body.len() <= MAX_NUMBER_DIGITS
        && body.bytes().all(|b| b.is_ascii_digit())
    {
        return Ok(());
    }
    let (mantissa, exponent) = match body.bytes().position(|b| b == b'e' || b == b'E') {
        Some(i) => {
            let exp: i64 = body[i + 1..]
                .parse()
                .map_err(|_| err("malformed exponent"))?;
            (&body[..i], exp)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.bytes().position(|b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err("not a decimal number"));
    }
    // The digits are `int_part` then `frac_part`; count their leading and
    // trailing zeros without joining them (this runs for every number read).
    let zeros = |part: &str| part.bytes().take_while(|&b| b == b'0').count();
    let trailing_zeros = |part: &str| part.bytes().rev().take_while(|&b| b == b'0').count();
    let mut leading_zeros = zeros(int_part);
    if leading_zeros == int_part.len() {
        leading_zeros += zeros(frac_part);
    }
    let total = int_part.len() + frac_part.len();
    if leading_zeros == total {
        return Ok(()); // zero
    }
    let mut trailing = trailing_zeros(frac_part);
    if trailing == frac_part.len() {
        trailing += trailing_zeros(int_part);
    }
    // A non-zero digit separates the leading from the trailing zeros.
    let significant = total - leading_zeros - trailing;
    if significant > MAX_NUMBER_DIGITS {
        return Err(err("more than 38 significant digits"));
    }
    // Decimal exponent of the leading significant digit.
    let magnitude = (int_part.len() as i64 - 1 - leading_zeros as i64)
        .checked_add(exponent)
        .ok_or_else(|| err("exponent out of range"))?;
    if magnitude > 125 {
        return Err(err("larger than 9.99…e125"));
    }
    if magnitude < -130 {
        return Err(err("smaller than 1e-130"));
    }
    Ok(())
}

/// Converts a JSON value to an attribute value: objects become maps, arrays
/// lists, numbers `N` with their exact text.
pub fn from_json(value: &Value) -> Result<AttrValue, AttrError> {
    Ok(match value {
        Value::Null => AttrValue::Null,
        Value::Bool(b) => AttrValue::Bool(*b),
        Value::Number(n) => {
            let text = n.to_string();
            validate_number(&text)?;
            AttrValue::N(text)
        }
        Value::String(s) => AttrValue::S(s.clone()),
        Value::Array(items) => AttrValue::L(items.iter().map(from_json).collect::<Result<_, _>>()?),
        Value::Object(map) => AttrValue::M(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), from_json(v)?)))
                .collect::<Result<_, AttrError>>()?,
        ),
    })
}

/// Converts an attribute value to JSON. Types JSON lacks are mapped as
/// documented: binary becomes a base64 string, sets become arrays. Every
/// number keeps its exact text.
pub fn to_json(value: &AttrValue) -> Value {
    match value {
        AttrValue::S(s) => Value::String(s.clone()),
        AttrValue::N(n) => number_json(n),
        AttrValue::B(b) => Value::String(base64_encode(b)),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Null => Value::Null,
        AttrValue::M(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        AttrValue::L(l) => Value::Array(l.iter().map(to_json).collect()),
        AttrValue::Ss(s) => Value::Array(s.iter().cloned().map(Value::String).collect()),
        AttrValue::Ns(n) => Value::Array(n.iter().map(|n| number_json(n)).collect()),
        AttrValue::Bs(b) => {
            Value::Array(b.iter().map(|b| Value::String(base64_encode(b))).collect())
        }
    }
}

fn number_json(text: &str) -> Value {
    // With serde_json's arbitrary precision a Number keeps its digits exactly
    // (see `json_number_text`); text that is not JSON number syntax (".5",
    // "+1") is kept as a string.
    Number::from_str(text)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The text `serde_json` gives a number written as `text` (with arbitrary
/// precision it keeps the digits and writes an exponent as `e` with a sign:
/// `1E5` becomes `1e+5`), or `None` when `text` is not JSON number syntax
/// (`.5`, `+1`, `01`, `1.`). This is what [`to_json`] writes for an `N`.
pub fn json_number_text(text: &str) -> Option<Cow<'_, str>> {
    let bytes = text.as_bytes();
    let digits_from = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_from(i + 1),
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        let end = digits_from(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    let Some(&marker) = bytes.get(i) else {
        return Some(Cow::Borrowed(text));
    };
    if marker != b'e' && marker != b'E' {
        return None;
    }
    let sign = bytes
        .get(i + 1)
        .copied()
        .filter(|b| *b == b'+' || *b == b'-');
    let digits_start = i + 1 + usize::from(sign.is_some());
    let end = digits_from(digits_start);
    if end == digits_start || end != bytes.len() {
        return None;
    }
    if marker == b'e' && sign.is_some() {
        return Some(Cow::Borrowed(text));
    }
    let mut normalized = String::with_capacity(text.len() + 1);
    normalized.push_str(&text[..i]);
    normalized.push('e');
    normalized.push(if sign == Some(b'-') { '-' } else { '+' });
    normalized.push_str(&text[digits_start..]);
    Some(Cow::Owned(normalized))
}

/// True when the value's plain JSON converts back to the very same value,
/// i.e. `from_json(&to_json(value)) == Ok(value.clone())`, decided without
/// building either: no binary, no sets, and every number already in the
/// form `serde_json` writes it (and storable by DynamoDB).
pub fn json_round_trips(value: &AttrValue) -> bool {
    match value {
        AttrValue::S(_) | AttrValue::Bool(_) | AttrValue::Null => true,
        AttrValue::N(n) => {
            json_number_text(n).is_some_and(|t| t == n.as_str()) && validate_number(n).is_ok()
        }
        AttrValue::M(m) => m.values().all(json_round_trips),
        AttrValue::L(l) => l.iter().all(json_round_trips),
        AttrValue::B(_) | AttrValue::Ss(_) | AttrValue::Ns(_) | AttrValue::Bs(_) => false,
    }
}

/// [`to_json`] of an owned value: the same JSON, moving the strings instead
/// of copying them.
pub fn into_json(value: AttrValue) -> Value {
    match value {
        AttrValue::S(s) => Value::String(s),
        AttrValue::N(n) => Number::from_str(&n).map_or(Value::String(n), Value::Number),
        AttrValue::M(m) => Value::Object(m.into_iter().map(|(k, v)| (k, into_json(v))).collect()),
        AttrValue::L(l) => Value::Array(l.into_iter().map(into_json).collect()),
        AttrValue::Ss(s) => Value::Array(s.into_iter().map(Value::String).collect()),
        other => to_json(&other),
    }
}

/// `AttrValue` serializes as DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`,
/// `{"B": "<base64>"}`, `{"M": {…}}`, …): the one writer of the format, as
/// its [`Deserialize`] is the one reader. `serde_json::to_writer` writes it
/// straight into a buffer, `serde_json::to_value` makes it a tree.
impl Serialize for AttrValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// Binary values as DynamoDB JSON spells them: base64 strings.
        struct Base64<'a>(&'a [u8]);
        impl Serialize for Base64<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&base64_encode(self.0))
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            AttrValue::S(s) => map.serialize_entry("S", s)?,
            AttrValue::N(n) => map.serialize_entry("N", n)?,
            AttrValue::B(b) => map.serialize_entry("B", &Base64(b))?,
            AttrValue::Bool(b) => map.serialize_entry("BOOL", b)?,
            AttrValue::Null => map.serialize_entry("NULL", &true)?,
            AttrValue::M(m) => map.serialize_entry("M", m)?,
            AttrValue::L(l) => map.serialize_entry("L", l)?,
            AttrValue::Ss(s) => map.serialize_entry("SS", s)?,
            AttrValue::Ns(n) => map.serialize_entry("NS", n)?,
            AttrValue::Bs(b) => {
                let b: Vec<Base64<'_>> = b.iter().map(|b| Base64(b)).collect();
                map.serialize_entry("BS", &b)?
            }
        }
        map.end()
    }
}

// ---- reading DynamoDB JSON text without building a tree ----

/// `AttrValue` deserializes from DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`,
/// `{"M": {…}}`, …), so `serde_json::from_str::<Item>(image)` reads an image
/// straight from its text, without a `serde_json::Value` in between.
///
/// It is the one reader of DynamoDB JSON: [`read_item`] and [`read_value`]
/// run it over any serde source (text, a `serde_json::Value`) and name the
/// attribute path of an error. Read from text it refuses an object that
/// repeats a key (`{"S": "a", "S": "b"}`), which a tree cannot hold.
impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AttrValueVisitor)
    }
}

/// Parses a DynamoDB JSON object (an image) from its text into an item:
/// the same result as [`read_item`] on the parsed text, errors
/// included, without building the JSON tree when the text is valid.
pub fn item_from_dynamo_json_str(text: &str) -> Result<Item, AttrError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let item = read_item(&mut de)?;
    de.end().map_err(|e| AttrError::DynamoJson {
        path: "$".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(item)
}

const TYPE_KEYS: &[&str] = &["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];
const ONE_TYPE_KEY: &str = "an attribute value must have exactly one type key";

struct AttrValueVisitor;

impl<'de> Visitor<'de> for AttrValueVisitor {
    type Value = AttrValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB JSON attribute value (an object with one type key)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttrValue, A::Error> {
        let Some(TypeKey(tag)) = map.next_key()? else {
            return Err(de::Error::custom(ONE_TYPE_KEY));
        };
        let value = match tag {
            "S" => AttrValue::S(map.next_value()?),
            "N" => AttrValue::N(map.next_value::<NumberCow<'de>>()?.0.into_owned()),
            "B" => AttrValue::B(map.next_value::<Binary>()?.0),
            "BOOL" => AttrValue::Bool(map.next_value()?),
            "NULL" => {
                map.next_value::<IgnoredAny>()?;
                AttrValue::Null
            }
            "M" => AttrValue::M(map.next_value()?),
            "L" => AttrValue::L(map.next_value()?),
            "SS" => AttrValue::Ss(map.next_value()?),
            "NS" => AttrValue::Ns(
                map.next_value::<Vec<NumberCow<'de>>>()?
                    .into_iter()
                    .map(|n| n.0.into_owned())
                    .collect(),
            ),
            "BS" => AttrValue::Bs(
                map.next_value::<Vec<Binary>>()?
                    .into_iter()
                    .map(|b| b.0)
                    .collect(),
            ),
            other => {
                return Err(de::Error::custom(format_args!(
                    "unknown attribute type {other:?}"
                )))
            }
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(ONE_TYPE_KEY));
        }
        Ok(value)
    }
}

/// A type key, one of [`TYPE_KEYS`].
struct TypeKey(&'static str);

impl<'de> Deserialize<'de> for TypeKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TypeKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a DynamoDB attribute type")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TypeKey, E> {
                TYPE_KEYS
                    .iter()
                    .find(|k| **k == v)
                    .map(|k| TypeKey(k))
                    .ok_or_else(|| E::custom(format_args!("unknown attribute type {v:?}")))
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

/// DynamoDB JSON read straight into the plain JSON [`to_json`] gives for it,
/// for the values whose plain JSON converts back exactly
/// ([`json_round_trips`]): `S`, `BOOL`, `NULL`, `N` already in the form
/// `serde_json` writes, and `M` and `L` of those. Every other value is
/// refused (binary, sets, a number such as `1E5` or `.5`, and whatever
/// [`AttrValue`] refuses): read it as an [`AttrValue`] instead.
///
/// For an event store whose payloads are JSON this is the common case, and
/// it skips building the [`AttrValue`] only to convert it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactJson(pub Value);

impl<'de> Deserialize<'de> for ExactJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ExactJsonVisitor)
    }
}

struct ExactJsonVisitor;

impl<'de> Visitor<'de> for ExactJsonVisitor {
    type Value = ExactJson;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB JSON attribute value with an exact plain JSON form")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExactJson, A::Error> {
        let Some(TypeKey(tag)) = map.next_key()? else {
            return Err(de::Error::custom(ONE_TYPE_KEY));
        };
        let value = match tag {
            "S" => Value::String(map.next_value()?),
            "N" => {
                let NumberCow(text) = map.next_value()?;
                // Only the form serde_json writes converts back to the same text.
                if json_number_text(&text).as_deref() != Some(&*text) {
                    return Err(de::Error::custom(format_args!(
                        "number {text} has no exact JSON form"
                    )));
                }
                Value::Number(Number::from_str(&text).map_err(de::Error::custom)?)
            }
            "BOOL" => Value::Bool(map.next_value()?),
            "NULL" => {
                map.next_value::<IgnoredAny>()?;
                Value::Null
            }
            "M" => Value::Object(map.next_value::<ExactJsonMap>()?.0),
            "L" => Value::Array(
                map.next_value::<Vec<ExactJson>>()?
                    .into_iter()
                    .map(|v| v.0)
                    .collect(),
            ),
            other => {
                return Err(de::Error::custom(format_args!(
                    "{other} has no exact JSON form"
                )))
            }
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(ONE_TYPE_KEY));
        }
        Ok(ExactJson(value))
    }
}

/// The entries of an `M` as a JSON object, in the map's key order (that of
/// [`AttrValue::M`]), a repeated key keeping its last value.
struct ExactJsonMap(Map<String, Value>);

impl<'de> Deserialize<'de> for ExactJsonMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExactJsonMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of DynamoDB JSON attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExactJsonMap, A::Error> {
                let mut entries: Vec<(String, Value)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value::<ExactJson>()?.0));
                }
                // Stable: of equal keys the last given stays last.
                if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                let mut object = Map::with_capacity(entries.len());
                let mut entries = entries.into_iter().peekable();
                while let Some((key, value)) = entries.next() {
                    if entries.peek().is_some_and(|(next, _)| *next == key) {
                        continue;
                    }
                    object.insert(key, value);
                }
                Ok(ExactJsonMap(object))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The text of an `N` (a string, or a JSON number), checked with
/// [`validate_number`], borrowed from the input when it can be.
struct NumberCow<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for NumberCow<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NumberCow<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<NumberCow<'de>, E> {
                validate_number(v).map_err(E::custom)?;
                Ok(NumberCow(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NumberCow<'de>, E> {
                validate_number(v).map_err(E::custom)?;
                Ok(NumberCow(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumberCow<'de>, E> {
                self.visit_string(Number::from(v).to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumberCow<'de>, E> {
                self.visit_string(Number::from(v).to_string())
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<NumberCow<'de>, E> {
                self.visit_string(v.to_string())
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<NumberCow<'de>, E> {
                self.visit_string(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumberCow<'de>, E> {
                let n = Number::from_f64(v).ok_or_else(|| E::custom("not a finite number"))?;
                self.visit_string(n.to_string())
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<NumberCow<'de>, E> {
                validate_number(&v).map_err(E::custom)?;
                Ok(NumberCow(Cow::Owned(v)))
            }
            // serde_json with arbitrary_precision hands big and decimal
            // numbers over as a one-entry map that `Number` reads.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NumberCow<'de>, A::Error> {
                let n = Number::deserialize(de::value::MapAccessDeserializer::new(map))?;
                self.visit_string(n.to_string())
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The bytes of a `B`: a base64 string.
struct Binary(Vec<u8>);

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Binary;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Binary, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Binary)
                    .map_err(|e| E::custom(format_args!("invalid base64: {e}")))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Base64 (standard alphabet, padded), the encoding DynamoDB JSON uses for binary.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads an item (an image, `Keys`) from DynamoDB JSON with the one reader,
/// [`AttrValue`]'s `Deserialize`, from any serde source (`&Value`,
/// `&mut serde_json::Deserializer`); an error names the attribute path
/// (`a.b[2]`).
pub fn read_item<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Item, AttrError> {
    serde_path_to_error::deserialize(deserializer).map_err(|e| path_error(&e, 0))
}

/// Reads one attribute value from DynamoDB JSON, as [`read_item`] does.
pub fn read_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AttrValue, AttrError> {
    serde_path_to_error::deserialize(deserializer).map_err(|e| path_error(&e, 1))
}

/// The error of a read, with the attribute path it happened at. The serde
/// path alternates attribute names (or list indexes) and type keys
/// (`a.M.b.N`); the attribute path keeps the first kind (`a.b`). `skip` is 0
/// when the path starts at an attribute name (an item), 1 when it starts at
/// a type key (a value).
fn path_error<E: fmt::Display>(err: &serde_path_to_error::Error<E>, skip: usize) -> AttrError {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in err.path().iter().skip(skip).step_by(2) {
        match segment {
            Segment::Map { key } if path.is_empty() => path.push_str(key),
            Segment::Map { key } => {
                path.push('.');
                path.push_str(key);
            }
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    AttrError::DynamoJson {
        path: if path.is_empty() {
            "$".to_owned()
        } else {
            path
        },
        reason: err.inner().to_string(),
    }
}

/// Size of a value in bytes by DynamoDB's item-size rules (numbers are
/// counted generously: one byte per digit pair plus one, plus one).
pub fn value_size(value: &AttrValue) -> usize {
    match value {
        AttrValue::S(s) => s.len(),
        AttrValue::N(n) => number_size(n),
        AttrValue::B(b) => b.len(),
        AttrValue::Bool(_) | AttrValue::Null => 1,
        AttrValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttrValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttrValue::Ss(s) => s.iter().map(String::len).sum(),
        AttrValue::Ns(n) => n.iter().map(|n| number_size(n)).sum(),
        AttrValue::Bs(b) => b.iter().map(Vec::len).sum(),
    }
}

fn number_size(text: &str) -> usize {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    digits.div_ceil(2) + 2
}

/// Size of an item in bytes by DynamoDB's rules: attribute names plus values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_dynamo_json(value: &AttrValue) -> Value {
        serde_json::to_value(value).unwrap()
    }

    fn item_to_dynamo_json(item: &Item) -> Value {
        serde_json::to_value(item).unwrap()
    }

    /// A read of text, its error without the position in the text (which a
    /// read of a tree cannot give).
    fn without_position(read: Result<Item, AttrError>) -> Result<Item, AttrError> {
        read.map_err(|e| match e {
            AttrError::DynamoJson { path, reason } => AttrError::DynamoJson {
                path,
                reason: match reason.rfind(" at line ") {
                    Some(at) => reason[..at].to_owned(),
                    None => reason,
                },
            },
            other => other,
        })
    }
    use serde_json::json;

    #[test]
    fn numbers_that_dynamodb_stores_exactly() {
        for ok in [
            "0",
            "-0",
            "1",
            "12345678901234567890123",
            "1.5e10",
            "0.000001",
            "9.9e125",
            "1e-130",
            "0.0",
        ] {
            assert_eq!(validate_number(ok), Ok(()), "{ok}");
        }
        let too_many = "1".repeat(39);
        for bad in [too_many.as_str(), "1e126", "1e-131", "abc", "", "1e", "--1"] {
            assert!(validate_number(bad).is_err(), "{bad}");
        }
        // trailing zeros are not significant
        assert_eq!(
            validate_number(&format!("{}{}", "1".repeat(38), "000")),
            Ok(())
        );
    }

    #[test]
    fn json_round_trip_keeps_numbers_exact() {
        let v: Value = serde_json::from_str(
            r#"{"big":12345678901234567890123,"neg":-1.25e-7,"s":"ünï €","l":[1,null,true,{"x":[]}],"o":{}}"#,
        )
        .unwrap();
        let back = to_json(&from_json(&v).unwrap());
        assert_eq!(back, v);
        assert_eq!(back["big"].to_string(), "12345678901234567890123");
    }

    #[test]
    fn dynamo_json_round_trip_all_types() {
        let dj = json!({
            "s": {"S": "x"}, "n": {"N": "1.50"}, "b": {"B": "AAEC"}, "t": {"BOOL": true},
            "z": {"NULL": true}, "m": {"M": {"a": {"L": [{"N": "1"}, {"SS": ["a", "b"]}]}}},
            "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AA=="]}
        });
        let item = read_item(&dj).unwrap();
        assert_eq!(item["b"], AttrValue::B(vec![0, 1, 2]));
        assert_eq!(serde_json::to_value(&item).unwrap(), dj);
    }

    #[test]
    fn dynamo_json_errors_name_the_path() {
        let err = read_item(json!({"a": {"M": {"b": {"N": "x"}}}})).unwrap_err();
        assert!(err.to_string().contains("a.b"), "{err}");
        assert!(read_item(json!({"a": {"Q": 1}})).is_err());
        assert!(read_item(json!({"a": {"S": "x", "N": "1"}})).is_err());
        assert!(read_item(json!([])).is_err());
    }

    #[test]
    fn item_size_follows_dynamodb_rules() {
        let mut item = Item::new();
        item.insert("ab".into(), AttrValue::S("xyz".into()));
        assert_eq!(item_size(&item), 5);
        item.insert(
            "m".into(),
            AttrValue::M(BTreeMap::from([("k".into(), AttrValue::Bool(true))])),
        );
        assert_eq!(item_size(&item), 5 + 1 + 3 + 1 + 1 + 1);
    }

    // ---- the text paths agree with the tree paths ----

    use proptest::prelude::*;

    /// `validate_number` as it was, joining the digits: the reference.
    fn validate_number_reference(text: &str) -> Result<(), &'static str> {
        let body = text.strip_prefix(['-', '+']).unwrap_or(text);
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(i) => (
                &body[..i],
                body[i + 1..]
                    .parse::<i64>()
                    .map_err(|_| "malformed exponent")?,
            ),
            None => (body, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("not a decimal number");
        }
        let digits = format!("{int_part}{frac_part}");
        let trimmed = digits.trim_start_matches('0');
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed.trim_end_matches('0').len() > MAX_NUMBER_DIGITS {
            return Err("more than 38 significant digits");
        }
        let leading_zeros = digits.len() - trimmed.len();
        let magnitude = (int_part.len() as i64 - 1 - leading_zeros as i64)
            .checked_add(exponent)
            .ok_or("exponent out of range")?;
        if magnitude > 125 {
            return Err("larger than 9.99…e125");
        }
        if magnitude < -130 {
            return Err("smaller than 1e-130");
        }
        Ok(())
    }

    /// Number texts, valid or not for JSON and for DynamoDB.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "-?[1-9][0-9]{20,40}",
            "-?[0-9]{1,12}\\.[0-9]{1,12}",
            "-?[1-9]\\.[0-9]{0,6}[eE][-+]?[0-9]{1,4}",
            "[-+]?0{0,3}[0-9]{0,3}\\.?[0-9]{0,3}0{0,3}([eE][-+]?[0-9]{0,3})?",
            "[-+0-9.eE ]{0,8}",
            Just("1e9999999999999999999".to_owned()),
            Just(format!("{}e-20", "1".repeat(38))),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", "[\\x00-\\x20\"\\\\/\\x7f]{0,6}", "[0-9]{1,25}"]
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..12)
    }

    fn attr_value() -> impl Strategy<Value = AttrValue> {
        let leaf = prop_oneof![
            text().prop_map(AttrValue::S),
            number_text().prop_map(AttrValue::N),
            bytes().prop_map(AttrValue::B),
            any::<bool>().prop_map(AttrValue::Bool),
            Just(AttrValue::Null),
            proptest::collection::vec(text(), 0..4).prop_map(AttrValue::Ss),
            proptest::collection::vec(number_text(), 0..4).prop_map(AttrValue::Ns),
            proptest::collection::vec(bytes(), 0..4).prop_map(AttrValue::Bs),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(AttrValue::L),
                proptest::collection::btree_map(text(), inner, 0..5).prop_map(AttrValue::M),
            ]
        })
    }

    /// A value DynamoDB JSON can carry (its numbers are valid).
    fn valid(value: &AttrValue) -> bool {
        match value {
            AttrValue::N(n) => validate_number(n).is_ok(),
            AttrValue::Ns(ns) => ns.iter().all(|n| validate_number(n).is_ok()),
            AttrValue::M(m) => m.values().all(valid),
            AttrValue::L(l) => l.iter().all(valid),
            _ => true,
        }
    }

    proptest! {
        #[test]
        fn validate_number_matches_the_reference(text in number_text()) {
            prop_assert_eq!(
                validate_number(&text).map_err(|e| match e {
                    AttrError::Number { reason, .. } => reason,
                    AttrError::DynamoJson { .. } => "?",
                }),
                validate_number_reference(&text)
            );
        }

        #[test]
        fn json_number_text_is_what_serde_json_makes_of_it(text in number_text()) {
            prop_assert_eq!(
                json_number_text(&text).map(Cow::into_owned),
                Number::from_str(&text).ok().map(|n| n.to_string())
            );
        }

        #[test]
        fn dynamo_json_written_reads_back(value in attr_value()) {
            // What is written reads back as the value, from text and from a
            // tree alike; a value DynamoDB refuses (a bad number) is refused.
            let text = serde_json::to_string(&value).unwrap();
            let from_text = read_value(&mut serde_json::Deserializer::from_str(&text));
            let from_tree = read_value(serde_json::to_value(&value).unwrap());
            prop_assert_eq!(from_text.is_ok(), valid(&value));
            prop_assert_eq!(from_tree.is_ok(), valid(&value));
            if let (Ok(a), Ok(b)) = (from_text, from_tree) {
                prop_assert_eq!(&a, &value);
                prop_assert_eq!(&b, &value);
            }
        }

        #[test]
        fn json_round_trips_without_building_the_trees(value in attr_value()) {
            prop_assert_eq!(
                json_round_trips(&value),
                from_json(&to_json(&value)).as_ref() == Ok(&value)
            );
            prop_assert_eq!(into_json(value.clone()), to_json(&value));
        }

        #[test]
        fn dynamo_json_text_reads_like_the_tree(value in attr_value(), numbers_as_json in any::<bool>()) {
            let mut tree = to_dynamo_json(&value);
            if numbers_as_json {
                // AWS sends N as strings; a JSON number is accepted as well
                fn unquote(v: &mut Value) {
                    match v {
                        Value::Object(m) => {
                            for (k, inner) in m.iter_mut() {
                                if k == "N" {
                                    if let Some(n) = inner.as_str().and_then(|s| Number::from_str(s).ok()) {
                                        *inner = Value::Number(n);
                                    }
                                } else {
                                    unquote(inner);
                                }
                            }
                        }
                        Value::Array(a) => a.iter_mut().for_each(unquote),
                        _ => {}
                    }
                }
                unquote(&mut tree);
            }
            let text = serde_json::to_string(&tree).unwrap();
            let slow = read_value(&tree);
            let fast = serde_json::from_str::<AttrValue>(&text);
            prop_assert_eq!(slow.is_ok(), valid(&value), "{:?} for {}", slow, text);
            match (&fast, &slow) {
                (Ok(f), Ok(s)) => prop_assert_eq!(f, s),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "fast {:?} slow {:?} for {}", fast, slow, text),
            }
            let item = format!("{{\"a\":{text},\"b\":{{\"S\":\"x\"}}}}");
            let tree: Value = serde_json::from_str(&item).unwrap();
            prop_assert_eq!(without_position(item_from_dynamo_json_str(&item)), read_item(&tree));
        }

        #[test]
        fn exact_json_is_read_for_exactly_the_values_that_round_trip(value in attr_value(), shuffle in any::<u64>()) {
            let mut tree = to_dynamo_json(&value);
            // DynamoDB does not promise any key order, and keys may repeat
            fn disorder(v: &mut Value, seed: u64) {
                if let Value::Object(m) = v {
                    for inner in m.values_mut() {
                        disorder(inner, seed.rotate_left(7));
                    }
                    if m.len() > 1 && seed.is_multiple_of(3) {
                        let reversed: Map<String, Value> =
                            std::mem::take(m).into_iter().rev().collect();
                        *m = reversed;
                    }
                }
                if let Value::Array(a) = v {
                    a.iter_mut().for_each(|x| disorder(x, seed.rotate_left(3)));
                }
            }
            disorder(&mut tree, shuffle);
            let text = serde_json::to_string(&tree).unwrap();
            let exact = serde_json::from_str::<ExactJson>(&text);
            prop_assert_eq!(exact.is_ok(), valid(&value) && json_round_trips(&value), "{}", text);
            if let Ok(ExactJson(json)) = exact {
                let expected = to_json(&read_value(&tree).unwrap());
                prop_assert_eq!(serde_json::to_string(&json).unwrap(), serde_json::to_string(&expected).unwrap());
            }
        }

        #[test]
        fn odd_dynamo_json_is_never_read_differently(text in "[{}\\[\\]\":,SNBOLUMT1a ]{0,24}") {
            let item = format!("{{\"a\":{{{text}}}}}");
            if let Ok(fast) = serde_json::from_str::<Item>(&item) {
                let tree: Value = serde_json::from_str(&item).unwrap();
                prop_assert_eq!(Ok(fast), read_item(&tree));
            }
        }
    }

    #[test]
    fn exact_json_sorts_keys_and_keeps_the_last_of_a_repeated_one() {
        let text = r#"{"M": {"b": {"N": "1"}, "a": {"S": "x"}, "b": {"N": "2"}, "c": {"L": [{"NULL": true}, {"BOOL": false}]}}}"#;
        let ExactJson(json) = serde_json::from_str(text).unwrap();
        assert_eq!(json.to_string(), r#"{"a":"x","b":2,"c":[null,false]}"#);
        let tree: Value = serde_json::from_str(text).unwrap();
        assert_eq!(json, to_json(&read_value(&tree).unwrap()));
        for not_exact in [
            r#"{"B": "AAEC"}"#,
            r#"{"SS": ["a"]}"#,
            r#"{"NS": ["1"]}"#,
            r#"{"BS": ["AA=="]}"#,
            r#"{"N": "1E5"}"#,
            r#"{"N": "+1"}"#,
            r#"{"N": ".5"}"#,
            r#"{"M": {"a": {"L": [{"B": "AA=="}]}}}"#,
            r#"{"N": "x"}"#,
        ] {
            assert!(
                serde_json::from_str::<ExactJson>(not_exact).is_err(),
                "{not_exact}"
            );
        }
        let ExactJson(n) = serde_json::from_str(r#"{"N": 12345678901234567890123}"#).unwrap();
        assert_eq!(n.to_string(), "12345678901234567890123");
    }

    #[test]
    fn dynamo_json_text_edge_cases() {
        let read = |t: &str| serde_json::from_str::<AttrValue>(t).map_err(|e| e.to_string());
        assert_eq!(read(r#"{"N": 1E5}"#), Ok(AttrValue::N("1e+5".into())));
        assert_eq!(
            read(r#"{"N": 12345678901234567890123}"#),
            Ok(AttrValue::N("12345678901234567890123".into()))
        );
        assert_eq!(read(r#"{"N": 7}"#), Ok(AttrValue::N("7".into())));
        assert_eq!(read(r#"{"NULL": {"x": [1]}}"#), Ok(AttrValue::Null));
        assert_eq!(
            read(r#"{"S": "caf\u00e9"}"#),
            Ok(AttrValue::S("café".into()))
        );
        for bad in [
            r#"{}"#,
            r#"{"S": "a", "N": "1"}"#,
            r#"{"S": "a", "S": "b"}"#,
            r#"{"Q": 1}"#,
            r#"{"S": 1}"#,
            r#"{"N": "x"}"#,
            r#"{"N": {"a": 1}}"#,
            r#"{"B": "!!"}"#,
            r#"{"BOOL": "true"}"#,
            r#"{"M": []}"#,
            r#"{"L": {}}"#,
            r#"{"NS": ["1", "x"]}"#,
            r#"[]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let err = item_from_dynamo_json_str(r#"{"a": {"M": {"b": {"N": "x"}}}}"#).unwrap_err();
        assert!(err.to_string().contains("a.b"), "{err}");
        assert!(item_from_dynamo_json_str("{").is_err());
    }

    /// A DynamoDB JSON item with every attribute type.
    const SAMPLE_ITEM: &str = r#"{"StreamId":{"S":"order-1"},"EventId":{"N":"3"},"Payload":{"M":{"n":{"N":"-1.5e10"},"l":{"L":[{"BOOL":true},{"NULL":true},{"S":"ünï \" €"}]},"b":{"B":"AAEC"}}},"Tags":{"SS":["a","b"]},"Nums":{"NS":["1","2.5"]},"Blobs":{"BS":["AA==","AQ=="]}}"#;

    /// Reads `text` as an item every way there is: each gives a value or a
    /// typed error, and the text and tree readers give the same one.
    fn read_every_way(text: &str) -> Result<(), TestCaseError> {
        let fast = item_from_dynamo_json_str(text);
        match serde_json::from_str::<Value>(text) {
            Ok(tree) => {
                // What the text gives, the tree gives. Text may be refused
                // where its tree is not: a repeated key, which a tree cannot
                // hold (it keeps the last), is refused in text.
                let slow = read_item(&tree);
                if let Ok(f) = &fast {
                    prop_assert_eq!(Ok(f), slow.as_ref());
                }
                if let Ok(value) = read_value(&tree) {
                    prop_assert_eq!(read_value(to_dynamo_json(&value)), Ok(value));
                }
                let _ = from_json(&tree);
            }
            Err(_) => prop_assert!(fast.is_err()),
        }
        if let Ok(item) = fast {
            prop_assert_eq!(read_item(item_to_dynamo_json(&item)), Ok(item));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn dynamo_json_of_arbitrary_bytes_is_a_value_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            read_every_way(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn dynamo_json_of_arbitrary_text_is_a_value_or_an_error(text in "\\PC{0,64}") {
            read_every_way(&text)?;
        }

        #[test]
        fn mutated_dynamo_json_is_a_value_or_an_error(bytes in evs_testkit::mutated(SAMPLE_ITEM.as_bytes().to_vec())) {
            read_every_way(&String::from_utf8_lossy(&bytes))?;
        }
    }
}
