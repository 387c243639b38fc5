//! The archive's object keys (a stable format). Keys carry the seal time,
//! not the events' time: `docs/design.md` §3 says why.
//!
//! ```text
//! <prefix>YYYY/MM/DD/HH/<sealed-at>-<sequence>-<nonce>.ndjson.gz               events (ArchiveKey)
//! <dead-letter-prefix>YYYY/MM/DD/HH/<sealed-at>-<sequence>-<nonce>.json          dead letters (DeadLetterKey)
//!
//! archive/2026/11/23/22/20261123T220732123Z-0000000000000000001100000000017454423009-67e5504410b1426f9247bb680e5fe0c8.ndjson.gz
//! ```
//!
//! * `<sealed-at>` is the moment the archiver **sealed** the object, UTC, to
//!   the millisecond, in a fixed width of 19 characters
//!   (`YYYYMMDDTHHMMSSmmmZ`), and the hour folder repeats its first digits.
//!   Every field is zero-padded, so under one prefix the UTF-8 byte order of
//!   keys (the order S3 lists them in) is seal-time order, across hour, day
//!   and year boundaries. Seal times run from 1970 to the end of 9999.
//! * No key depends on the time of the events inside: a late batch gets a new
//!   key *ahead* of every reader, never behind one (DESIGN: the ordering
//!   argument).
//! * The [`Suffix`] makes every attempt's key unique and traceable: the
//!   smallest `SequenceNumber` of the object zero-padded to 40 digits (all
//!   zeros when there is none), then a 128-bit nonce as 32 lowercase hex
//!   digits (a random UUID, or any UUID that names the attempt). Two objects
//!   sealed in the same millisecond are ordered by suffix, which is arbitrary
//!   but fixed.
//! * The extension says the encoding: `.ndjson.gz` (gzip), `.ndjson.zst`
//!   (zstd) or `.ndjson`. A key laid out as an events key with another
//!   `.ndjson.<codec>` extension is refused as [`KeyError::UnknownKind`], not
//!   as malformed: it is a newer archiver's object, which a reader must not
//!   skip.
//! * Dead letters live under a prefix of their own, in the same layout with
//!   the extension `.json`. Keep the two prefixes disjoint (neither starts
//!   with the other, e.g. `events/` and `dead-letter/`), so that listing the
//!   archive never meets a dead letter (the archiver's configuration refuses
//!   overlapping prefixes; a replayer skips any key that [`ArchiveKey::parse`]
//!   refuses or that belongs to another prefix).
//!
//! A [`Prefix`] is empty or ends with `/`, does not start with `/`, has no
//! empty, `.` or `..` segment, no control character, `\`, `*` or `?`, and
//! leaves room for the longest tail, so that no key exceeds S3's 1024 bytes,
//! a key maps safely onto a relative file path, and an IAM grant on
//! `<prefix>*` (the archiver's `s3:PutObject`) covers the prefix and nothing
//! else (IAM reads `*` and `?` in a resource as wildcards).
//!
//! [`start_after_for`] gives the `StartAfter` that lists exactly the objects
//! sealed at or after a time.

use std::cmp::Ordering;
use std::fmt;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use uuid::Uuid;

use crate::object::Compression;
use crate::seq::{SequenceNumber, MAX_SEQUENCE_NUMBER_DIGITS};

/// S3's limit on a key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The extension of dead-letter objects.
pub const DEAD_LETTER_EXTENSION: &str = ".json";
/// Earliest seal time a key can hold: 1970-01-01T00:00:00.000Z.
pub const MIN_SEALED_AT_MS: i64 = 0;
/// Latest seal time a key can hold: 9999-12-31T23:59:59.999Z.
pub const MAX_SEALED_AT_MS: i64 = 253_402_300_799_999;

