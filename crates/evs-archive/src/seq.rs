//! Stream-record sequence numbers, ordered as the numbers they are.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Most digits a `SequenceNumber` has (AWS: 21 to 40).
pub const MAX_SEQUENCE_NUMBER_DIGITS: usize = 40;

/// Compares two `SequenceNumber`s as the decimal numbers they are: by
/// (length, text) once leading zeros are ignored. Never compare them as text
/// alone (`"9" > "10"`) nor squeeze them into an integer type (40 digits do
/// not fit a `u128`). Only numbers of one shard are comparable in meaning;
/// across shards the order is merely total.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Why a text is not a [`SequenceNumber`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SequenceNumber {text:?}: {reason}")]
pub struct SequenceNumberError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A stream record's `SequenceNumber`: a decimal string of 1 to 40 digits
/// without leading zeros (AWS sends 21 to 40), kept exactly as given and
/// ordered as a number ([`compare_sequence_numbers`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Checks and wraps a sequence number.
    pub fn new(text: impl Into<String>) -> Result<Self, SequenceNumberError> {
        let text = text.into();
        let reason = if text.is_empty() {
            Some("it is empty")
        } else if !text.bytes().all(|b| b.is_ascii_digit()) {
            Some("it is not a decimal string")
        } else if text.len() > MAX_SEQUENCE_NUMBER_DIGITS {
            Some("it has more than 40 digits")
        } else if text.starts_with('0') {
            Some("it starts with 0")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(SequenceNumberError { text, reason }),
            None => Ok(Self(text)),
        }
    }

    /// The number as its decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_sequence_numbers(&self.0, &other.0)
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = SequenceNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_sequence_numbers("9", "10"), Less);
        assert_eq!(
            compare_sequence_numbers("999999999999999999999", "1000000000000000000000"),
            Less
        );
        assert_eq!(compare_sequence_numbers("0010", "10"), Equal);
        assert_eq!(
            compare_sequence_numbers(&"9".repeat(40), &"9".repeat(39)),
            Greater
        );
        let a = SequenceNumber::new("1100000000017454423009").unwrap();
        let b = SequenceNumber::new("1100000000017454423010").unwrap();
        assert!(a < b);
        assert!(SequenceNumber::new("").is_err());
        assert!(SequenceNumber::new("0").is_err());
        assert!(SequenceNumber::new("1".repeat(40)).is_ok());
    }
}
