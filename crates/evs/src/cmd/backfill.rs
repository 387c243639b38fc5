//! `evs backfill`: a DynamoDB table export (Export to S3, DynamoDB JSON)
//! into the archive, so a table older than its archiver, or whose stream
//! aged out (24 h), gets a complete archive.
//!
//! An export is `manifest-summary.json` (the export's ARN, time, format,
//! `itemCount` and `manifestFilesS3Key`), `manifest-files.json` (one line
//! per data file: `dataFileS3Key`, `itemCount`, `md5Checksum`) and the data
//! files, gzip NDJSON of `{"Item": {…DynamoDB JSON…}}`.
//!
//! Nothing is archived from an export that is not whole: every count and
//! checksum the manifests give is checked against what is read before the
//! first object is written: the summary's `itemCount` against the sum of
//! the files' (so an empty or cut files manifest is seen), each file's
//! `md5Checksum` (base64 of the MD5 of the file as stored, gzip bytes)
//! against the bytes read, and its `itemCount` against the items in it. Any
//! difference stops the run (exit 1) with a line naming the file and what
//! differs, and writes no marker. (Each file's `etag` is not checked: with
//! multipart uploads or SSE-KMS it is not an MD5 of the file.) The files
//! are read twice, once to check and once to archive: up to
//! [`KEEP_BYTES`] of them are kept between the two reads, the rest read
//! again and checked again.
//!
//! Each item is then handed to the archiver's own handler as an `INSERT`
//! stream record with that image (so an item that is not an event is a dead
//! letter, as it would be from the stream), in batches; the archive's
//! objects are sealed now. An event the archive holds already is a
//! duplicate, which replays drop and `evs verify` counts. When every batch
//! is archived a marker `<prefix>.backfill/<export id>.json` is written
//! beside the events prefix (`events.backfill/…` for `events/`); a second
//! run with that export finds it and does nothing. `--force` runs it again
//! (which only adds duplicates) and replaces the marker with its own.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use evs_archive::store::{LocalDir, Object, ObjectStore, S3Store, StoreError};
use evs_archive::Compression;
use evs_archiver::handler;
use md5::Digest as _;
use serde_json::{json, Value};

use crate::flags::BackfillArgs;

/// Records per handler call.
const BATCH_RECORDS: usize = 1000;
/// Most bytes one data file may decompress to.
const MAX_DATA_FILE_BYTES: u64 = 4 << 30;
/// Most bytes of data files (as stored) kept in memory between the check
/// and the archiving; past that, files are read again.
const KEEP_BYTES: usize = 256 << 20;

