//! Proving an archive complete.
//!
//! [`read_archive`] reads every object of an archive into an [`Index`]: per
//! stream, each archived event id with a hash of the event's line (the line
//! `evs read` prints, so the stream record's own fields do not count).
//! [`Index::report`] then checks, for every stream:
//!
//! * its ids are contiguous from 1 (each hole is reported as a range);
//! * an id archived more than once has the same content every time (a
//!   retried batch or a back-fill archives the very same event again: a
//!   duplicate; different content under one id is a contradiction, reported
//!   as a conflict). Every copy after the first counts as a duplicate line,
//!   whether or not it agrees, and a conflict says how many copies and
//!   contents it found. Contents are compared as JSON values, not as bytes:
//!   spacing and the order of an object's fields do not matter, strings
//!   compare after their escapes, and numbers by their exact decimal value
//!   (`1`, `1.0` and `1e0` are one number, as they are one DynamoDB number;
//!   nothing is rounded: `0.1` and `0.10000000000000001` differ). The
//!   archiver writes an event the same way every time, so the index keeps a
//!   hash of each line's bytes (16 bytes an event, no JSON parsed); only
//!   when copies of an id differ as bytes does [`read_archive`] read the
//!   objects a second time and compare those copies as values;
//! * with the table's versions (`evs_dynamodb::DynamoStore::last_versions`),
//!   its last archived id equals the table's (events missing at a stream's
//!   end are invisible to the archive alone), every stream of the table is in
//!   the archive, and no archived stream or event is unknown to the table.
//!
//! The archive is complete only when the report finds nothing. Mind that a
//! live archive lags the table by up to the archiver's timeout: verify a
//! quiet table, or expect its newest events to be reported missing (`evs
//! verify` scans the table before it reads the archive, which narrows that
//! window to the archiver's lag at the moment of the scan).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::archive::{Archive, ArchiveError, Prefetch};
use crate::event::ReplayEvent;

/// Per stream, every archived `(event id, content fingerprint)`.
#[derive(Debug, Default)]
pub struct Index {
    streams: HashMap<String, Vec<(u64, u64)>>,
    seed: Seed,
    /// Objects read.
    pub objects: u64,
    /// Lines read.
    pub lines: u64,
    /// Keys under the prefix that are not events keys (skipped).
    pub skipped_keys: u64,
}

/// Progress of [`read_archive`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Objects read so far.
    pub objects: u64,
    /// Objects in the archive (known once listed).
    pub total_objects: u64,
    /// Lines read so far.
    pub lines: u64,
    /// Bytes read so far (as stored).
    pub stored_bytes: u64,
}

/// A range of event ids of a stream, both ends included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The stream.
    pub stream_id: String,
    /// The first missing id.
    pub from: u64,
    /// The last missing id.
    pub to: u64,
    /// Where the table says so (`true`: past the archive's last event).
    pub at_end: bool,
}

/// Two different events archived under one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The stream.
    pub stream_id: String,
    /// The id.
    pub event_id: u64,
    /// Lines that hold the id.
    pub copies: u64,
    /// Different contents among them (at least 2).
    pub contents: u64,
}

/// What [`Index::report`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Streams in the archive.
    pub streams: usize,
    /// Distinct events in the archive.
    pub events: u64,
    /// Lines that repeat an archived event: every copy of an id after the
    /// first, whatever its content (those of conflicts included).
    pub duplicates: u64,
    /// Events missing from the archive, by stream then id.
    pub missing: Vec<Missing>,
    /// Ids archived with different contents, by stream then id.
    pub conflicts: Vec<Conflict>,
    /// Whether the table's versions were compared.
    pub table_checked: bool,
    /// Streams of the table.
    pub table_streams: usize,
    /// Archived streams the table does not have, with their last archived id.
    pub not_in_table: Vec<(String, u64)>,
    /// Streams whose archive goes past the table's last version:
    /// `(stream, archived last, table last)`.
    pub ahead_of_table: Vec<(String, u64, u64)>,
}

impl Report {
    /// Whether the archive is complete: nothing missing, contradictory or
    /// unknown to the table.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
            && self.conflicts.is_empty()
            && self.not_in_table.is_empty()
            && self.ahead_of_table.is_empty()
    }

    /// How many events are missing.
    pub fn missing_events(&self) -> u64 {
        self.missing.iter().map(|m| m.to - m.from + 1).sum()
    }
}