/// Width of `<sealed-at>`.
const SEALED_AT_LEN: usize = 19;
/// Width of `YYYY/MM/DD/HH/`.
const HOUR_FOLDER_LEN: usize = 14;
/// Width of the nonce in hex digits.
const NONCE_LEN: usize = 32;
/// Width of `<sealed-at>-<sequence>-<nonce>`.
const FILE_STEM_LEN: usize = SEALED_AT_LEN + 1 + MAX_SEQUENCE_NUMBER_DIGITS + 1 + NONCE_LEN;
/// The longest extension of an events key.
const MAX_EXTENSION_LEN: usize = {
    let (gz, zst, none) = (
        Compression::Gzip.extension().len(),
        Compression::Zstd.extension().len(),
        Compression::None.extension().len(),
    );
    let longest = if gz > zst { gz } else { zst };
    if longest > none {
        longest
    } else {
        none
    }
};
/// The longest part of a key after its prefix.
const MAX_TAIL_LEN: usize = HOUR_FOLDER_LEN + FILE_STEM_LEN + MAX_EXTENSION_LEN;
/// Longest prefix, in UTF-8 bytes, that leaves room for every key's tail.
pub const MAX_PREFIX_BYTES: usize = MAX_KEY_BYTES - MAX_TAIL_LEN;

/// Why a prefix, a seal time or a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The prefix breaks a rule.
    #[error("invalid archive prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The seal time cannot be written in a fixed-width key.
    #[error("seal time {ms} ms is outside 1970-01-01T00:00:00.000Z..=9999-12-31T23:59:59.999Z")]
    SealedAtOutOfRange {
        /// The seal time given, epoch ms.
        ms: i64,
    },
    /// The text is not a key of this kind.
    #[error("{key:?} is not an archive {kind} key: {reason}")]
    Malformed {
        /// The text given.
        key: String,
        /// `events` or `dead-letter`.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key is laid out as an events key of `prefix` but its extension is
    /// not one this version writes or reads: an object of a newer archiver.
    #[error("{key:?} is an archive object of a kind this version cannot read ({extension:?}): upgrade to read this archive")]
    UnknownKind {
        /// The key.
        key: String,
        /// The archive prefix it is under.
        prefix: String,
        /// The extension it has.
        extension: String,
    },
}

/// Where in the bucket the archive lives: empty, or ending with `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Prefix(String);

impl Prefix {
    /// Checks and wraps a prefix (see the module docs for the rules).
    pub fn new(prefix: impl Into<String>) -> Result<Self, KeyError> {
        let prefix = prefix.into();
        let reason = if prefix.is_empty() {
            None
        } else if !prefix.ends_with('/') {
            Some("it must be empty or end with '/'")
        } else if prefix.starts_with('/') {
            Some("it must not start with '/'")
        } else if prefix.len() > MAX_PREFIX_BYTES {
            Some("it is too long: keys would exceed S3's 1024 bytes")
        } else if prefix.chars().any(char::is_control) {
            Some("it must not contain control characters")
        } else if prefix.contains('\\') {
            Some("it must not contain '\\'")
        } else if prefix.contains(['*', '?']) {
            Some("it must not contain '*' or '?' (IAM reads them as wildcards in the archiver's grant)")
        } else if prefix
            .strip_suffix('/')
            .unwrap_or(&prefix)
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            Some("it must not have an empty, '.' or '..' segment")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(KeyError::InvalidPrefix { prefix, reason }),
            None => Ok(Self(prefix)),
        }
    }

    /// The whole bucket.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// The prefix as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Prefix {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows the seal time in a key: makes each attempt's key unique and
/// traceable (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Suffix {
    sequence: Option<SequenceNumber>,
    nonce: Uuid,
}

impl Suffix {
    /// A suffix of the object whose smallest `SequenceNumber` is `sequence`,
    /// with `nonce` naming the attempt.
    pub fn new(sequence: Option<SequenceNumber>, nonce: Uuid) -> Self {
        Self { sequence, nonce }
    }

