//! End to end on the emulator: concurrent writers on a real table, `evs pump
//! --once` into a bucket, `evs replay` from the bucket equals `evs read` for
//! every stream, `evs verify --table` passes; with an archived object
//! deleted, verify names what is missing and a replay with `--table`
//! back-fills it.

use std::collections::BTreeMap;
use std::sync::Arc;

use evs_core::{decide, Aggregate, NewEvent, RecordedEvent, RetryPolicy, StreamId};
use evs_dynamodb::DynamoStore;
use evs_testkit::{unique_name, Moto};
use serde_json::json;

use crate::cli::{ndjson, stderr, stdout, Evs};

const STREAMS: usize = 12;
const WRITERS: usize = 6;
const COMMANDS_PER_WRITER: usize = 25;

fn fold(total: &mut i64, event: &RecordedEvent) {
    *total = event.payload["total"].as_i64().unwrap_or(*total);
}

fn lines(out: &std::process::Output) -> Vec<String> {
    stdout(out).lines().map(str::to_owned).collect()
}

#[test]
fn pump_replay_and_verify_against_the_table() {
    let Some(moto) = Moto::shared() else { return };
    let Some(evs) = Evs::new() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = unique_name("e2e");
    let s3 = rt.block_on(s3_with_bucket(moto, &bucket));
    write_concurrently(&rt, moto, &evs);
    append_two_through_the_cli(&evs);
    let total_events = WRITERS * COMMANDS_PER_WRITER + 2;

    // The archiver, outside Lambda, into the bucket.
    let dir = std::env::temp_dir().join(unique_name("evs-e2e"));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("pump.json").display().to_string();
    let archive = format!("s3://{bucket}/events/");
    let pump = |extra: &[&str]| {
        let mut args = vec![
            "pump",
            "--once",
            "--archive",
            &archive,
            "--checkpoint-file",
            &checkpoint,
        ];
        args.extend_from_slice(extra);
        ndjson(&evs.run(&args))
    };
    let reports = pump(&["--batch-size", "40"]);
    let archived: u64 = reports
        .iter()
        .filter(|r| r.get("committed").is_some())
        .filter_map(|r| r["archived"].as_u64())
        .sum();
    assert_eq!(archived, total_events as u64, "{reports:?}");

    let streams = replay_equals_read(&evs, &archive, total_events);
    verify_against_the_table(&evs, &archive);

    // Nothing new: a second pump writes nothing.
    let again = pump(&[]);
    assert!(again.iter().all(|r| r["key"].is_null()), "{again:?}");

    // Lose the first object: verify names the missing ranges, replay
    // without the table stops with exit 4, with the table it back-fills.
    let first_key = rt.block_on(delete_first_object(&s3, &bucket));
    a_lost_object_is_reported(&evs, &archive);
    let backfilled = evs.run(&["replay", "--archive", &archive, "--table", &evs.table]);
    assert_eq!(by_stream(&backfilled), streams, "after losing {first_key}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An S3 client on the emulator, with `bucket` created.
async fn s3_with_bucket(moto: &Moto, bucket: &str) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3
}

/// Concurrent writers through the decide loop on the CLI's table: they
/// collide on the same streams and retry.
fn write_concurrently(rt: &tokio::runtime::Runtime, moto: &Moto, evs: &Evs) {
    let store =
        Arc::new(rt.block_on(async { DynamoStore::new(moto.dynamodb().await, evs.table.clone()) }));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0..COMMANDS_PER_WRITER {
                    let stream =
                        StreamId::new(format!("acct-{:02}", (w * 5 + i) % STREAMS)).unwrap();
                    let mut state = Aggregate::new(0i64);
                    decide(
                        store.as_ref(),
                        &stream,
                        &mut state,
                        fold,
                        |t: &i64| -> Result<_, String> {
                            Ok(vec![NewEvent::new(
                                "Added",
                                json!({"by": w, "total": t + 1}),
                            )])
                        },
                        &RetryPolicy::default(),
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// An atomic append of two events through the CLI, read from its stdin.
fn append_two_through_the_cli(evs: &Evs) {
    let batch = "{\"eventName\":\"Opened\",\"payload\":{\"n\":1}}\n{\"eventName\":\"Noted\",\"payload\":{\"big\":12345678901234567890123}}\n";
    let out = evs
        .command(&[
            "append",
            "--stream",
            "cli-stream",
            "--expected-version",
            "none",
            "--events",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(batch.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The replay from the archive is exactly what `evs read` returns, stream
/// by stream; returns the replayed lines by stream.
fn replay_equals_read(
    evs: &Evs,
    archive: &str,
    total_events: usize,
) -> BTreeMap<String, Vec<String>> {
    let out = evs.run(&["replay", "--archive", archive, "--archiver-timeout", "60"]);
    assert_eq!(lines(&out).len(), total_events);
    let streams = by_stream(&out);
    assert_eq!(streams.len(), STREAMS + 1);
    for (stream, got) in &streams {
        let read = lines(&evs.run(&["read", "--stream", stream]));
        assert_eq!(got, &read, "stream {stream}");
    }
    streams
}

/// `evs verify` checks the archive against every table stream and finds it
/// complete.
fn verify_against_the_table(evs: &Evs, archive: &str) {
    let out = evs.run(&["verify", "--archive", archive]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        report.contains(&format!("checked against {} table streams", STREAMS + 1)),
        "{report}"
    );
    assert!(report.trim_end().ends_with("complete"), "{report}");
}

/// Deletes the first object listed under `events/` in `bucket`; returns its
/// key.
async fn delete_first_object(s3: &aws_sdk_s3::Client, bucket: &str) -> String {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("events/")
        .send()
        .await
        .unwrap();
    let key = listed.contents()[0].key().unwrap().to_owned();
    s3.delete_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    key
}

/// With an object lost, verify names a missing range and exits 4, and a
/// replay without the table stops with exit 4.
fn a_lost_object_is_reported(evs: &Evs, archive: &str) {
    let out = evs.run(&["verify", "--archive", archive]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("missing: stream \"acct-"), "{report}");
    assert!(report.contains("INCOMPLETE"), "{report}");

    let out = evs
        .command(&["replay", "--archive", archive])
        .env_remove("EVS_TABLE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is missing event"),
        "{}",
        stderr(&out)
    );
}

/// `streams` streams `<prefix>-<n>` of `per` events each, appended through
/// the CLI; returns each stream's lines as `evs read` prints them.
fn append_streams(
    evs: &Evs,
    prefix: &str,
    streams: usize,
    per: usize,
) -> BTreeMap<String, Vec<String>> {
    let mut expected = BTreeMap::new();
    for s in 0..streams {
        let stream = format!("{prefix}-{s}");
        let batch: String = (0..per)
            .map(|i| format!("{{\"eventName\":\"Happened\",\"payload\":{{\"i\":{i}}}}}\n"))
            .collect();
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::write(&path, batch).unwrap();
        let out = evs.run(&[
            "append",
            "--stream",
            &stream,
            "--events",
            &path.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let _ = std::fs::remove_file(&path);
        let read = lines(&evs.run(&["read", "--stream", &stream]));
        expected.insert(stream, read);
    }
    expected
}

/// A replay's lines, by stream.
fn by_stream(out: &std::process::Output) -> BTreeMap<String, Vec<String>> {
    let mut replayed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lines(out) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        replayed
            .entry(v["streamId"].as_str().unwrap().to_owned())
            .or_default()
            .push(line);
    }
    replayed
}

/// The pipeline under S3 faults: 30% of S3 requests fail (5xx/SlowDown
/// without effect, a write done but its answer lost, a dropped connection).
/// `evs pump` retries each batch under a new key and `evs replay` retries
/// each read; the replay through the same faults delivers every event once,
/// in order, and `evs verify --table` finds the archive complete.
#[test]
fn pump_replay_and_verify_lose_and_repeat_nothing_under_s3_faults() {
    let Some(moto) = Moto::shared() else { return };
    let faults = r#"{"error": 0.15, "lost_ack": 0.1, "drop": 0.05, "seed": 30}"#;
    let Some(proxy) = evs_testkit::FaultProxy::start(moto, faults) else {
        return;
    };
    let Some(evs) = Evs::new() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = unique_name("faults");
    rt.block_on(async {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
    });
    let expected = append_streams(&evs, "faulted", 6, 25 * evs_testkit::soak());

    let faulty = |args: &[&str]| {
        let mut cmd = evs.command(args);
        // No SDK retries: every fault reaches the pump's and the replay's
        // own retry loops.
        cmd.envs(proxy.env_for(moto, "S3"))
            .env("AWS_MAX_ATTEMPTS", "1");
        cmd.output().unwrap()
    };
    let dir = std::env::temp_dir().join(unique_name("evs-faults"));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("pump.json").display().to_string();
    let archive = format!("s3://{bucket}/events/");
    let out = faulty(&[
        "pump",
        "--once",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
        "--batch-size",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reports = ndjson(&out);
    let failed = reports.iter().filter(|r| r["error"].is_string()).count();
    assert_eq!(
        reports.last().unwrap()["records"],
        150 * evs_testkit::soak(),
        "{reports:?}"
    );

    let out = faulty(&["replay", "--archive", &archive, "--archiver-timeout", "60"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let replayed = by_stream(&out);
    assert_eq!(replayed, expected, "every event once, in stream order");

    let out = evs.run(&["verify", "--archive", &archive]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(report.trim_end().ends_with("complete"), "{report}");
    let injected = proxy.report();
    eprintln!("pump batch failures: {failed}; faults: {injected}");
    assert!(failed > 0, "the pump retried batches: {reports:?}");
    let counts: serde_json::Value = serde_json::from_str(&injected).unwrap();
    assert!(
        counts["counts"]["lost_ack"].as_u64() > Some(0),
        "{injected}"
    );
    assert!(counts["counts"]["error"].as_u64() > Some(0), "{injected}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `evs pump --once` killed with SIGKILL at random moments and restarted
/// until it ends: the replay delivers every event once, in stream order,
/// and verify finds the archive complete. A kill between an object's write
/// and the checkpoint's archives that batch again (measured, not an error:
/// the replay drops the repeats).
#[test]
fn a_pump_killed_at_random_moments_loses_nothing() {
    for _ in 0..evs_testkit::soak() {
        pump_crash_round();
    }
}

fn pump_crash_round() {
    use std::process::Stdio;

    let Some(moto) = Moto::shared() else { return };
    let Some(evs) = Evs::new() else { return };
    let _ = moto;
    let expected = append_streams(&evs, "crashed", 4, 30);
    let dir = std::env::temp_dir().join(unique_name("evs-pump-crash"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut attempt = 0;
    let paths = |attempt: usize| {
        (
            dir.join(format!("archive-{attempt}")).display().to_string(),
            dir.join(format!("pump-{attempt}.json"))
                .display()
                .to_string(),
        )
    };
    let (mut archive, mut checkpoint) = paths(attempt);
    let started = std::time::Instant::now();
    let probe = evs.run(&[
        "pump",
        "--once",
        "--archive",
        &dir.join("probe").display().to_string(),
        "--checkpoint-file",
        &dir.join("probe.json").display().to_string(),
        "--batch-size",
        "3",
    ]);
    assert!(probe.status.success(), "{}", stderr(&probe));
    let window = u64::try_from(started.elapsed().as_millis()).unwrap_or(1000) + 1;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    for run in 0.. {
        assert!(run < 100, "seed {seed}: never finished");
        let args = [
            "pump",
            "--once",
            "--archive",
            &archive,
            "--checkpoint-file",
            &checkpoint,
            "--batch-size",
            "3",
        ];
        let mut child = evs
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let span = if kills == 0 { window } else { 2 * window };
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(0..span)));
        match child.try_wait().unwrap() {
            Some(status) if kills == 0 => {
                // Never killed (faster than measured): again, from scratch.
                assert!(status.success(), "seed {seed}: run {run} failed");
                attempt += 1;
                (archive, checkpoint) = paths(attempt);
            }
            Some(status) => {
                assert!(status.success(), "seed {seed}: run {run} failed");
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }

    let out = evs.run(&["replay", "--archive", &archive, "--archiver-timeout", "60"]);
    assert!(out.status.success(), "seed {seed}: {}", stderr(&out));
    let replayed = by_stream(&out);
    assert_eq!(
        replayed, expected,
        "seed {seed}: every event once, in order"
    );
    let out = evs.run(&["verify", "--archive", &archive]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "seed {seed}: {report}{}",
        stderr(&out)
    );
    let dropped = stderr(&evs.run(&["replay", "--archive", &archive, "--archiver-timeout", "60"]))
        .split("; ")
        .find(|p| p.contains("duplicate lines dropped"))
        .unwrap_or("")
        .to_owned();
    eprintln!("seed {seed}: {kills} kills over runs of up to {window} ms; {dropped}");
    assert!(kills > 0, "seed {seed}: never killed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What cannot heal by waiting stops a follower and a pump at once, with
/// one clear line: a bucket that does not exist.
#[test]
fn a_missing_bucket_stops_a_follower_and_a_pump_at_once() {
    let Some(evs) = Evs::new() else { return };
    let out = evs.run(&["append", "--stream", "m-1", "--event-name", "Happened"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = format!("s3://{}/events/", unique_name("missing"));
    let dir = std::env::temp_dir().join(unique_name("evs-missing-bucket"));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("pump.json").display().to_string();
    for args in [
        vec!["replay", "--archive", &archive, "--follow"],
        vec![
            "pump",
            "--archive",
            &archive,
            "--checkpoint-file",
            &checkpoint,
        ],
    ] {
        let started = std::time::Instant::now();
        let out = evs.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("NoSuchBucket"), "{args:?}: {err}");
        assert!(!err.contains("retrying"), "{args:?}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `evs backfill` from an export-shaped fixture made from the emulator's
/// table (DynamoDB JSON data files, gzip, and the two manifests): the
/// archive it makes passes `evs verify --table`, replays as the table
/// reads, and a second run of the same export does nothing. Part of the
/// history is archived already (as if the archiver had started late):
/// those events come twice and are dropped as duplicates.
#[test]
fn backfill_from_a_table_export_completes_the_archive() {
    let Some(moto) = Moto::shared() else { return };
    let Some(evs) = Evs::new() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(moto.dynamodb());
    let store = DynamoStore::new(client.clone(), evs.table.clone());
    // The first 30 events reach the archive through the stream; the
    // archiver "starts late" for the rest (only the export has them).
    append_deposits(&rt, &store, 0..30);
    let dir = std::env::temp_dir().join(unique_name("evs-backfill"));
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("archive").display().to_string();
    let pump = evs.run(&[
        "pump",
        "--archive",
        &archive,
        "--once",
        "--batch-size",
        "20",
        "--checkpoint-file",
        &dir.join("pump.json").display().to_string(),
    ]);
    assert!(pump.status.success(), "{}", stderr(&pump));
    assert_eq!(
        replay_summary(&evs, &archive),
        (30, 0),
        "the pump archived the first 30"
    );
    append_deposits(&rt, &store, 30..60);
    let verify = evs.run(&["verify", "--archive", &archive]);
    assert_eq!(verify.status.code(), Some(4), "{}", stdout(&verify));

    let export_arg = write_export(&rt, &client, &evs.table, &dir)
        .display()
        .to_string();
    backfill_archives_every_item(&evs, &export_arg, &archive);
    let replayed = the_archive_is_the_table(&evs, &archive);

    // The first 30 are in the archive twice (the pump's and the export's).
    assert_eq!(replay_summary(&evs, &archive), (60, 30));

    // Idempotent: the second run finds the marker and archives nothing.
    let again = evs.run(&["backfill", "--export", &export_arg, "--archive", &archive]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("back-filled into")
            && String::from_utf8_lossy(&again.stdout).contains(r#""alreadyDone":true"#),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        replay_summary(&evs, &archive),
        (60, 30),
        "no line archived again"
    );
    let replay_again = replay_alone(&evs, &archive);
    assert_eq!(lines(&replay_again), replayed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Appends a deposit for each `n` of `range`, on stream `acct-<n % 7>`.
fn append_deposits(rt: &tokio::runtime::Runtime, store: &DynamoStore, range: std::ops::Range<u64>) {
    rt.block_on(async {
        for n in range {
            let stream = StreamId::new(format!("acct-{}", n % 7)).unwrap();
            let payload = json!({ "amount": n, "big": 123456789012345678901234567890_u128 });
            let event = NewEvent::new("Deposited", payload);
            evs_core::EventStore::append(store, &stream, evs_core::ExpectedVersion::Any, &[event])
                .await
                .unwrap();
        }
    })
}

/// A replay's --json summary: how many events, how many duplicate lines.
fn replay_summary(evs: &Evs, archive: &str) -> (u64, u64) {
    let out = evs
        .command(&["replay", "--archive", archive, "--json"])
        .env_remove("EVS_TABLE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    (
        s["events"].as_u64().unwrap(),
        s["duplicates"].as_u64().unwrap(),
    )
}

/// The export under `dir`: every item of `table`, in two data files, and
/// the two manifests; returns the export's directory.
fn write_export(
    rt: &tokio::runtime::Runtime,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let export_id = "01764000000000-abcdef12";
    let export = dir.join("AWSDynamoDB").join(export_id);
    std::fs::create_dir_all(export.join("data")).unwrap();
    let items = rt.block_on(async {
        client
            .scan()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap()
    });
    assert_eq!(items.len(), 60);
    let manifest = write_data_files(&export, export_id, &items);
    std::fs::write(export.join("manifest-files.json"), manifest).unwrap();
    std::fs::write(
        export.join("manifest-summary.json"),
        json!({
            "version": "2020-06-30",
            "exportArn": format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}/export/{export_id}"),
            "exportTime": "2026-12-03T10:00:00.000Z",
            "outputFormat": "DYNAMODB_JSON",
            "manifestFilesS3Key": format!("AWSDynamoDB/{export_id}/manifest-files.json"),
            "itemCount": 60,
        })
        .to_string(),
    )
    .unwrap();
    export
}

/// Writes `items` as gzipped DynamoDB JSON data files of 35 items at most
/// under `export`; returns the files manifest that lists them.
fn write_data_files(
    export: &std::path::Path,
    export_id: &str,
    items: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>],
) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    use std::io::Write;

    let mut manifest = String::new();
    for (i, chunk) in items.chunks(35).enumerate() {
        let name = format!("part-{i}.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for item in chunk {
            let item: BTreeMap<String, evs_core::AttrValue> = item
                .iter()
                .map(|(k, v)| (k.clone(), evs_dynamodb::from_sdk(v).unwrap()))
                .collect();
            writeln!(gz, "{}", json!({ "Item": item })).unwrap();
        }
        let gz = gz.finish().unwrap();
        std::fs::write(export.join("data").join(&name), &gz).unwrap();
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&gz));
        manifest.push_str(&format!(
            "{}\n",
            json!({
                "itemCount": chunk.len(),
                "md5Checksum": md5,
                "dataFileS3Key": format!("AWSDynamoDB/{export_id}/data/{name}"),
            })
        ));
    }
    manifest
}

/// `evs backfill` archives every item of the export, from its two data
/// files, and dead-letters none.
fn backfill_archives_every_item(evs: &Evs, export: &str, archive: &str) {
    let backfill = evs.run(&["backfill", "--export", export, "--archive", archive]);
    assert!(backfill.status.success(), "{}", stderr(&backfill));
    let report: serde_json::Value = serde_json::from_str(stdout(&backfill).trim()).unwrap();
    assert_eq!(report["items"], 60);
    assert_eq!(report["archived"], 60);
    assert_eq!(report["deadLettered"], 0);
    assert_eq!(report["dataFiles"], 2);
}

/// A replay from the archive alone (no table to back-fill from).
fn replay_alone(evs: &Evs, archive: &str) -> std::process::Output {
    evs.command(&["replay", "--archive", archive, "--quiet"])
        .env_remove("EVS_TABLE")
        .output()
        .unwrap()
}

/// `evs verify` (EVS_TABLE is set) finds the archive equal to the table,
/// and the replay, from the archive alone, is the table, stream by stream;
/// returns the replay's lines.
fn the_archive_is_the_table(evs: &Evs, archive: &str) -> Vec<String> {
    // EVS_TABLE is set: verify compares with the table.
    let verify = evs.run(&["verify", "--archive", archive]);
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    assert!(
        stdout(&verify).contains("7 streams, 60 events")
            && stdout(&verify).contains("checked against 7 table streams"),
        "{}",
        stdout(&verify)
    );
    // The replay, from the archive alone, is the table, stream by stream.
    let replay = replay_alone(evs, archive);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let replayed = lines(&replay);
    assert_eq!(replayed.len(), 60);
    for s in 0..7 {
        let stream = format!("acct-{s}");
        let read = evs.run(&["read", "--stream", &stream]);
        let mine: Vec<&String> = replayed
            .iter()
            .filter(|l| l.contains(&format!("\"streamId\":\"{stream}\"")))
            .collect();
        let table: Vec<String> = lines(&read);
        assert_eq!(mine, table.iter().collect::<Vec<_>>(), "{stream}");
    }
    replayed
}