/// Most problems listed one a line by `Display`; the rest are counted.
const SHOWN: usize = 200;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = if self.table_checked {
            format!(", checked against {} table streams", self.table_streams)
        } else {
            String::from(" (no table: events missing at a stream's end cannot be seen)")
        };
        let conflicting = if self.conflicts.is_empty() {
            String::new()
        } else {
            format!(
                ", {} events archived with different contents ({} lines)",
                self.conflicts.len(),
                self.conflicts.iter().map(|c| c.copies).sum::<u64>()
            )
        };
        writeln!(
            f,
            "{} streams, {} events, {} duplicate lines{conflicting}{table}",
            self.streams, self.events, self.duplicates
        )?;
        let mut lines: Vec<String> = Vec::new();
        for m in &self.missing {
            let what = if m.from == m.to {
                format!("event {}", m.from)
            } else {
                format!("events {}..={}", m.from, m.to)
            };
            let why = if m.at_end {
                " (in the table, not in the archive)"
            } else {
                ""
            };
            lines.push(format!("missing: stream {:?} {what}{why}", m.stream_id));
        }
        for c in &self.conflicts {
            lines.push(format!(
                "conflict: stream {:?} event {} is archived {} times with {} different contents",
                c.stream_id, c.event_id, c.copies, c.contents
            ));
        }
        for (stream, last) in &self.not_in_table {
            lines.push(format!(
                "unknown: stream {stream:?} (events 1..={last}) is archived but not in the table"
            ));
        }
        for (stream, archived, table) in &self.ahead_of_table {
            lines.push(format!(
                "unknown: stream {stream:?} is archived up to event {archived}, the table has {table}"
            ));
        }
        for line in lines.iter().take(SHOWN) {
            writeln!(f, "{line}")?;
        }
        if lines.len() > SHOWN {
            writeln!(f, "... and {} more problems", lines.len() - SHOWN)?;
        }
        if self.is_complete() {
            write!(f, "complete")
        } else {
            write!(
                f,
                "INCOMPLETE: {} events missing in {} ranges, {} conflicts",
                self.missing_events(),
                self.missing.len(),
                self.conflicts.len()
            )
        }
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one archived event. Copies of an event are compared as
    /// bytes here; [`read_archive`] compares those that differ as JSON
    /// values.
    pub fn add(&mut self, event: &ReplayEvent) {
        let hash = bytes_hash(&self.seed, event.line());
        self.lines += 1;
        match self.streams.get_mut(event.stream_id.as_str()) {
            Some(ids) => ids.push((event.event_id, hash)),
            None => {
                self.streams
                    .insert(event.stream_id.clone(), vec![(event.event_id, hash)]);
            }
        }
    }

    /// The ids whose copies differ as bytes, to be compared again as values
    /// (`None` when there is none: the usual archive, whose writer writes
    /// an event the same way every time).
    fn recheck(&mut self) -> Option<Recheck> {
        let mut ids: HashMap<String, HashSet<u64>> = HashMap::new();
        for (stream_id, entries) in &mut self.streams {
            entries.sort_unstable();
            for copies in entries.chunk_by(|a, b| a.0 == b.0) {
                if copies.windows(2).any(|w| w[0].1 != w[1].1) {
                    ids.entry(stream_id.clone())
                        .or_default()
                        .insert(copies[0].0);
                }
            }
        }
        (!ids.is_empty()).then(|| Recheck {
            seed: self.seed.clone(),
            ids,
            values: HashMap::new(),
        })
    }

    /// Replaces each rechecked copy's bytes hash by its value's fingerprint.
    /// A copy not seen again keeps its bytes hash (and so stays apart).
    fn apply(&mut self, recheck: Recheck) {
        for (stream_id, ids) in &recheck.ids {
            let Some(entries) = self.streams.get_mut(stream_id) else {
                continue;
            };
            for (id, hash) in entries.iter_mut() {
                if ids.contains(id) {
                    if let Some(&value) = recheck.values.get(&(stream_id.clone(), *id, *hash)) {
                        *hash = value;
                    }
                }
            }
        }
    }

    /// Every archived stream's highest archived event id.
    pub fn last_archived(&self) -> BTreeMap<&str, u64> {
        self.streams
            .iter()
            .map(|(s, ids)| (s.as_str(), ids.iter().map(|&(id, _)| id).max().unwrap_or(0)))
            .collect()
    }

    /// Checks the index (and the table's versions, when given: stream →
    /// last `EventId`).
    pub fn report(self, table: Option<&BTreeMap<String, u64>>) -> Report {
        let mut report = Report {
            streams: self.streams.len(),
            table_checked: table.is_some(),
            table_streams: table.map_or(0, BTreeMap::len),
            ..Report::default()
        };
        let mut streams: Vec<(String, Vec<(u64, u64)>)> = self.streams.into_iter().collect();
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        let mut archived_last: BTreeMap<&str, u64> = BTreeMap::new();
        for (stream_id, ids) in &mut streams {
            // Sorted by (id, fingerprint): the copies of an id are
            // neighbours, and equal contents among them too.
            ids.sort_unstable();
            let mut expected = 1;
            for copies in ids.chunk_by(|a, b| a.0 == b.0) {
                let id = copies[0].0;
                if id > expected {
                    report.missing.push(Missing {
                        stream_id: stream_id.clone(),
                        from: expected,
                        to: id - 1,
                        at_end: false,
                    });
                }
                report.events += 1;
                report.duplicates += copies.len() as u64 - 1;
                let contents = 1 + copies.windows(2).filter(|w| w[0].1 != w[1].1).count();
                if contents > 1 {
                    report.conflicts.push(Conflict {
                        stream_id: stream_id.clone(),
                        event_id: id,
                        copies: copies.len() as u64,
                        contents: contents as u64,
                    });
                }
                expected = id + 1;
            }
            archived_last.insert(stream_id.as_str(), expected - 1);
        }
        if let Some(table) = table {
            for (stream_id, &archived) in &archived_last {
                match table.get(*stream_id) {
                    None => report
                        .not_in_table
                        .push(((*stream_id).to_owned(), archived)),
                    Some(&last) if archived > last => {
                        report
                            .ahead_of_table
                            .push(((*stream_id).to_owned(), archived, last));
                    }
                    Some(&last) if archived < last => report.missing.push(Missing {
                        stream_id: (*stream_id).to_owned(),
                        from: archived + 1,
                        to: last,
                        at_end: true,
                    }),
                    Some(_) => {}
                }
            }
            for (stream_id, &last) in table {
                if last > 0 && !archived_last.contains_key(stream_id.as_str()) {
                    report.missing.push(Missing {
                        stream_id: stream_id.clone(),
                        from: 1,
                        to: last,
                        at_end: true,
                    });
                }
            }
            report
                .missing
                .sort_by(|a, b| (&a.stream_id, a.from).cmp(&(&b.stream_id, b.from)));
        }
        report
    }
}