    /// A suffix with a fresh random nonce (a v4 UUID).
    pub fn random(sequence: Option<SequenceNumber>) -> Self {
        Self::new(sequence, Uuid::new_v4())
    }

    fn render(&self) -> String {
        let sequence = self.sequence.as_ref().map_or("", SequenceNumber::as_str);
        format!("{sequence:0>40}-{}", self.nonce.simple())
    }

    /// Parses `<40 digits>-<32 lowercase hex>`.
    fn parse(text: &str) -> Option<Self> {
        let (sequence, nonce) = text.split_once('-')?;
        if sequence.len() != MAX_SEQUENCE_NUMBER_DIGITS
            || nonce.len() != NONCE_LEN
            || !nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let sequence = match sequence.trim_start_matches('0') {
            "" => None,
            digits => Some(SequenceNumber::new(digits).ok()?),
        };
        Some(Self {
            sequence,
            nonce: Uuid::try_parse(nonce).ok()?,
        })
    }
}

/// The accessors, `Display` and `AsRef<str>` that [`ArchiveKey`] and
/// [`DeadLetterKey`] share; `$prefix_doc` documents `prefix()`.
macro_rules! key_accessors {
    ($key:ty, $prefix_doc:literal) => {
        impl $key {
            /// The key.
            pub fn as_str(&self) -> &str {
                &self.key
            }

            /// When the object was sealed, epoch ms (UTC).
            pub fn sealed_at_ms(&self) -> i64 {
                self.sealed_at_ms
            }

            #[doc = $prefix_doc]
            pub fn prefix(&self) -> &str {
                self.key.get(..self.prefix_len).unwrap_or_default()
            }

            /// The key's suffix.
            pub fn suffix(&self) -> &Suffix {
                &self.suffix
            }
        }

        impl fmt::Display for $key {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.key)
            }
        }

        impl AsRef<str> for $key {
            fn as_ref(&self) -> &str {
                &self.key
            }
        }
    };
}

key_accessors!(ArchiveKey, "The archive prefix the key is under.");
key_accessors!(DeadLetterKey, "The dead-letter prefix the key is under.");

/// The key of an events object: checked, and ordered as S3 lists keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchiveKey {
    key: String,
    prefix_len: usize,
    sealed_at_ms: i64,
    suffix: Suffix,
    compression: Compression,
}

impl ArchiveKey {
    /// The key of an object sealed at `sealed_at_ms` (epoch ms, UTC).
    pub fn new(
        prefix: &Prefix,
        sealed_at_ms: i64,
        suffix: &Suffix,
        compression: Compression,
    ) -> Result<Self, KeyError> {
        let key = render(prefix, sealed_at_ms, suffix, compression.extension())?;
        Ok(Self {
            key,
            prefix_len: prefix.as_str().len(),
            sealed_at_ms,
            suffix: suffix.clone(),
            compression,
        })
    }

    /// Reads a key back; refuses anything [`ArchiveKey::new`] would not write
    /// (dead-letter keys included).
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let malformed = |reason| KeyError::Malformed {
            key: key.to_owned(),
            kind: "events",
            reason,
        };
        let (stem, compression) =
            if let Some(stem) = key.strip_suffix(Compression::Gzip.extension()) {
                (stem, Compression::Gzip)
            } else if let Some(stem) = key.strip_suffix(Compression::Zstd.extension()) {
                (stem, Compression::Zstd)
            } else if let Some(stem) = key.strip_suffix(Compression::None.extension()) {
                (stem, Compression::None)
            } else {
                return Err(unknown_kind(key).unwrap_or_else(|| malformed("unknown extension")));
            };
        let parts = parse_stem(stem).map_err(malformed)?;
        Ok(Self {
            key: key.to_owned(),
            prefix_len: parts.prefix.len(),
            sealed_at_ms: parts.sealed_at_ms,
            suffix: parts.suffix,
            compression,
        })
    }

    /// How the object is encoded.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl Ord for ArchiveKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl PartialOrd for ArchiveKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The key of a dead-letter object:
