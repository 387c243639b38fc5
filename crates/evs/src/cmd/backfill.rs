//! `evs backfill`: a DynamoDB table export (Export to S3, DynamoDB JSON)
//! into the archive, so a table older than its archiver, or whose stream
//! aged out (24 h), gets a complete archive.
//!
//! An export is `manifest-summary.json` (the export's ARN, time, format),
//! `manifest-files.json` (one line per data file, `dataFileS3Key`) and the
//! data files, gzip NDJSON of `{"Item": {…DynamoDB JSON…}}`. Each item is
//! handed to the archiver's own handler as an `INSERT` stream record with
//! that image (so a bad item is a dead letter, as it would be from the
//! stream), in batches; the archive's objects are sealed now. An event the
//! archive holds already is a duplicate, which replays drop and `evs
//! verify` counts. When every batch is archived a marker
//! `<prefix>.backfill/<export id>.json` is written beside the events
//! prefix (`events.backfill/…` for `events/`); a
//! second run with that export finds it and does nothing (`--force` runs
//! again, which only adds duplicates).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use evs_archive::store::{LocalDir, Object, ObjectStore, S3Store, StoreError};
use evs_archive::Compression;
use evs_archiver::handler;
use serde_json::{json, Value};

use crate::flags::BackfillArgs;

/// Records per handler call.
const BATCH_RECORDS: usize = 1000;
/// Most bytes one data file may decompress to.
const MAX_DATA_FILE_BYTES: u64 = 4 << 30;

pub(super) async fn run(args: BackfillArgs) -> Result<()> {
    let config = evs_cli::location::config(args.archive.clone())?;
    let sink = evs_cli::location::sink(&config).await?;
    let (export, root) = open_export(&args.export).await?;
    let summary = read_json(export.as_ref(), &format!("{root}manifest-summary.json")).await?;
    let format = summary["outputFormat"].as_str().unwrap_or("DYNAMODB_JSON");
    if format != "DYNAMODB_JSON" {
        bail!(
            "the export {} is {format}; only DYNAMODB_JSON exports can be read (export again with \
             --export-format DYNAMODB_JSON)",
            args.export
        );
    }
    let export_arn = summary["exportArn"].as_str().unwrap_or_default().to_owned();
    let export_id = export_arn
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .context("manifest-summary.json has no exportArn")?
        .to_owned();
    let created_s = summary["exportTime"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(0, time::OffsetDateTime::unix_timestamp);
    // Beside the events prefix, not under it: replays do not list it.
    let marker = match config.prefix.as_str().strip_suffix('/') {
        Some(events) => format!("{events}.backfill/{export_id}.json"),
        None => format!("evs-backfill/{export_id}.json"),
    };
    let done = match sink.get(&marker).await {
        Ok(_) => true,
        Err(StoreError::NotFound { .. }) => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read the marker {marker}")),
    };
    if done && !args.force {
        eprintln!(
            "evs: export {export_id} was back-filled into {} already ({marker}); nothing to do \
             (--force runs it again)",
            sink.location()
        );
        println!(
            "{}",
            json!({ "export": export_arn, "archive": sink.location(), "alreadyDone": true })
        );
        return Ok(());
    }

    let files = export
        .get(&format!("{root}manifest-files.json"))
        .await
        .with_context(|| format!("cannot read manifest-files.json of {}", args.export))?;
    let files = String::from_utf8(files.to_vec()).context("manifest-files.json is not UTF-8")?;
    let mut out = Batches {
        sink: sink.as_ref(),
        config: &config,
        timeout: args.timeout,
        batch: Vec::with_capacity(BATCH_RECORDS),
        totals: Totals::default(),
    };
    for (index, line) in files.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let entry: Value = serde_json::from_str(line)
            .with_context(|| format!("manifest-files.json line {} is not JSON", index + 1))?;
        let key = entry["dataFileS3Key"].as_str().with_context(|| {
            format!(
                "manifest-files.json line {} has no dataFileS3Key",
                index + 1
            )
        })?;
        // The key is the bucket's; in a copy of the export, under its root.
        let name = key.rsplit_once("/data/").map_or(key, |(_, name)| name);
        let path = format!("{root}data/{name}");
        let bytes = export
            .get(&path)
            .await
            .with_context(|| format!("cannot read the export's data file {path}"))?;
        let text = evs_archive::decompress_limited(&bytes, Compression::Gzip, MAX_DATA_FILE_BYTES)
            .with_context(|| format!("the export's data file {path} is not gzip"))?;
        let text = std::str::from_utf8(&text)
            .with_context(|| format!("the export's data file {path} is not UTF-8"))?;
        for (n, item) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let item: Value = serde_json::from_str(item)
                .with_context(|| format!("{path} line {}: not JSON", n + 1))?;
            out.totals.items += 1;
            out.push(record(&item["Item"], out.totals.items, created_s))
                .await?;
        }
        out.totals.files += 1;
    }
    out.flush().await?;
    let totals = out.totals;
    let done = json!({
        "export": export_arn,
        "archive": sink.location(),
        "dataFiles": totals.files,
        "items": totals.items,
        "archived": totals.archived,
        "deadLettered": totals.dead_lettered,
        "objects": totals.objects,
        "marker": marker,
    });
    let mut text = done.to_string();
    text.push('\n');
    let object = Object {
        bytes: text.clone().into_bytes(),
        content_type: "application/json".into(),
        content_encoding: None,
        metadata: Default::default(),
    };
    sink.put(&marker, &object)
        .await
        .with_context(|| format!("cannot write the marker {marker}"))?;
    print!("{text}");
    if totals.dead_lettered > 0 {
        eprintln!(
            "evs: warning: {} items were not events and went to dead letters",
            totals.dead_lettered
        );
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    files: u64,
    items: u64,
    archived: u64,
    dead_lettered: u64,
    objects: u64,
}

