//! The pump's per-shard checkpoint file: `Checkpoint::parse`.
//!
//! Properties: no panic; a checkpoint that parses is written (as `save`
//! writes it) to text that parses to the same checkpoint.
#![no_main]

use std::path::Path;

use evs_pump::Checkpoint;
use evs_fuzz::text;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ARN: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/2026-11-23T00:00:00.000";

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    let path = Path::new("checkpoint.json");
    let _ = Checkpoint::parse(text, path, ARN);
    // Also past the stream check: the ARN the file names.
    let arn = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("streamArn").and_then(Value::as_str).map(str::to_owned));
    let Some(arn) = arn else { return };
    let Ok(checkpoint) = Checkpoint::parse(text, path, &arn) else {
        return;
    };
    let written = serde_json::to_string_pretty(&checkpoint).expect("a checkpoint serializes");
    let back = Checkpoint::parse(&written, path, &arn).expect("a written checkpoint parses");
    assert_eq!(back, checkpoint, "checkpoint round trip");
});
