//! One archive line, as the replayer reads it (`event_from_line`) and as the
//! archiver reads it (`ArchivedEvent::from_line`).
//!
//! Properties: no panic; a line the archiver reads re-encodes to a line that
//! reads back to the same event and that the replayer delivers; a line both
//! read names the same event.
#![no_main]

use evs_archive::ArchivedEvent;
use evs_fuzz::{check_archived_event, text};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    let delivered = evs_replay::event_from_line(text);
    let Ok(tree) = serde_json::from_str::<Value>(text) else {
        assert!(delivered.is_err(), "a line that is not JSON is refused");
        return;
    };
    if let Ok(event) = ArchivedEvent::from_line(text) {
        check_archived_event(&event);
        if let Ok(delivered) = delivered {
            assert_eq!(delivered.stream_id, event.event.stream_id.as_str());
            assert_eq!(delivered.event_id, event.event.event_id);
        }
    }
});
