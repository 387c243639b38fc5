//! DynamoDB JSON (an item and a single attribute value), as read from a
//! stream record's image or an archive line: `item_from_dynamo_json_str`,
//! `item_from_dynamo_json`, `from_dynamo_json`, and plain JSON `from_json`.
//!
//! Properties: no panic; the one-pass text reader agrees with the tree
//! reader; a value that reads writes back (`to_dynamo_json`,
//! `write_dynamo_json`, the same text) and reads to the same value; plain
//! JSON that converts converts back.
#![no_main]

use evs_core::attr;
use evs_fuzz::text;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    let item = attr::item_from_dynamo_json_str(text);
    let Ok(tree) = serde_json::from_str::<Value>(text) else {
        assert!(item.is_err(), "an item that is not JSON is refused");
        return;
    };
    let item_tree = attr::read_item(&tree);
    assert_eq!(item.is_ok(), item_tree.is_ok(), "item: text and tree agree");
    if let (Ok(item), Ok(item_tree)) = (&item, &item_tree) {
        assert_eq!(item, item_tree, "item: text and tree agree");
        let json = serde_json::to_value(item).unwrap_or_default();
        let mut written = Vec::new();
        attr::write_item_dynamo_json(&mut written, item);
        assert_eq!(written, serde_json::to_vec(&json).expect("JSON serializes"));
        assert_eq!(&attr::read_item(&json).expect("item reads back"), item);
    }
    if let Ok(value) = attr::read_value(&tree) {
        let json = attr::to_dynamo_json(&value);
        let mut written = Vec::new();
        attr::write_dynamo_json(&mut written, &value);
        assert_eq!(written, serde_json::to_vec(&json).expect("JSON serializes"));
        assert_eq!(attr::read_value(&json).expect("value reads back"), value);
    }
    if let Ok(value) = attr::from_json(&tree) {
        if attr::json_round_trips(&value) {
            assert_eq!(attr::to_json(&value), tree, "plain JSON round trip");
        }
    }
});