/// `<dead-letter-prefix>YYYY/MM/DD/HH/<sealed-at>-<suffix>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeadLetterKey {
    key: String,
    prefix_len: usize,
    sealed_at_ms: i64,
    suffix: Suffix,
}

impl DeadLetterKey {
    /// The key of a dead-letter object sealed at `sealed_at_ms` under the
    /// dead-letter prefix `prefix`.
    pub fn new(prefix: &Prefix, sealed_at_ms: i64, suffix: &Suffix) -> Result<Self, KeyError> {
        let key = render(prefix, sealed_at_ms, suffix, DEAD_LETTER_EXTENSION)?;
        Ok(Self {
            key,
            prefix_len: prefix.as_str().len(),
            sealed_at_ms,
            suffix: suffix.clone(),
        })
    }

    /// Reads a dead-letter key back.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let malformed = |reason| KeyError::Malformed {
            key: key.to_owned(),
            kind: "dead-letter",
            reason,
        };
        let stem = key
            .strip_suffix(DEAD_LETTER_EXTENSION)
            .ok_or_else(|| malformed("unknown extension"))?;
        let parts = parse_stem(stem).map_err(malformed)?;
        Ok(Self {
            key: key.to_owned(),
            prefix_len: parts.prefix.len(),
            sealed_at_ms: parts.sealed_at_ms,
            suffix: parts.suffix,
        })
    }
}

/// The `StartAfter` for listing `prefix` from the objects sealed at or after
/// `since_ms`: every events key sealed at `since_ms` or later is greater than
/// it, every one sealed earlier is smaller. Times outside the keys' range
/// are clamped to it.
pub fn start_after_for(prefix: &Prefix, since_ms: i64) -> String {
    let ms = since_ms.clamp(MIN_SEALED_AT_MS, MAX_SEALED_AT_MS);
    match SealedAt::from_ms(ms) {
        Some(t) => format!("{prefix}{}{}", t.hour_folder(), t.stamp()),
        // Unreachable after the clamp; the bare prefix lists everything.
        None => prefix.to_string(),
    }
}

/// The calendar fields of a seal time.
struct SealedAt {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    milli: u16,
}

impl SealedAt {
    fn from_ms(ms: i64) -> Option<Self> {
        if !(MIN_SEALED_AT_MS..=MAX_SEALED_AT_MS).contains(&ms) {
            return None;
        }
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
        Some(Self {
            year: t.year(),
            month: u8::from(t.month()),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
            milli: t.millisecond(),
        })
    }

    fn hour_folder(&self) -> String {
        format!(
            "{:04}/{:02}/{:02}/{:02}/",
            self.year, self.month, self.day, self.hour
        )
    }

