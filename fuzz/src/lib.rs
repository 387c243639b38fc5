//! Checks shared by the fuzz targets: the properties every decoded value
//! must keep, asserted (a failed assertion is a finding, like a panic).

use evs_archive::{ArchivedEvent, PayloadEncoding};
use serde_json::Value;

/// The input as text, when it is UTF-8 (every decoder here reads text).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An archived event survives its own line: `write_line` writes exactly the
/// text of `to_line`, the archiver reads that line back to the same event,
/// and the replayer delivers it as the event `evs read` prints.
pub fn check_archived_event(event: &ArchivedEvent) {
    let line = event.to_line().expect("a line serializes");
    let mut written = Vec::new();
    event
        .write_line(&mut written)
        .expect("every archived event writes its line");
    assert_eq!(
        written,
        serde_json::to_vec(&line).expect("a JSON tree serializes"),
        "write_line writes the text of to_line"
    );
    let back = ArchivedEvent::from_line(std::str::from_utf8(&written).expect("a line is UTF-8"))
        .expect("a written line reads back");
    assert_eq!(&back, event, "line round trip");

    let text = std::str::from_utf8(&written).expect("a written line is UTF-8");
    let delivered = evs_replay::event_from_line(text)
        .expect("the replayer reads every line the archiver writes");
    assert_eq!(delivered.stream_id, event.event.stream_id.as_str());
    assert_eq!(delivered.event_id, event.event.event_id);
    if event.payload_encoding != PayloadEncoding::JsonString {
        assert_eq!(
            delivered.line_value().expect("a delivered line is JSON"),
            event.event.to_json(),
            "the replayer delivers what `evs read` prints"
        );
    }
}
