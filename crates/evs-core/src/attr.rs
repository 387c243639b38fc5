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

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::Engine as _;
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
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => {
            let exp: i64 = body[i + 1..]
                .parse()
                .map_err(|_| err("malformed exponent"))?;
            (&body[..i], exp)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err("not a decimal number"));
    }
    let digits: String = format!("{int_part}{frac_part}");
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Ok(()); // zero
    }
    let significant = trimmed.trim_end_matches('0');
    if significant.len() > MAX_NUMBER_DIGITS {
        return Err(err("more than 38 significant digits"));
    }
    // Decimal exponent of the leading significant digit.
    let leading_zeros = digits.len() - trimmed.len();
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
    // With serde_json's arbitrary precision a Number keeps its text exactly;
    // text that is not JSON number syntax (".5", "+1") is kept as a string.
    Number::from_str(text)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Base64 (standard alphabet, padded), the encoding DynamoDB JSON uses for binary.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Converts an attribute value to DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}` …).
pub fn to_dynamo_json(value: &AttrValue) -> Value {
    let (tag, inner) = match value {
        AttrValue::S(s) => ("S", Value::String(s.clone())),
        AttrValue::N(n) => ("N", Value::String(n.clone())),
        AttrValue::B(b) => ("B", Value::String(base64_encode(b))),
        AttrValue::Bool(b) => ("BOOL", Value::Bool(*b)),
        AttrValue::Null => ("NULL", Value::Bool(true)),
        AttrValue::M(m) => ("M", item_to_dynamo_json(m)),
        AttrValue::L(l) => ("L", Value::Array(l.iter().map(to_dynamo_json).collect())),
        AttrValue::Ss(s) => (
            "SS",
            Value::Array(s.iter().cloned().map(Value::String).collect()),
        ),
        AttrValue::Ns(n) => (
            "NS",
            Value::Array(n.iter().cloned().map(Value::String).collect()),
        ),
        AttrValue::Bs(b) => (
            "BS",
            Value::Array(b.iter().map(|b| Value::String(base64_encode(b))).collect()),
        ),
    };
    let mut map = Map::new();
    map.insert(tag.to_owned(), inner);
    Value::Object(map)
}

/// Converts an item to a DynamoDB JSON object.
pub fn item_to_dynamo_json(item: &Item) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), to_dynamo_json(v)))
            .collect(),
    )
}

/// Parses a DynamoDB JSON object (an image or `Keys`) into an item.
pub fn item_from_dynamo_json(value: &Value) -> Result<Item, AttrError> {
    let Value::Object(map) = value else {
        return Err(dj_err("", "an item must be a JSON object"));
    };
    map.iter()
        .map(|(k, v)| Ok((k.clone(), from_dynamo_json_at(v, k)?)))
        .collect()
}

/// Parses one DynamoDB JSON attribute value.
pub fn from_dynamo_json(value: &Value) -> Result<AttrValue, AttrError> {
    from_dynamo_json_at(value, "")
}

fn dj_err(path: &str, reason: impl Into<String>) -> AttrError {
    AttrError::DynamoJson {
        path: if path.is_empty() {
            "$".to_owned()
        } else {
            path.to_owned()
        },
        reason: reason.into(),
    }
}

fn from_dynamo_json_at(value: &Value, path: &str) -> Result<AttrValue, AttrError> {
    let Value::Object(map) = value else {
        return Err(dj_err(
            path,
            "an attribute value must be an object with one type key",
        ));
    };
    let mut entries = map.iter();
    let (Some((tag, inner)), None) = (entries.next(), entries.next()) else {
        return Err(dj_err(
            path,
            "an attribute value must have exactly one type key",
        ));
    };
    let string = |v: &Value| -> Result<String, AttrError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| dj_err(path, format!("{tag} must hold a string")))
    };
    let number = |v: &Value| -> Result<String, AttrError> {
        // AWS sends numbers as strings; accept a JSON number as well.
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(dj_err(path, format!("{tag} must hold a number string"))),
        };
        validate_number(&text).map_err(|e| dj_err(path, e.to_string()))?;
        Ok(text)
    };
    let binary = |v: &Value| -> Result<Vec<u8>, AttrError> {
        let s = v
            .as_str()
            .ok_or_else(|| dj_err(path, format!("{tag} must hold a base64 string")))?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| dj_err(path, format!("invalid base64: {e}")))
    };
    let array = |v: &Value| -> Result<Vec<Value>, AttrError> {
        v.as_array()
            .cloned()
            .ok_or_else(|| dj_err(path, format!("{tag} must hold an array")))
    };
    Ok(match tag.as_str() {
        "S" => AttrValue::S(string(inner)?),
        "N" => AttrValue::N(number(inner)?),
        "B" => AttrValue::B(binary(inner)?),
        "BOOL" => AttrValue::Bool(
            inner
                .as_bool()
                .ok_or_else(|| dj_err(path, "BOOL must hold true or false"))?,
        ),
        "NULL" => AttrValue::Null,
        "M" => {
            let Value::Object(m) = inner else {
                return Err(dj_err(path, "M must hold an object"));
            };
            AttrValue::M(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), from_dynamo_json_at(v, &format!("{path}.{k}"))?)))
                    .collect::<Result<_, AttrError>>()?,
            )
        }
        "L" => AttrValue::L(
            array(inner)?
                .iter()
                .enumerate()
                .map(|(i, v)| from_dynamo_json_at(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        "SS" => AttrValue::Ss(array(inner)?.iter().map(string).collect::<Result<_, _>>()?),
        "NS" => AttrValue::Ns(array(inner)?.iter().map(number).collect::<Result<_, _>>()?),
        "BS" => AttrValue::Bs(array(inner)?.iter().map(binary).collect::<Result<_, _>>()?),
        other => return Err(dj_err(path, format!("unknown attribute type {other:?}"))),
    })
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
        let item = item_from_dynamo_json(&dj).unwrap();
        assert_eq!(item["b"], AttrValue::B(vec![0, 1, 2]));
        assert_eq!(item_to_dynamo_json(&item), dj);
    }

    #[test]
    fn dynamo_json_errors_name_the_path() {
        let err = item_from_dynamo_json(&json!({"a": {"M": {"b": {"N": "x"}}}})).unwrap_err();
        assert!(err.to_string().contains("a.b"), "{err}");
        assert!(item_from_dynamo_json(&json!({"a": {"Q": 1}})).is_err());
        assert!(item_from_dynamo_json(&json!({"a": {"S": "x", "N": "1"}})).is_err());
        assert!(item_from_dynamo_json(&json!([])).is_err());
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
}