pub(super) async fn run(args: BackfillArgs) -> Result<()> {
    let config = evs_cli::location::config(args.archive.clone())?;
    let sink = evs_cli::location::sink(&config).await?;
    // Where the events go, prefix included (`s3://bucket/events/`).
    let place = evs_replay::Archive::new(sink.clone(), config.prefix.clone()).location();
    let (export_store, root) = open_export(&args.export).await?;
    let summary = read_json(
        export_store.as_ref(),
        &format!("{root}manifest-summary.json"),
    )
    .await?;
    let summary = Summary::from_json(&summary, &args.export)?;
    // Beside the events prefix, not under it: replays do not list it.
    let marker = match config.prefix.as_str().strip_suffix('/') {
        Some(events) => format!("{events}.backfill/{}.json", summary.export_id),
        None => format!("evs-backfill/{}.json", summary.export_id),
    };
    let done = match sink.get(&marker).await {
        Ok(_) => true,
        Err(StoreError::NotFound { .. }) => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read the marker {marker}")),
    };
    if done && !args.force {
        eprintln!(
            "evs: export {} was back-filled into {place} already ({marker}); nothing to do \
             (--force runs it again)",
            summary.export_id
        );
        println!(
            "{}",
            json!({ "export": summary.export_arn, "archive": place, "alreadyDone": true })
        );
        return Ok(());
    }

    let export = Export {
        store: export_store.as_ref(),
        root: &root,
        location: &args.export,
    };
    let files = export.files(&summary).await?;
    // First every file is read and checked; nothing is written before.
    let mut kept = Vec::with_capacity(files.len());
    let mut room = KEEP_BYTES;
    for file in &files {
        let bytes = export.read_checked(file, Refusal::NothingArchived).await?;
        if bytes.len() <= room {
            room -= bytes.len();
            kept.push(Some(bytes));
        } else {
            kept.push(None);
        }
    }
    let mut out = Batches {
        sink: sink.as_ref(),
        config: &config,
        timeout: args.timeout,
        batch: Vec::with_capacity(BATCH_RECORDS),
        totals: Totals::default(),
    };
    for (file, kept) in files.iter().zip(kept) {
        let bytes = match kept {
            Some(bytes) => bytes,
            None => export.read_checked(file, Refusal::PartlyArchived).await?,
        };
        let text = file.text(&bytes)?;
        for (n, line) in item_lines(&text) {
            let item = file.item(n, line)?;
            out.totals.items += 1;
            out.push(record(&item, out.totals.items, summary.created_s))
                .await?;
        }
        out.totals.files += 1;
    }
    out.flush().await?;
    let totals = out.totals;
    let mut done = json!({
        "export": summary.export_arn,
        "archive": place,
        "dataFiles": totals.files,
        "items": totals.items,
        "archived": totals.archived,
        "deadLettered": totals.dead_lettered,
        "objects": totals.objects,
        "marker": marker,
    });
    if args.force {
        done["forced"] = json!(true);
    }
    let mut text = done.to_string();
    text.push('\n');
    let object = Object {
        bytes: text.clone().into_bytes(),
        content_type: "application/json".into(),
        content_encoding: None,
        metadata: Default::default(),
    };
    let written = if args.force {
        sink.replace(&marker, &object).await
    } else {
        sink.put(&marker, &object).await.map(drop)
    };
    written.with_context(|| format!("cannot write the marker {marker}"))?;
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

/// What `manifest-summary.json` says, each field checked.
struct Summary {
    export_arn: String,
    export_id: String,
    /// The export's time, epoch seconds (0 when absent).
    created_s: i64,
    /// Items in the whole export.
    item_count: u64,
    /// The file name of the files manifest (`manifestFilesS3Key`'s last part).
    files_manifest: String,
}

impl Summary {
    fn from_json(summary: &Value, location: &str) -> Result<Self> {
        let format = summary["outputFormat"].as_str().unwrap_or("DYNAMODB_JSON");
        if format != "DYNAMODB_JSON" {
            bail!(
                "the export {location} is {format}; only DYNAMODB_JSON exports can be read \
                 (export again with --export-format DYNAMODB_JSON)"
            );
        }
        let kind = summary["exportType"].as_str().unwrap_or("FULL_EXPORT");
        if kind != "FULL_EXPORT" {
            bail!(
                "the export {location} is an {kind}, which holds changes, not items; back-fill \
                 from a full export"
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
        let item_count = summary["itemCount"].as_u64().ok_or_else(|| {
            refuse(
                location,
                "manifest-summary.json has no itemCount",
                Refusal::NothingArchived,
            )
        })?;
        let files_manifest = summary["manifestFilesS3Key"]
            .as_str()
            .and_then(|key| key.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                refuse(
                    location,
                    "manifest-summary.json has no manifestFilesS3Key",
                    Refusal::NothingArchived,
                )
            })?
            .to_owned();
        Ok(Self {
            export_arn,
            export_id,
            created_s,
            item_count,
            files_manifest,
        })
    }
}

/// How much a refused run had archived.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Refused while checking: nothing was written.
    NothingArchived,
    /// A file read again differed from the file checked.
    PartlyArchived,
}

/// The one line of an export that is not what its manifests say.
fn refuse(location: &str, what: impl Display, when: Refusal) -> anyhow::Error {
    match when {
        Refusal::NothingArchived => anyhow!(
            "the export {location} is not whole: {what}; nothing was archived and no marker \
             written (copy or export it again)"
        ),
        Refusal::PartlyArchived => anyhow!(
            "the export {location} changed while it was read: {what}; no marker was written \
             (what was archived is repeated harmlessly by a rerun once the export is whole)"
        ),
    }
}

/// One data file as `manifest-files.json` lists it.
struct DataFile {
    /// `dataFileS3Key`, as listed.
    key: String,
    /// Its key in the export's store.
    path: String,
    item_count: u64,
    md5: [u8; 16],
}

impl DataFile {
    /// The file's text, from its bytes as stored.
    fn text(&self, bytes: &[u8]) -> Result<String> {
        let text = evs_archive::decompress_limited(bytes, Compression::Gzip, MAX_DATA_FILE_BYTES)
            .with_context(|| format!("the export's data file {} is not gzip", self.key))?;
        String::from_utf8(text.into_owned())
            .map_err(|_| anyhow!("the export's data file {} is not UTF-8", self.key))
    }

    /// The item of line `n` (counted from 1).
    fn item(&self, n: usize, line: &str) -> Result<Value> {
        let mut item: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {n}: not JSON", self.key))?;
        match item.get_mut("Item") {
            Some(item) if item.is_object() => Ok(item.take()),
            _ => bail!("{} line {n}: no \"Item\" object", self.key),
        }
    }
}

/// The non-blank lines of a data file, numbered from 1.
fn item_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
}

/// An export being read.
struct Export<'a> {
    store: &'a dyn ObjectStore,
    /// Key prefix of the export's root in `store`.
    root: &'a str,
    /// `--export`, for messages.
    location: &'a str,
}