/// The hasher of fingerprints: seeded per process, fast.
type Seed = foldhash::quality::RandomState;

/// A line's bytes, hashed: what [`Index::add`] keeps.
fn bytes_hash(seed: &Seed, line: &str) -> u64 {
    let mut hasher = seed.build_hasher();
    hasher.write(line.as_bytes());
    hasher.finish()
}

/// A fingerprint of the JSON text `line` that is the same for the same
/// value (see the module docs: spacing and field order do not count,
/// numbers compare by decimal value, strings after their escapes), from a
/// hasher of `seed`. Text that is not JSON (no line the archive's reader
/// makes) is fingerprinted as bytes.
fn fingerprint(seed: &Seed, line: &str) -> u64 {
    let mut hasher = seed.build_hasher();
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) => hash_value(seed, &value, &mut hasher),
        Err(_) => {
            hasher.write_u8(0xff);
            hasher.write(line.as_bytes());
        }
    }
    hasher.finish()
}

/// Hashes `value`; each value's hash is self-delimiting (a tag, then a
/// length or an end mark), so a sequence of them has one reading.
fn hash_value(seed: &Seed, value: &serde_json::Value, hasher: &mut impl Hasher) {
    use serde_json::Value;
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => hasher.write_u8(1 + u8::from(*b)),
        Value::String(text) => {
            hasher.write_u8(3);
            hasher.write_usize(text.len());
            hasher.write(text.as_bytes());
        }
        Value::Array(items) => {
            hasher.write_u8(4);
            for item in items {
                hash_value(seed, item, hasher);
            }
            hasher.write_u8(5);
        }
        Value::Object(fields) => {
            // Each field hashed apart and the hashes added: the same sum in
            // any order of the fields.
            let mut sum = 0u64;
            for (name, field) in fields {
                let mut one = seed.build_hasher();
                one.write_usize(name.len());
                one.write(name.as_bytes());
                hash_value(seed, field, &mut one);
                sum = sum.wrapping_add(one.finish());
            }
            hasher.write_u8(6);
            hasher.write_usize(fields.len());
            hasher.write_u64(sum);
        }
        Value::Number(n) => {
            let text = n.to_string();
            hasher.write_u8(7);
            if hash_number(&text, hasher).is_none() {
                hasher.write_u8(0xff);
                hasher.write(text.as_bytes());
            }
        }
    }
}

