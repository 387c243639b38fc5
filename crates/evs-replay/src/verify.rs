//! Proving an archive complete.
//!
//! [`read_archive`] reads every object of an archive into an [`Index`]: per
//! stream, each archived event id with a hash of the event's line (the line
//! `evs read` prints, so the stream record's own fields do not count).
//! [`Index::report`] then checks, for every stream:
//!
//! * its ids are contiguous from 1 (each hole is reported as a range);
//! * an id archived twice has the same content both times (a retried batch
//!   archives the very same event again; different content under one id is
//!   a contradiction and reported as a conflict);
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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::archive::{Archive, ArchiveError, Prefetch};
use crate::event::ReplayEvent;

/// Per stream, every archived `(event id, content hash)`.
#[derive(Debug, Default)]
pub struct Index {
    streams: HashMap<String, Vec<(u64, u64)>>,
    hasher: std::collections::hash_map::RandomState,
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
}

/// What [`Index::report`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Streams in the archive.
    pub streams: usize,
    /// Distinct events in the archive.
    pub events: u64,
    /// Lines that repeat an event with the same content (harmless retries).
    pub duplicates: u64,
    /// Events missing from the archive, by stream then id.
    pub missing: Vec<Missing>,
    /// Ids archived with different contents.
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
        writeln!(
            f,
            "{} streams, {} events, {} duplicate lines{table}",
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
                "conflict: stream {:?} event {} is archived with different contents",
                c.stream_id, c.event_id
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

    /// Records one archived event.
    pub fn add(&mut self, event: &ReplayEvent) {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(event.line().as_bytes());
        let hash = hasher.finish();
        self.lines += 1;
        match self.streams.get_mut(event.stream_id.as_str()) {
            Some(ids) => ids.push((event.event_id, hash)),
            None => {
                self.streams
                    .insert(event.stream_id.clone(), vec![(event.event_id, hash)]);
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
            ids.sort_unstable();
            let mut expected = 1;
            let mut previous: Option<(u64, u64)> = None;
            for &(id, hash) in ids.iter() {
                if let Some((prev_id, prev_hash)) = previous {
                    if prev_id == id {
                        // Sorted by (id, hash): copies with equal content
                        // are neighbours, so comparing with the previous
                        // line counts every repeat once.
                        if prev_hash == hash {
                            report.duplicates += 1;
                        } else if report
                            .conflicts
                            .last()
                            .is_none_or(|c| c.stream_id != *stream_id || c.event_id != id)
                        {
                            report.conflicts.push(Conflict {
                                stream_id: stream_id.clone(),
                                event_id: id,
                            });
                        }
                        previous = Some((id, hash));
                        continue;
                    }
                }
                if id > expected {
                    report.missing.push(Missing {
                        stream_id: stream_id.clone(),
                        from: expected,
                        to: id - 1,
                        at_end: false,
                    });
                }
                report.events += 1;
                expected = id + 1;
                previous = Some((id, hash));
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

/// Reads every object of `archive` (listed first, then fetched `read_ahead`
/// at a time) into an [`Index`], calling `progress` after each object.
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
    let mut prefetch = Prefetch::new(Arc::new(archive), read_ahead, crate::Partition::ALL);
    prefetch.extend(keys);
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

    fn index(events: &[ReplayEvent]) -> Index {
        let mut index = Index::new();
        for e in events {
            index.add(e);
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
                event_id: 4
            }]
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
            "conflict: stream \"a\" event 4",
            "unknown: stream \"c\"",
            "unknown: stream \"d\" is archived up to event 2, the table has 1",
            "INCOMPLETE: 8 events missing in 4 ranges, 1 conflicts",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }
}
