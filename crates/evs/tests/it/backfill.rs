//! `evs backfill` from exports laid out as DynamoDB's Export to S3 writes
//! them (two manifests, gzip DynamoDB JSON data files), made here from
//! encoded items, with no table: a whole export is archived and verified,
//! `--force` runs it again and replaces the marker (a local directory and
//! a bucket on the emulator), and every kind of partial or inconsistent
//! export is refused before anything is archived. And `evs verify` on
//! archives holding copies of events: the same JSON spaced differently is
//! a duplicate, other contents a conflict, and both are counted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use evs_core::{NewEvent, StreamId};
use evs_testkit::{unique_name, Moto};
use md5::Digest as _;
use serde_json::{json, Value};

use crate::cli::{stderr, stdout};

const EXPORT_ID: &str = "01764000000000-abcdef12";
const FILES: usize = 3;
const PER_FILE: usize = 640;
const ITEMS: usize = FILES * PER_FILE;
const STREAMS: usize = 16;

/// `evs` with only `env` (no table: verify reads the archive alone).
fn evs(env: &[(&'static str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evs"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .output()
        .unwrap()
}

/// The items of `STREAMS` streams, `ITEMS` events in all, as export lines
/// (`{"Item": …}`), in `FILES` data files of `PER_FILE`.
fn export_lines() -> Vec<Vec<String>> {
    let mut versions = [0u64; STREAMS];
    let lines: Vec<String> = (0..ITEMS)
        .map(|n| {
            let s = n % STREAMS;
            versions[s] += 1;
            let stream = StreamId::new(format!("acct-{s}")).unwrap();
            let payload = json!({ "amount": n, "big": 123456789012345678901234567890_u128 });
            let event = NewEvent::new("Deposited", payload);
            let ts = 1_795_000_000_000 + n as i64;
            let item = evs_core::item::encode(&stream, versions[s], ts, &event, 1).unwrap();
            json!({ "Item": item }).to_string()
        })
        .collect();
    lines.chunks(PER_FILE).map(<[String]>::to_vec).collect()
}

fn gzip(lines: &[String]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for line in lines {
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap()
}

fn md5_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

fn data_file(export: &Path, i: usize) -> PathBuf {
    export.join("data").join(format!("part-{i}.json.gz"))
}

/// Writes `files` as an export under `dir/AWSDynamoDB/<id>/`, with every
/// field AWS writes; returns the export's directory.
fn write_export(dir: &Path, files: &[Vec<String>]) -> PathBuf {
    let export = dir.join("AWSDynamoDB").join(EXPORT_ID);
    std::fs::create_dir_all(export.join("data")).unwrap();
    let mut manifest = String::new();
    for (i, lines) in files.iter().enumerate() {
        let bytes = gzip(lines);
        std::fs::write(data_file(&export, i), &bytes).unwrap();
        let hex: String = md5::Md5::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        manifest.push_str(&format!(
            "{}\n",
            json!({
                "itemCount": lines.len(),
                "md5Checksum": md5_base64(&bytes),
                "etag": format!("{hex}-1"),
                "dataFileS3Key": format!("AWSDynamoDB/{EXPORT_ID}/data/part-{i}.json.gz"),
            })
        ));
    }
    std::fs::write(export.join("manifest-files.json"), manifest).unwrap();
    let summary = json!({
        "version": "2020-06-30",
        "exportArn": format!("arn:aws:dynamodb:us-east-1:123456789012:table/events/export/{EXPORT_ID}"),
        "startTime": "2026-12-03T10:00:00.000Z",
        "endTime": "2026-12-03T10:05:00.000Z",
        "exportTime": "2026-12-03T10:00:00.000Z",
        "s3Bucket": "my-exports",
        "s3Prefix": null,
        "manifestFilesS3Key": format!("AWSDynamoDB/{EXPORT_ID}/manifest-files.json"),
        "billedSizeBytes": 0,
        "itemCount": files.iter().map(Vec::len).sum::<usize>(),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    });
    std::fs::write(export.join("manifest-summary.json"), summary.to_string()).unwrap();
    export
}

fn edit_summary(export: &Path, edit: impl FnOnce(&mut Value)) {
    let path = export.join("manifest-summary.json");
    let mut summary: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut summary);
    std::fs::write(path, summary.to_string()).unwrap();
}

/// Edits line `i` of `manifest-files.json` (`None` drops it).
fn edit_files_manifest(export: &Path, i: usize, mut edit: impl FnMut(&mut Value) -> Option<()>) {
    let path = export.join("manifest-files.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        let mut entry: Value = serde_json::from_str(line).unwrap();
        if n == i && edit(&mut entry).is_none() {
            continue;
        }
        out.push_str(&format!("{entry}\n"));
    }
    std::fs::write(path, out).unwrap();
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn marker(archive: &Path) -> PathBuf {
    archive
        .join("events.backfill")
        .join(format!("{EXPORT_ID}.json"))
}

fn json_out(out: &Output) -> Value {
    serde_json::from_str(stdout(out).trim()).unwrap()
}

/// A back-fill of a whole export, then the same again (nothing to do), then
/// with `--force`: it archives the export again (only duplicates), exits 0
/// and replaces the marker with its own. The `archive` it prints is the
/// events' location, prefix included.
#[test]
fn force_runs_again_and_replaces_the_marker() {
    let dir = std::env::temp_dir().join(unique_name("evs-backfill-force"));
    let export = write_export(&dir, &export_lines());
    let archive = dir.join("archive");
    let (export_arg, archive_arg) = (export.display().to_string(), archive.display().to_string());
    let run = |force: bool| {
        let mut args = vec![
            "backfill",
            "--export",
            &export_arg,
            "--archive",
            &archive_arg,
        ];
        if force {
            args.push("--force");
        }
        evs(&[], &args)
    };
    let first = json_out(&run(false));
    assert_eq!(first["items"], ITEMS);
    assert_eq!(first["archived"], ITEMS);
    assert_eq!(first["dataFiles"], FILES);
    assert_eq!(first.get("forced"), None);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(marker(&archive)).unwrap()).unwrap();
    assert_eq!(on_disk, first, "the marker is the run's summary");

    let again = run(false);
    assert!(
        stderr(&again).contains("back-filled into"),
        "{}",
        stderr(&again)
    );
    assert_eq!(json_out(&again)["alreadyDone"], true);

    let forced = run(true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let forced = json_out(&forced);
    assert_eq!(forced["archived"], ITEMS);
    assert_eq!(forced["forced"], true);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(marker(&archive)).unwrap()).unwrap();
    assert_eq!(on_disk, forced, "the marker is the forced run's");
    // Every event twice: complete, and each repeat counted.
    let verify = evs(&[], &["verify", "--archive", &archive_arg]);
    let report = stdout(&verify);
    assert!(
        report.contains(&format!(
            "{STREAMS} streams, {ITEMS} events, {ITEMS} duplicate lines"
        )),
        "{report}"
    );
    // Where the events went, the prefix included.
    let events = format!("{archive_arg}/events/");
    assert_eq!(first["archive"], events);
    assert_eq!(json_out(&again)["archive"], events);
    assert_eq!(forced["archive"], events);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same in a bucket: an export in S3 back-filled into
/// `s3://bucket/prefix/`, then `--force` replaces the marker there.
#[test]
fn force_replaces_the_marker_in_a_bucket() {
    let Some(moto) = Moto::shared() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = evs_archive::store::s3::client_for(&rt.block_on(moto.sdk_config()));
    let bucket = unique_name("backfill");
    rt.block_on(client.create_bucket().bucket(&bucket).send())
        .unwrap();
    let dir = std::env::temp_dir().join(unique_name("evs-backfill-s3"));
    let export = write_export(&dir, &export_lines());
    for file in files_under(&export) {
        let key = file.strip_prefix(&dir).unwrap().display().to_string();
        let body = std::fs::read(&file).unwrap();
        rt.block_on(
            client
                .put_object()
                .bucket(&bucket)
                .key(format!("exports/{key}"))
                .body(body.into())
                .send(),
        )
        .unwrap();
    }
    let export_arg = format!("s3://{bucket}/exports/AWSDynamoDB/{EXPORT_ID}/");
    let archive_arg = format!("s3://{bucket}/archive/ev/");
    let env = moto.env();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "backfill",
            "--export",
            &export_arg,
            "--archive",
            &archive_arg,
        ];
        args.extend(extra);
        evs(&env, &args)
    };
    let first = json_out(&run(&[]));
    assert_eq!(first["archived"], ITEMS);
    let forced = run(&["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let forced = json_out(&forced);
    assert_eq!(forced["forced"], true);
    let marker_key = format!("archive/ev.backfill/{EXPORT_ID}.json");
    let body = rt
        .block_on(client.get_object().bucket(&bucket).key(&marker_key).send())
        .unwrap()
        .body;
    let body = rt.block_on(body.collect()).unwrap().into_bytes();
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), forced);
    assert_eq!(first["archive"], archive_arg, "the location as given");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One way an export can differ from what its manifests say.
struct Corruption {
    name: &'static str,
    /// Changes the export (given the file to damage and a count to cut to).
    apply: fn(&Path, usize, usize),
    /// What the error line must say.
    says: fn(usize, usize) -> Vec<String>,
}

fn cut_file(export: &Path, file: usize, keep: usize, fix_md5: bool) {
    let lines = export_lines().swap_remove(file);
    let bytes = gzip(&lines[..keep]);
    std::fs::write(data_file(export, file), &bytes).unwrap();
    if fix_md5 {
        edit_files_manifest(export, file, |e| {
            e["md5Checksum"] = json!(md5_base64(&bytes));
            Some(())
        });
    }
}

fn file_key(file: usize) -> String {
    format!("AWSDynamoDB/{EXPORT_ID}/data/part-{file}.json.gz")
}

fn corruptions() -> Vec<Corruption> {
    vec![
        Corruption {
            name: "a data file cut short, its MD5 in the manifest matching",
            apply: |export, file, keep| cut_file(export, file, keep, true),
            says: |file, keep| {
                vec![format!(
                    "{} holds {keep} items, manifest-files.json says {PER_FILE}",
                    file_key(file)
                )]
            },
        },
        Corruption {
            name: "a data file cut short",
            apply: |export, file, keep| cut_file(export, file, keep, false),
            says: |file, _| vec![format!("{} has MD5 ", file_key(file))],
        },
        Corruption {
            name: "an empty manifest-files.json",
            apply: |export, _, _| std::fs::write(export.join("manifest-files.json"), "").unwrap(),
            says: |_, _| {
                vec![format!(
                    "manifest-files.json lists 0 items in 0 data files, manifest-summary.json says {ITEMS}"
                )]
            },
        },
        Corruption {
            name: "a data file missing from manifest-files.json",
            apply: |export, file, _| edit_files_manifest(export, file, |_| None),
            says: |_, _| {
                vec![format!(
                    "lists {} items in {} data files, manifest-summary.json says {ITEMS}",
                    ITEMS - PER_FILE,
                    FILES - 1
                )]
            },
        },
        Corruption {
            name: "a wrong md5Checksum",
            apply: |export, file, _| {
                edit_files_manifest(export, file, |e| {
                    e["md5Checksum"] = json!(md5_base64(b"something else"));
                    Some(())
                })
            },
            says: |file, _| {
                vec![
                    format!("{} has MD5 ", file_key(file)),
                    format!("manifest-files.json says {}", md5_base64(b"something else")),
                ]
            },
        },
        Corruption {
            name: "a file's itemCount wrong (the summary agreeing)",
            apply: |export, file, _| {
                edit_files_manifest(export, file, |e| {
                    e["itemCount"] = json!(PER_FILE + 1);
                    Some(())
                });
                edit_summary(export, |s| s["itemCount"] = json!(ITEMS + 1));
            },
            says: |file, _| {
                vec![format!(
                    "{} holds {PER_FILE} items, manifest-files.json says {}",
                    file_key(file),
                    PER_FILE + 1
                )]
            },
        },
        Corruption {
            name: "the summary's itemCount wrong",
            apply: |export, _, _| edit_summary(export, |s| s["itemCount"] = json!(ITEMS - 1)),
            says: |_, _| {
                vec![format!(
                    "lists {ITEMS} items in {FILES} data files, manifest-summary.json says {}",
                    ITEMS - 1
                )]
            },
        },
        Corruption {
            name: "no manifestFilesS3Key",
            apply: |export, _, _| {
                edit_summary(export, |s| {
                    s.as_object_mut().unwrap().remove("manifestFilesS3Key");
                })
            },
            says: |_, _| vec!["manifest-summary.json has no manifestFilesS3Key".into()],
        },
        Corruption {
            name: "no itemCount in the summary",
            apply: |export, _, _| {
                edit_summary(export, |s| {
                    s.as_object_mut().unwrap().remove("itemCount");
                })
            },
            says: |_, _| vec!["manifest-summary.json has no itemCount".into()],
        },
        Corruption {
            name: "no md5Checksum for a file",
            apply: |export, file, _| {
                edit_files_manifest(export, file, |e| {
                    e.as_object_mut().unwrap().remove("md5Checksum");
                    Some(())
                })
            },
            says: |file, _| {
                vec![format!(
                    "manifest-files.json line {} has no md5Checksum",
                    file + 1
                )]
            },
        },
        Corruption {
            name: "a line that is no item",
            apply: |export, file, keep| {
                let mut lines = export_lines().swap_remove(file);
                lines[keep] = json!({ "Other": {} }).to_string();
                let bytes = gzip(&lines);
                std::fs::write(data_file(export, file), &bytes).unwrap();
                edit_files_manifest(export, file, |e| {
                    e["md5Checksum"] = json!(md5_base64(&bytes));
                    Some(())
                });
            },
            says: |file, keep| {
                vec![format!(
                    "{} line {}: no \"Item\" object",
                    file_key(file),
                    keep + 1
                )]
            },
        },
        Corruption {
            name: "a data file missing",
            apply: |export, file, _| std::fs::remove_file(data_file(export, file)).unwrap(),
            says: |file, _| vec![format!("{} is missing", file_key(file))],
        },
    ]
}

/// Each kind of damage to an export, in a seeded random file cut at a
/// seeded random count: exit 1, one line naming the file and what differs,
/// no archive object and no marker (so a rerun does not say "done").
#[test]
fn a_partial_or_inconsistent_export_is_refused_before_anything_is_archived() {
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("seed {seed}");
    let dir = std::env::temp_dir().join(unique_name("evs-backfill-partial"));
    let mut failures = Vec::new();
    for (i, corruption) in corruptions().iter().enumerate() {
        let case = dir.join(i.to_string());
        let export = write_export(&case, &export_lines());
        let (file, keep) = (rng.usize(..FILES), rng.usize(1..PER_FILE));
        (corruption.apply)(&export, file, keep);
        let archive = case.join("archive");
        let out = evs(
            &[],
            &[
                "backfill",
                "--export",
                &export.display().to_string(),
                "--archive",
                &archive.display().to_string(),
            ],
        );
        // Every case is run; the failures are listed together.
        let err = stderr(&out);
        let mut wrong: Vec<String> = (corruption.says)(file, keep)
            .into_iter()
            .filter(|says| !err.contains(says.as_str()))
            .map(|says| format!("{says:?} not said"))
            .collect();
        if out.status.code() != Some(1) || err.trim_end().lines().count() != 1 {
            wrong.push(format!("exit {:?}, not 1 with one line", out.status.code()));
        }
        if !err.contains(&export.display().to_string()) {
            wrong.push("the export not named".into());
        }
        if !files_under(&archive).is_empty() {
            wrong.push(format!("{} files written", files_under(&archive).len()));
        }
        if marker(&archive).exists() {
            wrong.push("a marker written".into());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} (file {file}, {keep} items): {}; stderr: {err}",
                corruption.name,
                wrong.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
    // The same export whole is archived.
    let export = write_export(&dir.join("whole"), &export_lines());
    let archive = dir.join("whole").join("archive");
    let out = evs(
        &[],
        &[
            "backfill",
            "--export",
            &export.display().to_string(),
            "--archive",
            &archive.display().to_string(),
        ],
    );
    assert_eq!(json_out(&out)["archived"], ITEMS);
    let _ = std::fs::remove_dir_all(&dir);
}

/// JSON text with a space around every `:` and `,` and inside brackets:
/// the same value, other bytes.
fn spaced(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} : {}", Value::from(k.as_str()), spaced(v)))
                .collect();
            format!("{{ {} }}", fields.join(" , "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(spaced).collect();
            format!("[ {} ]", items.join(" , "))
        }
        other => other.to_string(),
    }
}

/// A local archive made by a back-fill of 40 events (one object); returns
/// the archive, its object and the object's text.
fn archive_of_40(dir: &Path) -> (PathBuf, PathBuf, String) {
    let lines: Vec<String> = export_lines().concat().into_iter().take(40).collect();
    let export = write_export(dir, &[lines]);
    let archive = dir.join("archive");
    let out = evs(
        &[],
        &[
            "backfill",
            "--export",
            &export.display().to_string(),
            "--archive",
            &archive.display().to_string(),
        ],
    );
    assert_eq!(json_out(&out)["objects"], 1);
    let object = files_under(&archive.join("events")).remove(0);
    let stored = std::fs::read(&object).unwrap();
    let text = evs_archive::decompress(&stored, evs_archive::Compression::Gzip).unwrap();
    let text = String::from_utf8(text.into_owned()).unwrap();
    (archive, object, text)
}

/// Writes `lines` as another object beside `object`: a key of the same seal
/// time with the nonce `nonce` × 32, uncompressed.
fn write_copy(object: &Path, nonce: char, lines: &[String]) {
    let name = object.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".ndjson.gz").unwrap();
    let (head, _nonce) = stem.rsplit_once('-').unwrap();
    let copy = format!("{head}-{}.ndjson", nonce.to_string().repeat(32));
    std::fs::write(object.with_file_name(copy), lines.join("\n") + "\n").unwrap();
}

/// The first line of `text` with its payload changed: the same event id,
/// other contents.
fn changed_first(text: &str) -> (String, String, Value) {
    let mut changed: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    changed["payload"]["amount"] = json!(-1);
    let stream = changed["streamId"].as_str().unwrap().to_owned();
    let event = changed["eventId"].clone();
    (changed.to_string(), stream, event)
}

/// Every line of an archive again with other spacing and its fields in
/// reverse order: the same events, so verify finds the archive complete and
/// counts each repeated line as a duplicate.
#[test]
fn verify_takes_the_same_json_spaced_otherwise_as_a_duplicate() {
    let dir = std::env::temp_dir().join(unique_name("evs-verify-spacing"));
    let (archive, object, text) = archive_of_40(&dir);
    let respaced: Vec<String> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let reversed: serde_json::Map<String, Value> = v
                .as_object()
                .unwrap()
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            spaced(&Value::Object(reversed))
        })
        .collect();
    assert_ne!(respaced[0], text.lines().next().unwrap());
    write_copy(&object, 'e', &respaced);
    let archive_arg = archive.display().to_string();
    let verify = evs(&[], &["verify", "--archive", &archive_arg]);
    let report = stdout(&verify);
    assert!(
        report.contains("40 events, 40 duplicate lines") && report.trim_end().ends_with("complete"),
        "{report}"
    );

    // And with one more copy of the first event, its payload changed: a
    // conflict of 3 copies with 2 contents, and 41 duplicate lines.
    let (changed, stream, event) = changed_first(&text);
    write_copy(&object, 'f', &[changed]);
    let verify = evs(&[], &["verify", "--archive", &archive_arg]);
    assert_eq!(verify.status.code(), Some(4), "{}", stderr(&verify));
    let report = String::from_utf8_lossy(&verify.stdout);
    for needle in [
        "40 events, 41 duplicate lines, 1 events archived with different contents (3 lines)"
            .to_owned(),
        format!("conflict: stream {stream:?} event {event} is archived 3 times with 2 different contents"),
    ] {
        assert!(report.contains(&needle), "{needle:?} not in\n{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A conflicting copy is a duplicate line too: verify counts it and says how
/// many copies and contents the event has, instead of "0 duplicate lines".
#[test]
fn verify_counts_a_conflicting_copy_among_the_duplicate_lines() {
    let dir = std::env::temp_dir().join(unique_name("evs-verify-conflict"));
    let (archive, object, text) = archive_of_40(&dir);
    let (changed, stream, event) = changed_first(&text);
    write_copy(&object, 'f', &[changed]);
    let verify = evs(
        &[],
        &["verify", "--archive", &archive.display().to_string()],
    );
    assert_eq!(verify.status.code(), Some(4), "{}", stderr(&verify));
    let report = String::from_utf8_lossy(&verify.stdout);
    for needle in [
        "40 events, 1 duplicate lines, 1 events archived with different contents (2 lines)"
            .to_owned(),
        format!("conflict: stream {stream:?} event {event} is archived 2 times with 2 different contents"),
        "INCOMPLETE: 0 events missing in 0 ranges, 1 conflicts".to_owned(),
    ] {
        assert!(report.contains(&needle), "{needle:?} not in\n{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
