//! A Lambda event (a DynamoDB Streams batch) and a single stream record, as
//! the archiver reads them: `parse_batch_json` and `classify_json`.
//!
//! Properties: no panic; the one-pass text readers agree with the JSON-tree
//! ones (`parse_batch`, `classify`); every event round-trips through its
//! archive line and through an encoded object; dead letters round-trip
//! through their object.
#![no_main]

use evs_archive::Compression;
use evs_archiver::record::{self, Classified};
use evs_archive::{ArchivedEvent, DeadLetter};
use evs_fuzz::{check_archived_event, text};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    let tree = serde_json::from_str::<Value>(text).ok();

    let batch = record::parse_batch_json(text);
    match &tree {
        Some(tree) => assert_eq!(batch, record::parse_batch(tree), "batch: text and tree agree"),
        None => assert!(batch.is_err(), "a batch that is not JSON is refused"),
    }
    let one = record::classify_json(text);
    if let Some(tree) = &tree {
        assert_eq!(one, record::classify(tree), "record: text and tree agree");
    }

    let mut events: Vec<ArchivedEvent> = Vec::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    for c in batch.into_iter().flatten().chain(std::iter::once(one)) {
        match c {
            Classified::Event(e) => {
                check_archived_event(&e);
                events.push(*e);
            }
            Classified::DeadLetter(d) => dead.push(*d),
        }
    }
    if !events.is_empty() {
        let object = evs_archive::encode_events(&events, Compression::None).expect("events encode");
        let decoded =
            evs_archive::decode_events(&object.bytes, Compression::None).expect("an object decodes");
        evs_archive::sort_events(&mut events);
        assert_eq!(decoded, events, "object round trip");
    }
    if !dead.is_empty() {
        let object = evs_archive::encode_dead_letters(&dead).expect("dead letters encode");
        let decoded = evs_archive::decode_dead_letters(&object.bytes).expect("dead letters decode");
        assert_eq!(decoded, dead, "dead-letter object round trip");
    }
});
