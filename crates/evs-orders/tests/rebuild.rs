//! `evs-orders rebuild --read-model memory:` on a local archive made by the
//! archiver (the pump on an in-memory table's change feed): the rows printed
//! equal the fold of the table; an archive that ends short of a stream fails
//! naming it.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use evs_archive::store::LocalDir;
use evs_archiver::config::Config;
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadRequest, StreamId};
use evs_orders::{dump_line, Orders, OrdersRow};
use evs_projection::{Applier, MemoryRowStore};
use evs_pump::{MemorySource, Options, Stop};
use serde_json::json;

async fn archive(table: &MemoryStore, dir: &Path, batch_size: usize) {
    let options = Options {
        batch_size,
        once: true,
        write_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let mut source = MemorySource::new(table.clone());
    evs_pump::run(
        &mut source,
        &LocalDir::new(dir.to_path_buf()),
        &Config::local(dir.to_path_buf()),
        &options,
        Stop::never(),
        &mut |_| {},
    )
    .await
    .unwrap();
}

async fn fold(table: &MemoryStore) -> String {
    let mut events = Vec::new();
    for stream in table.last_versions().keys() {
        let id = StreamId::new(stream.clone()).unwrap();
        events.extend(table.read(&id, ReadRequest::after(0)).await.unwrap());
    }
    let store = MemoryRowStore::<OrdersRow>::new();
    Applier::new(Orders, store.clone())
        .apply_batch(&events)
        .await;
    store
        .snapshot()
        .iter()
        .map(|(k, r)| dump_line(k, r) + "\n")
        .collect()
}

fn rebuild(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evs-orders"))
        .args(["rebuild", "--read-model", "memory:", "--archive"])
        .arg(dir)
        .env_remove("EVS_EVENTS_TABLE")
        .env_remove("EVS_ARCHIVE_PREFIX")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_rebuild_into_memory_prints_the_fold_of_the_table() {
    let dir = std::env::temp_dir().join(format!("evs-orders-rebuild-{}", std::process::id()));
    let table = MemoryStore::new();
    let mut rng = fastrand::Rng::with_seed(5);
    println!("seed 5");
    for n in 0..200 {
        let customer = format!("c-{}", rng.u8(0..5));
        let (name, payload) = match rng.u8(0..4) {
            0 => (
                "OrderPlaced",
                json!({"customerId": customer, "totalCents": 10}),
            ),
            1 => (
                "OrderPaid",
                json!({"customerId": customer, "amountCents": rng.i64(1..999)}),
            ),
            2 => ("OrderCancelled", json!({"customerId": customer})),
            _ => ("OrderNoted", json!({"n": n})),
        };
        let stream = StreamId::new(format!("order-{}", rng.u8(0..20))).unwrap();
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new(name, payload)],
            )
            .await
            .unwrap();
    }
    archive(&table, &dir, 7).await;
    let out = rebuild(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rebuilt: 200 events applied"), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), fold(&table).await);

    let _ = std::fs::remove_dir_all(&dir);
}

/// Every archive object under `dir`.
fn objects(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            objects(&path, out);
        } else if path.to_string_lossy().ends_with(".ndjson.gz") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn a_rebuild_the_archive_leaves_short_fails_naming_the_stream() {
    let dir = std::env::temp_dir().join(format!("evs-orders-gap-{}", std::process::id()));
    let table = MemoryStore::new();
    let placed = json!({"customerId": "c-1", "totalCents": 10});
    for stream in ["order-7", "order-7", "order-8", "order-7"] {
        let id = StreamId::new(stream).unwrap();
        table
            .append(
                &id,
                ExpectedVersion::Any,
                &[NewEvent::new("OrderPlaced", placed.clone())],
            )
            .await
            .unwrap();
    }
    // one object per event
    archive(&table, &dir, 1).await;
    // lose the object holding order-7's event 2
    let mut all = Vec::new();
    objects(&dir, &mut all);
    let lost = all
        .iter()
        .find(|path| {
            let bytes = std::fs::read(path).unwrap();
            evs_archive::decode_events(&bytes, evs_archive::Compression::Gzip)
                .unwrap()
                .iter()
                .any(|e| e.event.stream_id.as_str() == "order-7" && e.event.event_id == 2)
        })
        .unwrap();
    std::fs::remove_file(lost).unwrap();
    let out = rebuild(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("order-7 waits for event 2"), "{stderr}");
    assert!(!stderr.contains("order-8 waits"), "{stderr}");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
