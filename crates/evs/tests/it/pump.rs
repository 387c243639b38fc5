//! `evs pump` on the emulator: output lines, the default checkpoint file,
//! resuming, and its refusals.

use evs_testkit::unique_name;
use serde_json::Value;

use crate::cli::{ndjson, stderr, Evs};

#[test]
fn pump_once_resumes_from_its_default_checkpoint_and_refuses_another_stream() {
    let Some(evs) = Evs::new() else { return };
    let dir = std::env::temp_dir().join(unique_name("evs-pump-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    for (stream, name) in [("a-1", "Opened"), ("b-1", "Opened"), ("a-1", "Paid")] {
        let out = evs.run(&["append", "--stream", stream, "--event-name", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let pump = |args: &[&str]| {
        let mut cmd = evs.command(&["pump", "--once", "--archive", "archive"]);
        cmd.args(args).current_dir(&dir);
        cmd.output().unwrap()
    };

    let lines = ndjson(&pump(&["--batch-size", "2"]));
    // Two batch lines (2 + 1 records), then the summary.
    assert_eq!(lines.len(), 3, "{lines:?}");
    for batch in &lines[..2] {
        assert_eq!(batch["attempt"], 1);
        assert!(batch["key"].as_str().unwrap().starts_with("events/"));
        assert!(batch["source"].as_str().unwrap().starts_with("shardId-"));
    }
    let done = &lines[2];
    assert_eq!(done["records"], 3);
    assert_eq!(done["archived"], 3);
    assert_eq!(done["stopped"], false);
    let checkpoint = format!("evs-pump-{}.json", evs.table);
    assert_eq!(done["checkpointFile"], Value::from(checkpoint.clone()));
    assert!(done["stream"].as_str().unwrap().contains(&evs.table));
    assert!(dir.join(&checkpoint).is_file());

    // Resumed: nothing new, nothing written.
    let again = ndjson(&pump(&[]));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["records"], 0);

    // The checkpoint of this table's stream is refused for another table.
    let other = Evs::new().unwrap();
    let mut cmd = other.command(&[
        "pump",
        "--once",
        "--archive",
        "archive",
        "--checkpoint-file",
        &checkpoint,
    ]);
    let out = cmd.current_dir(&dir).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("belongs to stream"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Batch sizes beyond one GetRecords call are a usage error.
    for bad in ["0", "1001"] {
        let out = pump(&["--batch-size", bad]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