    fn stamp(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.milli
        )
    }

    /// Parses `YYYYMMDDTHHMMSSmmmZ`.
    fn parse(stamp: &str) -> Option<Self> {
        let b = stamp.as_bytes();
        if b.len() != SEALED_AT_LEN || b[8] != b'T' || b[18] != b'Z' {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u16> {
            let digits = stamp.get(from..to)?;
            if !digits.bytes().all(|d| d.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        let small = |from, to| num(from, to).and_then(|n| u8::try_from(n).ok());
        Some(Self {
            year: i32::from(num(0, 4)?),
            month: small(4, 6)?,
            day: small(6, 8)?,
            hour: small(9, 11)?,
            minute: small(11, 13)?,
            second: small(13, 15)?,
            milli: num(15, 18)?,
        })
    }

    fn to_ms(&self) -> Option<i64> {
        let date = Date::from_calendar_date(self.year, Month::try_from(self.month).ok()?, self.day)
            .ok()?;
        let time = Time::from_hms_milli(self.hour, self.minute, self.second, self.milli).ok()?;
        let nanos = PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp_nanos();
        let ms = i64::try_from(nanos / 1_000_000).ok()?;
        (MIN_SEALED_AT_MS..=MAX_SEALED_AT_MS)
            .contains(&ms)
            .then_some(ms)
    }
}

fn render(
    prefix: &Prefix,
    sealed_at_ms: i64,
    suffix: &Suffix,
    extension: &str,
) -> Result<String, KeyError> {
    let t =
        SealedAt::from_ms(sealed_at_ms).ok_or(KeyError::SealedAtOutOfRange { ms: sealed_at_ms })?;
    Ok(format!(
        "{prefix}{}{}-{}{extension}",
        t.hour_folder(),
        t.stamp(),
        suffix.render()
    ))
}

struct StemParts<'a> {
    /// Everything before the hour folder.
    prefix: &'a str,
    sealed_at_ms: i64,
    suffix: Suffix,
}

/// [`KeyError::UnknownKind`] for a key whose file name is a valid stem and an
/// extension of the events family that this version does not know:
/// `.ndjson.<codec>`, one more segment of letters and digits.
fn unknown_kind(key: &str) -> Option<KeyError> {
    let name_at = key.rfind('/').map_or(0, |i| i + 1);
    let stem = key.get(..name_at + FILE_STEM_LEN)?;
    let extension = key.get(name_at + FILE_STEM_LEN..)?;
    let codec = extension.strip_prefix(".ndjson.")?;
    if codec.is_empty() || !codec.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let parts = parse_stem(stem).ok()?;
    Some(KeyError::UnknownKind {
        key: key.to_owned(),
        prefix: parts.prefix.to_owned(),
        extension: extension.to_owned(),
    })
}

/// Parses `<prefix>YYYY/MM/DD/HH/<sealed-at>-<suffix>` (the key without its
/// extension); checks the prefix's rules and that the hour folder agrees with
/// the seal time.
fn parse_stem(stem: &str) -> Result<StemParts<'_>, &'static str> {
    let split = stem.len().checked_sub(FILE_STEM_LEN).ok_or("too short")?;
    let file = stem.get(split..).ok_or("malformed file name")?;
    let before = stem.get(..split).ok_or("malformed file name")?;
    let (stamp, suffix) = (
        file.get(..SEALED_AT_LEN).ok_or("malformed seal time")?,
        file.get(SEALED_AT_LEN..).ok_or("malformed file name")?,
    );
    let suffix = suffix
        .strip_prefix('-')
        .and_then(Suffix::parse)
        .ok_or("malformed suffix")?;
    let sealed = SealedAt::parse(stamp).ok_or("malformed seal time")?;
    let sealed_at_ms = sealed.to_ms().ok_or("seal time is not a valid time")?;
    let folder_at = before
        .len()
        .checked_sub(HOUR_FOLDER_LEN)
        .ok_or("no YYYY/MM/DD/HH/ folder")?;
    let folder = before.get(folder_at..).ok_or("no YYYY/MM/DD/HH/ folder")?;
    if folder != sealed.hour_folder() {
        return Err("the YYYY/MM/DD/HH/ folder does not match the seal time");
    }
    let prefix = before.get(..folder_at).ok_or("malformed prefix")?;
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Err("the hour folder is not a whole path segment");
    }
    Prefix::new(prefix).map_err(|_| "invalid prefix")?;
    Ok(StemParts {
        prefix,
        sealed_at_ms,
        suffix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::new(s).unwrap()
    }

    fn suffix() -> Suffix {
        Suffix::new(
            Some(seq("1100000000017454423009")),
            Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
        )
    }

    fn key(prefix: &str, ms: i64) -> ArchiveKey {
        ArchiveKey::new(
            &Prefix::new(prefix).unwrap(),
            ms,
            &suffix(),
            Compression::Gzip,
        )
        .unwrap()
    }

    #[test]
    fn the_key_format() {
        let k = key("archive/", 1_795_471_652_123);
        assert_eq!(
            k.as_str(),
            "archive/2026/11/23/22/20261123T220732123Z-0000000000000000001100000000017454423009-67e5504410b1426f9247bb680e5fe0c8.ndjson.gz"
        );
        assert_eq!(k.sealed_at_ms(), 1_795_471_652_123);
        assert_eq!(k.prefix(), "archive/");
        assert_eq!(ArchiveKey::parse(k.as_str()).unwrap(), k);

        let plain = ArchiveKey::new(
            &Prefix::root(),
            0,
            &Suffix::new(None, Uuid::nil()),
            Compression::None,
        )
        .unwrap();
        assert_eq!(
            plain.as_str(),
            "1970/01/01/00/19700101T000000000Z-0000000000000000000000000000000000000000-00000000000000000000000000000000.ndjson"
        );
        assert_eq!(ArchiveKey::parse(plain.as_str()).unwrap(), plain);

        let dl = DeadLetterKey::new(
            &Prefix::new("dead-letter/").unwrap(),
            1_795_471_652_123,
            &suffix(),
        )
        .unwrap();
        assert_eq!(
            dl.as_str(),
            "dead-letter/2026/11/23/22/20261123T220732123Z-0000000000000000001100000000017454423009-67e5504410b1426f9247bb680e5fe0c8.json"
        );
        assert_eq!(dl.prefix(), "dead-letter/");
        assert_eq!(DeadLetterKey::parse(dl.as_str()).unwrap(), dl);
        assert!(ArchiveKey::parse(dl.as_str()).is_err());
        assert!(DeadLetterKey::parse(k.as_str()).is_err());
    }

    #[test]
    fn the_longest_key_fits_s3() {
        let prefix = Prefix::new(format!("{}/", "p".repeat(MAX_PREFIX_BYTES - 1))).unwrap();
        let long = Suffix::new(Some(seq(&"9".repeat(40))), Uuid::max());
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let k = ArchiveKey::new(&prefix, MAX_SEALED_AT_MS, &long, c).unwrap();
            assert!(k.as_str().len() <= MAX_KEY_BYTES, "{c:?}");
        }
        let k = ArchiveKey::new(&prefix, MAX_SEALED_AT_MS, &long, Compression::Zstd).unwrap();
        assert_eq!(
            k.as_str().len(),
            MAX_KEY_BYTES,
            "the longest extension fills it"
        );
        let dl = DeadLetterKey::new(&prefix, MAX_SEALED_AT_MS, &long).unwrap();
        assert!(dl.as_str().len() <= MAX_KEY_BYTES);
        assert!(Prefix::new(format!("{}/", "p".repeat(MAX_PREFIX_BYTES))).is_err());
    }

    #[test]
    fn an_events_key_of_an_unknown_kind_is_not_malformed() {
        let p = Prefix::new("events/").unwrap();
        let k = ArchiveKey::new(&p, 1_795_471_652_123, &suffix(), Compression::Gzip).unwrap();
        let stem = k.as_str().strip_suffix(".ndjson.gz").unwrap();
        let newer = format!("{stem}.ndjson.br");
        match ArchiveKey::parse(&newer) {
            Err(KeyError::UnknownKind {
                prefix, extension, ..
            }) => assert_eq!(
                (prefix.as_str(), extension.as_str()),
                ("events/", ".ndjson.br")
            ),
            other => panic!("{other:?}"),
        }
        // dead letters and other files stay malformed events keys
        for other in [
            format!("{stem}.json"),
            format!("{stem}.txt"),
            format!("{stem}.ndjson.gz.part"),
            format!("{stem}.ndjson."),
            stem.to_owned(),
            format!("{stem}x.ndjson.br"),
            "events/readme.txt".to_owned(),
            "events/2026/11/23/22/.ndjson.br".to_owned(),
        ] {
            assert!(
                matches!(ArchiveKey::parse(&other), Err(KeyError::Malformed { .. })),
                "{other}"
            );
        }
    }

    #[test]
    fn seal_times_outside_the_fixed_width_are_refused() {
        let p = Prefix::root();
        for ms in [-1, MAX_SEALED_AT_MS + 1, i64::MIN, i64::MAX] {
            assert_eq!(
                ArchiveKey::new(&p, ms, &suffix(), Compression::Gzip),
                Err(KeyError::SealedAtOutOfRange { ms })
            );
        }
        assert!(ArchiveKey::new(&p, MAX_SEALED_AT_MS, &suffix(), Compression::Gzip).is_ok());
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["", "archive/", "a/b/c/", "ünï/€/", "events-prod/v1/"] {
            assert_eq!(Prefix::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "archive",
            "/archive/",
            "/",
            "a//b/",
            "a//",
            "a/./",
            "../x/",
            "a/../b/",
            "a\u{0}/",
            "tab\t/",
            "a\\b/",
            "*/",
            "events/*/",
            "a*b/",
            "?/",
        ] {
            assert!(
                matches!(Prefix::new(bad), Err(KeyError::InvalidPrefix { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn boundaries_sort_in_time_order() {
        // 23:59:59.999 of the last day of a year, then midnight of the next.
        let year_end = 1_798_761_599_999; // 2026-12-31T23:59:59.999Z
        let times = [
            year_end - 3_600_000,
            year_end - 1,
            year_end,
            year_end + 1,
            year_end + 1 + 3_600_000,
            year_end + 1 + 86_400_000,
        ];
        let keys: Vec<String> = times
            .iter()
            .map(|&t| key("a/", t).as_str().to_owned())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys[2].starts_with("a/2026/12/31/23/"));
        assert!(keys[3].starts_with("a/2027/01/01/00/20270101T000000000Z-"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = key("a/", 1_795_471_652_123).as_str().to_owned();
        let cases = [
            good.replace(".ndjson.gz", ".txt"),
            good.replace("2026/11/23/22/", "2026/11/23/21/"),
            good.replace("T220732123Z", "T250732123Z"),
            good.replace("20261123T", "20261131T"),
            good.replace("-67e5", "_67e5"),
            good.replace("67e55044", "67E55044"),
            good.replace(
                "0000000000000000001100000000017454423009",
                "1100000000017454423009",
            ),
            good.replace("a/2026", "a2026"),
            good.replace("a/", "/"),
            "2026/11/23/22/x.ndjson.gz".to_owned(),
            String::new(),
        ];
        for bad in cases {
            assert!(
                matches!(ArchiveKey::parse(&bad), Err(KeyError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nested_dead_letters_list_after_every_events_key() {
        let p = Prefix::new("a/").unwrap();
        let dl = Prefix::new("a/dead-letter/").unwrap();
        let latest = ArchiveKey::new(&p, MAX_SEALED_AT_MS, &suffix(), Compression::Gzip).unwrap();
        let earliest_dl = DeadLetterKey::new(&dl, 0, &suffix()).unwrap();
        assert!(latest.as_str() < earliest_dl.as_str());
        assert!(ArchiveKey::parse(earliest_dl.as_str()).is_err());
    }

    fn any_suffix() -> impl Strategy<Value = Suffix> {
        (proptest::option::of("[1-9][0-9]{0,39}"), any::<u128>())
            .prop_map(|(s, n)| Suffix::new(s.map(|s| seq(&s)), Uuid::from_u128(n)))
    }

    fn any_time() -> impl Strategy<Value = i64> {
        prop_oneof![
            MIN_SEALED_AT_MS..=MAX_SEALED_AT_MS,
            // near now, where hour/day boundaries are dense enough to be hit
            1_767_225_600_000_i64..1_767_225_600_000 + 3 * 86_400_000,
        ]
    }

    fn any_prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![Just(String::new()), "([a-z0-9_é-]{1,8}/){1,3}"]
            .prop_map(|p| Prefix::new(p).unwrap())
    }

    fn any_compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::Gzip),
            Just(Compression::Zstd),
            Just(Compression::None)
        ]
    }

    proptest! {
        #[test]
        fn key_order_is_seal_time_order(
            prefix in any_prefix(),
            a in any_time(), b in any_time(),
            sa in any_suffix(), sb in any_suffix(),
            c in any_compression(),
        ) {
            let ka = ArchiveKey::new(&prefix, a, &sa, c).unwrap();
            let kb = ArchiveKey::new(&prefix, b, &sb, Compression::Gzip).unwrap();
            if a != b {
                prop_assert_eq!(a.cmp(&b), ka.as_str().as_bytes().cmp(kb.as_str().as_bytes()));
                prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            }
            let da = DeadLetterKey::new(&prefix, a, &sa).unwrap();
            let db = DeadLetterKey::new(&prefix, b, &sb).unwrap();
            if a != b {
                prop_assert_eq!(a.cmp(&b), da.as_str().cmp(db.as_str()));
            }
        }

        #[test]
        fn keys_parse_back(prefix in any_prefix(), t in any_time(), s in any_suffix(), c in any_compression()) {
            let k = ArchiveKey::new(&prefix, t, &s, c).unwrap();
            let back = ArchiveKey::parse(k.as_str()).unwrap();
            prop_assert_eq!(back.sealed_at_ms(), t);
            prop_assert_eq!(back.prefix(), prefix.as_str());
            prop_assert_eq!(back.suffix(), &s);
            prop_assert_eq!(back.compression(), c);
            prop_assert_eq!(&back, &k);
            let d = DeadLetterKey::new(&prefix, t, &s).unwrap();
            prop_assert_eq!(DeadLetterKey::parse(d.as_str()).unwrap(), d);
        }

        #[test]
        fn start_after_splits_at_the_time(prefix in any_prefix(), since in any_time(), t in any_time(), s in any_suffix()) {
            let start = start_after_for(&prefix, since);
            let k = ArchiveKey::new(&prefix, t, &s, Compression::Gzip).unwrap();
            // S3 lists the keys strictly after StartAfter.
            prop_assert_eq!(k.as_str() > start.as_str(), t >= since);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,160}") {
            let _ = ArchiveKey::parse(&text);
            let _ = DeadLetterKey::parse(&text);
            let _ = Prefix::new(text);
        }
    }

    /// Reads `text` as every kind of key: a key or a typed error, never a
    /// panic, and a key that reads is the very key its parts build.
    fn parse_every_way(text: &str) -> Result<(), TestCaseError> {
        if let Ok(prefix) = Prefix::new(text) {
            prop_assert_eq!(prefix.as_str(), text);
        }
        if let Ok(key) = ArchiveKey::parse(text) {
            let prefix = Prefix::new(key.prefix()).unwrap();
            let built =
                ArchiveKey::new(&prefix, key.sealed_at_ms(), key.suffix(), key.compression());
            prop_assert_eq!(built, Ok(key));
        }
        if let Ok(key) = DeadLetterKey::parse(text) {
            let prefix = Prefix::new(key.prefix()).unwrap();
            prop_assert_eq!(
                DeadLetterKey::new(&prefix, key.sealed_at_ms(), key.suffix()),
                Ok(key)
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_a_key_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            parse_every_way(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn a_mutated_key_is_a_key_or_an_error(
            bytes in evs_testkit::mutated(
                b"archive/2026/11/23/22/20261123T220732123Z-0000000000000000001100000000017454423009-67e5504410b1426f9247bb680e5fe0c8.ndjson.gz".to_vec(),
            ),
            dead_letter in any::<bool>(),
        ) {
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if dead_letter {
                text = text.replace(".ndjson.gz", DEAD_LETTER_EXTENSION);
            }
            parse_every_way(&text)?;
        }
    }
}