/// The export's store and the key prefix of its root (`…/AWSDynamoDB/<id>/`).
async fn open_export(location: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(super::Usage(format!("--export {location:?} names no bucket")).into());
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let store = S3Store::new(evs_cli::aws::s3().await?, bucket.to_owned());
        return Ok((Arc::new(store), prefix));
    }
    let dir = std::path::Path::new(location);
    if !dir.join("manifest-summary.json").is_file() {
        return Err(super::Usage(format!(
            "--export {location}: no manifest-summary.json there (give the export's directory, \
             …/AWSDynamoDB/<export id>/)"
        ))
        .into());
    }
    Ok((Arc::new(LocalDir::new(dir.to_path_buf())), String::new()))
}

async fn read_json(store: &dyn ObjectStore, key: &str) -> Result<Value> {
    let bytes = store
        .get(key)
        .await
        .with_context(|| format!("cannot read {key} of the export"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{key} of the export is not JSON"))
}

/// An exported item as the stream record an insert of it would have made.
/// The export has no stream positions: the record's `eventID` and
/// `SequenceNumber` are the item's place in the export (they are record
/// fields of the archive line, not part of the event).
fn record(item: &Value, n: u64, created_s: i64) -> Value {
    let keys = json!({ "StreamId": item["StreamId"], "EventId": item["EventId"] });
    json!({
        "eventID": format!("backfill-{n}"),
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": created_s,
            "Keys": keys,
            "NewImage": item,
            "SequenceNumber": n.to_string(),
            "StreamViewType": "NEW_IMAGE",
        },
    })
}

/// The records on their way to the archiver's handler, in batches.
struct Batches<'a> {
    sink: &'a dyn ObjectStore,
    config: &'a evs_archiver::config::Config,
    timeout: Duration,
    batch: Vec<Value>,
    totals: Totals,
}

impl Batches<'_> {
    /// Adds a record; a full batch is archived.
    async fn push(&mut self, record: Value) -> Result<()> {
        self.batch.push(record);
        if self.batch.len() == BATCH_RECORDS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Archives the batch with the archiver's handler and empties it.
    async fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let event = json!({ "Records": std::mem::take(&mut self.batch) }).to_string();
        let summary = handler::handle(
            &event,
            self.sink,
            self.config,
            &evs_core::now_ms,
            Some(self.timeout),
        )
        .await
        .context("archiving a batch of the export failed (a rerun starts the back-fill again)")?;
        if !summary.batch_item_failures.is_empty() {
            bail!(
                "archiving a batch of the export failed for {} records (a rerun starts the back-fill again)",
                summary.batch_item_failures.len()
            );
        }
        self.totals.archived += summary.archived as u64;
        self.totals.dead_lettered += summary.dead_lettered as u64;
        self.totals.objects += u64::from(summary.key.is_some());
        Ok(())
    }
}