/// Hashes a JSON number's text by its exact decimal value: sign, significant
/// digits and the power of ten of the last one (`1.50`, `15e-1` and
/// `0.15E1` are one number; `-0` is `0`). `None` (nothing hashed) when it is
/// not a number or its exponent is past `i64`.
fn hash_number(text: &str, hasher: &mut impl Hasher) -> Option<()> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.strip_prefix('+').unwrap_or(e).parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = || whole.bytes().chain(fraction.bytes());
    if whole.is_empty() || !digits().all(|d| d.is_ascii_digit()) {
        return None;
    }
    let count = whole.len() + fraction.len();
    let leading = digits().take_while(|&d| d == b'0').count();
    if leading == count {
        hasher.write_u8(0);
        return Some(());
    }
    let trailing = digits().rev().take_while(|&d| d == b'0').count();
    // value = significant × 10^power
    let power = exponent
        .checked_sub(i64::try_from(fraction.len()).ok()?)?
        .checked_add(i64::try_from(trailing).ok()?)?;
    hasher.write_u8(if negative { 2 } else { 1 });
    hasher.write_usize(count - leading - trailing);
    for digit in digits().skip(leading).take(count - leading - trailing) {
        hasher.write_u8(digit);
    }
    hasher.write_i64(power);
    Some(())
}

/// The copies of some events to compare as JSON values: per stream, the ids
/// whose copies differ as bytes, and each copy's fingerprint once seen.
#[derive(Debug)]
struct Recheck {
    seed: Seed,
    ids: HashMap<String, HashSet<u64>>,
    /// `(stream, id, bytes hash)` → the value's fingerprint.
    values: HashMap<(String, u64, u64), u64>,
}

impl Recheck {
    /// Takes the fingerprint of `event` if its id is one to recheck.
    fn add(&mut self, event: &ReplayEvent) {
        let wanted = self
            .ids
            .get(event.stream_id.as_str())
            .is_some_and(|ids| ids.contains(&event.event_id));
        if wanted {
            let key = (
                event.stream_id.clone(),
                event.event_id,
                bytes_hash(&self.seed, event.line()),
            );
            self.values
                .entry(key)
                .or_insert_with(|| fingerprint(&self.seed, event.line()));
        }
    }
}