impl Export<'_> {
    /// The data files `manifest-files.json` lists, each line checked, and
    /// their item counts checked against the summary's.
    async fn files(&self, summary: &Summary) -> Result<Vec<DataFile>> {
        let name = &summary.files_manifest;
        let text = self
            .store
            .get(&format!("{}{name}", self.root))
            .await
            .with_context(|| format!("cannot read {name} of {}", self.location))?;
        let text = String::from_utf8(text).map_err(|_| anyhow!("{name} is not UTF-8"))?;
        let refuse = |what: String| refuse(self.location, what, Refusal::NothingArchived);
        let mut files: Vec<DataFile> = Vec::new();
        for (n, line) in item_lines(&text) {
            let entry: Value = serde_json::from_str(line)
                .map_err(|e| refuse(format!("{name} line {n} is not JSON ({e})")))?;
            let field = |field: &str| refuse(format!("{name} line {n} has no {field}"));
            let key = entry["dataFileS3Key"]
                .as_str()
                .ok_or_else(|| field("dataFileS3Key"))?;
            let item_count = entry["itemCount"]
                .as_u64()
                .ok_or_else(|| field("itemCount"))?;
            let md5 = entry["md5Checksum"]
                .as_str()
                .ok_or_else(|| field("md5Checksum"))?;
            let md5 = md5_of_manifest(md5).ok_or_else(|| {
                refuse(format!(
                    "{name} line {n}: md5Checksum {md5:?} is not an MD5 (base64 of 16 bytes)"
                ))
            })?;
            if files.iter().any(|f| f.key == key) {
                return Err(refuse(format!("{name} lists {key} twice")));
            }
            // The key is the bucket's; in a copy of the export, under its root.
            let file_name = key.rsplit_once("/data/").map_or(key, |(_, name)| name);
            files.push(DataFile {
                key: key.to_owned(),
                path: format!("{}data/{file_name}", self.root),
                item_count,
                md5,
            });
        }
        let listed: u64 = files.iter().map(|f| f.item_count).sum();
        if listed != summary.item_count {
            return Err(refuse(format!(
                "{name} lists {listed} items in {} data files, manifest-summary.json says {}",
                files.len(),
                summary.item_count
            )));
        }
        Ok(files)
    }

    /// The data file's bytes as stored, once its MD5, items and count are
    /// checked against the manifest.
    async fn read_checked(&self, file: &DataFile, when: Refusal) -> Result<Vec<u8>> {
        let bytes = match self.store.get(&file.path).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => {
                let what = format!("{} is missing ({} is not there)", file.key, file.path);
                return Err(refuse(self.location, what, when));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot read the data file {} of {}",
                        file.path, self.location
                    )
                })
            }
        };
        let md5: [u8; 16] = md5::Md5::digest(&bytes).into();
        if md5 != file.md5 {
            let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
            return Err(refuse(
                self.location,
                format!(
                    "{} has MD5 {}, manifest-files.json says {}",
                    file.key,
                    b64(&md5),
                    b64(&file.md5)
                ),
                when,
            ));
        }
        let unreadable = |e: anyhow::Error| refuse(self.location, format!("{e:#}"), when);
        let text = file.text(&bytes).map_err(unreadable)?;
        let mut items = 0u64;
        for (n, line) in item_lines(&text) {
            file.item(n, line).map_err(unreadable)?;
            items += 1;
        }
        if items != file.item_count {
            return Err(refuse(
                self.location,
                format!(
                    "{} holds {items} items, manifest-files.json says {}",
                    file.key, file.item_count
                ),
                when,
            ));
        }
        Ok(bytes)
    }
}

/// A manifest's `md5Checksum`: base64 of the 16 bytes, as AWS writes it
/// (32 hex digits are taken too).
fn md5_of_manifest(text: &str) -> Option<[u8; 16]> {
    let base64 = base64::engine::general_purpose::STANDARD.decode(text).ok();
    if let Some(digest) = base64.and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        return Some(digest);
    }
    let mut digest = [0u8; 16];
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_md5_checksum_is_base64_or_hex_of_16_bytes() {
        let digest: [u8; 16] = md5::Md5::digest(b"abc").into();
        assert_eq!(
            md5_of_manifest("kAFQmDzST7DWlj99KOF/cg=="),
            Some(digest),
            "base64, as AWS writes it"
        );
        assert_eq!(
            md5_of_manifest("900150983cd24fb0d6963f7d28e17f72"),
            Some(digest)
        );
        for bad in [
            "",
            "kAFQmDzST7DWlj99KOF/",
            "not base64!",
            "900150983cd24fb0d6963f7d28e17fzz",
        ] {
            assert_eq!(md5_of_manifest(bad), None, "{bad:?}");
        }
    }
}