/// Reads every object of `archive` (listed first, then fetched `read_ahead`
/// at a time) into an [`Index`], calling `progress` after each object. When
/// copies of an event differ as bytes, the objects are read a second time
/// (without progress) to compare those copies as JSON values.
pub async fn read_archive(
    archive: Archive,
    read_ahead: usize,
    mut progress: impl FnMut(&Progress),
) -> Result<Index, ArchiveError> {
    let mut index = Index::new();
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = archive
            .list(after.as_deref(), crate::archive::DEFAULT_PAGE_SIZE)
            .await?;
        index.skipped_keys += page.others().count() as u64;
        keys.extend(page.objects().cloned());
        match page.last() {
            Some(last) if page.full => after = Some(last.to_owned()),
            _ => break,
        }
    }
    let mut state = Progress {
        total_objects: keys.len() as u64,
        ..Progress::default()
    };
    progress(&state);
    let archive = Arc::new(archive);
    let mut prefetch = Prefetch::new(archive.clone(), read_ahead, crate::line::Keep::ALL);
    prefetch.extend(keys.iter().cloned());
    while let Some(object) = prefetch.next().await {
        let object = object?;
        for event in &object.events {
            index.add(event);
        }
        index.objects += 1;
        state.objects += 1;
        state.lines = index.lines;
        state.stored_bytes += object.stored_bytes as u64;
        progress(&state);
    }
    if let Some(mut recheck) = index.recheck() {
        let mut prefetch = Prefetch::new(archive, read_ahead, crate::line::Keep::ALL);
        prefetch.extend(keys);
        while let Some(object) = prefetch.next().await {
            for event in &object?.events {
                recheck.add(event);
            }
        }
        index.apply(recheck);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(stream: &str, id: u64, body: &str) -> ReplayEvent {
        ReplayEvent::new(
            stream,
            id,
            &json!({"streamId": stream, "eventId": id, "payload": body}),
        )
    }

    /// The index of `events`, copies that differ as bytes compared again as
    /// values, as `read_archive` does.
    fn index(events: &[ReplayEvent]) -> Index {
        let mut index = Index::new();
        for e in events {
            index.add(e);
        }
        if let Some(mut recheck) = index.recheck() {
            for e in events {
                recheck.add(e);
            }
            index.apply(recheck);
        }
        index
    }

    #[test]
    fn a_contiguous_archive_with_retried_lines_is_complete() {
        let events = [
            ev("a", 2, "x"),
            ev("a", 1, "x"),
            ev("a", 2, "x"),
            ev("b", 1, "y"),
        ];
        let report = index(&events).report(None);
        assert!(report.is_complete(), "{report}");
        assert_eq!(
            (report.streams, report.events, report.duplicates),
            (2, 3, 1)
        );
        let table = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]);
        let report = index(&events).report(Some(&table));
        assert!(report.is_complete(), "{report}");
        assert!(report.to_string().ends_with("complete"));
    }

    /// An event whose line is `text` (JSON).
    fn raw(stream: &str, id: u64, text: &str) -> ReplayEvent {
        ReplayEvent::from_json_text(stream, id, text)
    }

    #[test]
    fn copies_are_compared_as_json_values_not_as_bytes() {
        let same = [
            (
                r#"{"a":1,"b":[true,null,"x"]}"#,
                r#"{ "b" : [ true , null , "x" ] , "a" : 1 }"#,
            ),
            (r#"{"n":1}"#, r#"{"n":1.0}"#),
            (r#"{"n":1}"#, r#"{"n":1e0}"#),
            (r#"{"n":150}"#, r#"{"n":1.50E2}"#),
            (r#"{"n":0.015}"#, r#"{"n":15e-3}"#),
            (r#"{"n":0}"#, r#"{"n":-0.0}"#),
            (r#"{"n":-2.5}"#, r#"{"n":-25E-1}"#),
            (r#"{"n":2e+3}"#, r#"{"n":2000}"#),
            (r#"{"s":"caf\u00e9 \/"}"#, r#"{"s":"café /"}"#),
            (r#"{"s\u0041":[]}"#, r#"{"sA":[ ]}"#),
            (r#"{"s":"\ud83d\ude00"}"#, r#"{"s":"😀"}"#),
            (
                r#"{"n":123456789012345678901234567890}"#,
                r#"{"n":1.2345678901234567890123456789e29}"#,
            ),
        ];
        for (a, b) in same {
            let report = index(&[raw("s", 1, a), raw("s", 1, b)]).report(None);
            assert_eq!((report.events, report.duplicates), (1, 1), "{a} {b}");
            assert!(report.is_complete(), "{a} and {b} are one value: {report}");
        }
        let different = [
            (r#"{"n":1}"#, r#"{"n":"1"}"#),
            (r#"{"n":1}"#, r#"{"n":-1}"#),
            (r#"{"n":1}"#, r#"{"n":10}"#),
            (r#"{"n":0.1}"#, r#"{"n":0.10000000000000001}"#),
            (
                r#"{"n":12345678901234567890123}"#,
                r#"{"n":12345678901234567890124}"#,
            ),
            (r#"{"s":"a b"}"#, r#"{"s":"a  b"}"#),
            (r#"{"a":1,"b":2}"#, r#"{"a":2,"b":1}"#),
            (r#"{"a":{"b":1}}"#, r#"{"a":{"b":1},"c":null}"#),
            (r#"{"a":[1,2]}"#, r#"{"a":[2,1]}"#),
            (r#"{"a":[[1],[]]}"#, r#"{"a":[[],[1]]}"#),
            (r#"{"a":null}"#, r#"{"a":false}"#),
            (r#"{"a":[]}"#, r#"{"a":{}}"#),
            (r#"{"a":[1],"b":[]}"#, r#"{"a":[],"b":[1]}"#),
            (r#"{"s":"\u0041"}"#, r#"{"s":"a"}"#),
            (r#"{"n":1e400}"#, r#"{"n":1e401}"#),
        ];
        for (a, b) in different {
            let report = index(&[raw("s", 1, a), raw("s", 1, b)]).report(None);
            assert_eq!((report.events, report.duplicates), (1, 1), "{a} {b}");
            assert_eq!(report.conflicts.len(), 1, "{a} and {b} differ: {report}");
        }
    }

    #[test]
    fn every_copy_is_counted_and_each_conflict_says_how_many() {
        let events = [
            raw("a", 1, r#"{"v":1}"#),
            raw("a", 1, r#"{ "v" : 1 }"#),
            raw("a", 1, r#"{"v":2}"#),
            raw("a", 1, r#"{"v":3}"#),
            raw("a", 2, r#"{"v":1}"#),
            raw("a", 2, r#"{"v":1}"#),
            raw("b", 1, r#"{"v":1}"#),
            raw("b", 1, r#"{"v":"1"}"#),
        ];
        let report = index(&events).report(None);
        assert_eq!((report.events, report.duplicates), (3, 5));
        let conflicts: Vec<(&str, u64, u64, u64)> = report
            .conflicts
            .iter()
            .map(|c| (c.stream_id.as_str(), c.event_id, c.copies, c.contents))
            .collect();
        assert_eq!(conflicts, [("a", 1, 4, 3), ("b", 1, 2, 2)]);
        let text = report.to_string();
        assert!(
            text.starts_with(
                "2 streams, 3 events, 5 duplicate lines, 2 events archived with different \
                 contents (6 lines)"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("INCOMPLETE: 0 events missing in 0 ranges, 2 conflicts"),
            "{text}"
        );
    }

    /// A random JSON value (depth-bounded) from `rng`.
    fn random_value(rng: &mut fastrand::Rng, depth: u32) -> serde_json::Value {
        use serde_json::Value;
        match rng.u8(..if depth == 0 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.bool()),
            2 => {
                let digits: String = (0..rng.usize(1..25))
                    .map(|_| char::from(b'0' + rng.u8(..10)))
                    .collect();
                let text = format!(
                    "{}{}.{}e{}",
                    if rng.bool() { "-" } else { "" },
                    digits.trim_start_matches('0').chars().next().unwrap_or('7'),
                    digits,
                    rng.i32(-40..40)
                );
                serde_json::from_str(&text).unwrap()
            }
            3 => Value::String((0..rng.usize(..6)).map(|_| rng.alphanumeric()).collect()),
            4 => Value::Array(
                (0..rng.usize(..4))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.usize(..4))
                    .map(|i| (format!("k{i}"), random_value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    /// `value` as other text: fields in another order, other spacing, and
    /// each number written another way (trailing zeros, the point moved
    /// into the exponent).
    fn rewritten(rng: &mut fastrand::Rng, value: &serde_json::Value) -> String {
        use serde_json::Value;
        let space = |rng: &mut fastrand::Rng| " ".repeat(rng.usize(..3));
        match value {
            Value::Object(fields) => {
                let mut parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}:{}{}",
                            Value::from(k.as_str()),
                            space(rng),
                            rewritten(rng, v)
                        )
                    })
                    .collect();
                rng.shuffle(&mut parts);
                format!(
                    "{{{}{}}}",
                    space(rng),
                    parts.join(&format!(",{}", space(rng)))
                )
            }
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(|v| rewritten(rng, v)).collect();
                format!("[{}{}]", parts.join(" ,"), space(rng))
            }
            Value::Number(n) => {
                let text = n.to_string();
                let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((&text, "0"));
                let exponent: i64 = exponent.parse().unwrap();
                let zeros = "0".repeat(rng.usize(..3));
                let mantissa = if mantissa.contains('.') {
                    format!("{mantissa}{zeros}")
                } else {
                    format!("{mantissa}.{zeros}0")
                };
                // Moving the point one place left is one more in the exponent.
                let (whole, fraction) = mantissa.split_once('.').unwrap();
                let (sign, whole) = whole.strip_prefix('-').map_or(("", whole), |w| ("-", w));
                format!(
                    "{sign}0.{whole}{fraction}E{:+}",
                    exponent + whole.len() as i64
                )
            }
            Value::String(text) => {
                let escaped: String = text
                    .chars()
                    .map(|c| match rng.bool() {
                        true => format!("\\u{:04x}", u32::from(c)),
                        false => c.to_string(),
                    })
                    .collect();
                format!("\"{escaped}\"")
            }
            other => other.to_string(),
        }
    }

    /// Seeded: many random values, each rewritten at random, fingerprint
    /// as themselves; the value put in an array is another fingerprint.
    #[test]
    fn rewritten_values_are_one_value_and_changed_ones_are_not() {
        let seed = fastrand::u64(..);
        let mut rng = fastrand::Rng::with_seed(seed);
        let state = Seed::default();
        for case in 0..2000 {
            let value = serde_json::json!({ "payload": random_value(&mut rng, 4) });
            let text = rewritten(&mut rng, &value);
            assert_eq!(
                fingerprint(&state, &value.to_string()),
                fingerprint(&state, &text),
                "seed {seed} case {case}: {value} and {text}"
            );
            let mut changed = value.clone();
            changed["payload"] = serde_json::json!([value["payload"].clone()]);
            assert_ne!(
                fingerprint(&state, &value.to_string()),
                fingerprint(&state, &changed.to_string()),
                "seed {seed} case {case}: {value}"
            );
        }
    }

    proptest::proptest! {
        /// Any text is a fingerprint, never a panic; text that is no JSON
        /// is its bytes (the same text, the same fingerprint).
        #[test]
        fn any_text_is_a_fingerprint(
            bytes in evs_testkit::mutated(br#"{"a":[1.5e3,"x\u00e9",{"b":null}],"c":true}"#.to_vec()),
        ) {
            let text = String::from_utf8_lossy(&bytes);
            let seed = Seed::default();
            proptest::prop_assert_eq!(fingerprint(&seed, &text), fingerprint(&seed, &text));
        }
    }

    #[test]
    fn holes_conflicts_and_table_differences_are_named() {
        let events = [
            ev("a", 1, "x"),
            ev("a", 4, "x"),
            ev("a", 4, "DIFFERENT"),
            ev("b", 2, "y"),
            ev("c", 1, "z"),
            ev("d", 1, "z"),
            ev("d", 2, "z"),
        ];
        let table = BTreeMap::from([
            ("a".to_owned(), 6),
            ("b".to_owned(), 2),
            ("d".to_owned(), 1),
            ("e".to_owned(), 3),
        ]);
        let report = index(&events).report(Some(&table));
        assert!(!report.is_complete());
        let missing: Vec<(&str, u64, u64, bool)> = report
            .missing
            .iter()
            .map(|m| (m.stream_id.as_str(), m.from, m.to, m.at_end))
            .collect();
        assert_eq!(
            missing,
            [
                ("a", 2, 3, false),
                ("a", 5, 6, true),
                ("b", 1, 1, false),
                ("e", 1, 3, true)
            ]
        );
        assert_eq!(
            report.conflicts,
            [Conflict {
                stream_id: "a".into(),
                event_id: 4,
                copies: 2,
                contents: 2,
            }]
        );
        assert_eq!(
            report.duplicates, 1,
            "the conflicting copy is a duplicate line too"
        );
        assert_eq!(report.not_in_table, [("c".to_owned(), 1)]);
        assert_eq!(report.ahead_of_table, [("d".to_owned(), 2, 1)]);
        assert_eq!(report.missing_events(), 8);
        let text = report.to_string();
        for needle in [
            "missing: stream \"a\" events 2..=3",
            "missing: stream \"a\" events 5..=6 (in the table, not in the archive)",
            "missing: stream \"b\" event 1",
            "missing: stream \"e\" events 1..=3",
            "conflict: stream \"a\" event 4 is archived 2 times with 2 different contents",
            "1 duplicate lines, 1 events archived with different contents (2 lines)",
            "unknown: stream \"c\"",
            "unknown: stream \"d\" is archived up to event 2, the table has 1",
            "INCOMPLETE: 8 events missing in 4 ranges, 1 conflicts",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }
}
