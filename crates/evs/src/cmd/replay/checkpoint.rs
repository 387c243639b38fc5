//! Where `evs replay` keeps its checkpoint: a local file, or an item of a
//! DynamoDB table (`--checkpoint-table`), which outlives the machine the
//! replay runs on (ARCHITECTURE.md, "Stable formats").
//!
//! The table's key is `Id` (S). A checkpoint named `NAME` is the item
//! `Id = NAME` with `Revision` (N, one more on every save), `SavedAt` (S,
//! RFC 3339) and the checkpoint's JSON gzip-compressed in `Body` (B). A
//! checkpoint too large for one item (400 KB: about a million streams'
//! versions compress into several) is stored in parts `NAME#<run>#<rev>#<i>`,
//! written first, and the head item names them (`Parts`, `PartPrefix`): the
//! head's conditional write is the one atomic step, so a reader sees a whole
//! old checkpoint or a whole new one. Every save is conditional on the
//! revision this run read or wrote last, so two replays on one checkpoint
//! cannot silently overwrite each other's progress: the second to save stops
//! with an error. The head also names the run that wrote it (`Run`): when a
//! save's result is unclear (its acknowledgement lost, then the SDK's retry
//! refused because the first attempt had moved the revision), the head is
//! read again, and a head this run wrote is a success; parts are never
//! deleted on an unclear result.
//!
//! A checkpoint file is locked (`<FILE>.lock`) for the whole run, so two
//! replays cannot share one.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use evs_archive::Compression;
use evs_replay::Checkpoint;

use super::output;

/// The checkpoint table's key attribute.
const ID: &str = "Id";
/// Largest compressed body kept in one item, below the 400 KB item limit
/// with room for the key and the other attributes.
const PART_BYTES: usize = 350 * 1024;
/// Most parts a checkpoint may have (about 35 MB compressed).
const MAX_PARTS: usize = 100;
/// Most bytes a stored checkpoint may decompress to.
const MAX_JSON_BYTES: u64 = 1 << 30;

/// Why a checkpoint was not saved.
#[derive(Debug, thiserror::Error)]
pub(super) enum SaveError {
    /// It may heal by waiting (an outage, a full disk): try again later.
    #[error(transparent)]
    Transient(anyhow::Error),
    /// It will not (another run saved it, it is too large): stop.
    #[error(transparent)]
    Fatal(anyhow::Error),
}

/// A checkpoint's home.
pub(super) enum CheckpointStore {
    /// A local file, replaced atomically.
    File(PathBuf),
    /// An item of a DynamoDB table.
    Table(TableCheckpoint),
}

/// A checkpoint kept in a DynamoDB table.
pub(super) struct TableCheckpoint {
    client: Client,
    table: String,
    name: String,
    /// This run's id, in the keys of the parts it writes.
    run: String,
    /// The revision read or last written by this run; `None`: no item yet.
    revision: Option<u64>,
    /// The parts of the stored revision (to delete once replaced).
    parts: Vec<String>,
    /// A save whose result is unclear: the revision it wrote and its parts.
    unclear: Option<(u64, Vec<String>)>,
    /// [`PART_BYTES`], smaller in tests.
    part_bytes: usize,
}

impl CheckpointStore {
    /// A checkpoint in `table` under `name`.
    pub(super) fn table(client: Client, table: String, name: String) -> Self {
        CheckpointStore::Table(TableCheckpoint {
            client,
            table,
            name,
            run: uuid::Uuid::new_v4().simple().to_string(),
            revision: None,
            parts: Vec::new(),
            unclear: None,
            part_bytes: PART_BYTES,
        })
    }

    /// What to call it in messages.
    pub(super) fn describe(&self) -> String {
        match self {
            CheckpointStore::File(path) => format!("the checkpoint {}", path.display()),
            CheckpointStore::Table(t) => {
                format!("the checkpoint {:?} in table {}", t.name, t.table)
            }
        }
    }

    /// Checks, before the first line, that a checkpoint can be saved: the
    /// file can be written, or the table exists.
    pub(super) async fn check(&self) -> Result<()> {
        match self {
            CheckpointStore::File(path) => output::check_writable(path),
            CheckpointStore::Table(t) => {
                t.client
                    .describe_table()
                    .table_name(&t.table)
                    .send()
                    .await
                    .map_err(|e| {
                        match evs_dynamodb::sdk_error(&t.table, "checking the checkpoint table", e)
                        {
                            evs_core::Error::TableNotFound { table } => anyhow::anyhow!(
                                "the checkpoint table {table} does not exist: create it with \
                                 `evs table create-checkpoints --checkpoint-table {table}`"
                            ),
                            other => other.into(),
                        }
                    })?;
                Ok(())
            }
        }
    }

    /// The stored checkpoint, if there is one.
    pub(super) async fn load(&mut self) -> Result<Option<Checkpoint>> {
        let described = self.describe();
        let text = match self {
            CheckpointStore::File(path) => {
                if !path.exists() {
                    return Ok(None);
                }
                std::fs::read_to_string(&*path)
                    .with_context(|| format!("cannot read {described}"))?
            }
            CheckpointStore::Table(t) => match t.load().await? {
                Some(text) => text,
                None => return Ok(None),
            },
        };
        Checkpoint::from_json(&text)
            .map(Some)
            .with_context(|| format!("{described} is not usable"))
    }

    /// Saves `checkpoint`, replacing the stored one at once.
    pub(super) async fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), SaveError> {
        match self {
            CheckpointStore::File(path) => output::write_checkpoint(path, checkpoint)
                .with_context(|| format!("cannot write the checkpoint {}", path.display()))
                .map_err(SaveError::Transient),
            CheckpointStore::Table(t) => t.save(checkpoint).await,
        }
    }
}

impl TableCheckpoint {
    async fn get(&self, id: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ID, AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| evs_dynamodb::sdk_error(&self.table, "reading the checkpoint", e))?;
        Ok(out.item)
    }

    async fn load(&mut self) -> Result<Option<String>> {
        let Some(head) = self.get(&self.name).await? else {
            return Ok(None);
        };
        let bad = |what: &str| {
            anyhow::anyhow!(
                "the checkpoint {:?} in table {} is not usable: {what}",
                self.name,
                self.table
            )
        };
        let revision = number(&head, "Revision").ok_or_else(|| bad("no Revision"))?;
        let mut body = Vec::new();
        let mut parts = Vec::new();
        match (head.get("Body"), number(&head, "Parts")) {
            (Some(AttributeValue::B(b)), None) => body.extend_from_slice(b.as_ref()),
            (None, Some(n)) => {
                let prefix = match head.get("PartPrefix") {
                    Some(AttributeValue::S(p)) => p.clone(),
                    _ => return Err(bad("Parts without PartPrefix")),
                };
                for i in 0..n {
                    let id = format!("{prefix}{i}");
                    let part = self
                        .get(&id)
                        .await?
                        .ok_or_else(|| bad(&format!("part {id:?} is missing")))?;
                    match part.get("Body") {
                        Some(AttributeValue::B(b)) => body.extend_from_slice(b.as_ref()),
                        _ => return Err(bad(&format!("part {id:?} has no Body"))),
                    }
                    parts.push(id);
                }
            }
            _ => return Err(bad("neither Body nor Parts")),
        }
        let json = evs_archive::decompress_limited(&body, Compression::Gzip, MAX_JSON_BYTES)
            .map_err(|e| bad(&format!("its Body does not decompress: {e}")))?;
        let text = String::from_utf8(json.into_owned()).map_err(|_| bad("not UTF-8"))?;
        self.revision = Some(revision);
        self.parts = parts;
        Ok(Some(text))
    }

    async fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), SaveError> {
        self.settle_unclear().await?;
        let body = encode(checkpoint).map_err(SaveError::Fatal)?;
        let chunks: Vec<&[u8]> = body.chunks(self.part_bytes).collect();
        if chunks.len() > MAX_PARTS {
            return Err(SaveError::Fatal(anyhow::anyhow!(
                "the checkpoint is {} bytes compressed, more than {} parts of {} bytes: \
                 too large for table {}; use --checkpoint-file",
                body.len(),
                MAX_PARTS,
                PART_BYTES,
                self.table
            )));
        }
        let revision = self.revision.map_or(1, |r| r + 1);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(ID, AttributeValue::S(self.name.clone()))
            .item("Revision", AttributeValue::N(revision.to_string()))
            .item("Run", AttributeValue::S(self.run.clone()))
            .item(
                "SavedAt",
                AttributeValue::S(evs_core::format_timestamp_ms(evs_core::now_ms())),
            );
        let mut written = Vec::new();
        if chunks.len() <= 1 {
            put = put.item("Body", AttributeValue::B(Blob::new(body.clone())));
        } else {
            // Parts first, under keys no other run writes; the head names them.
            let prefix = format!("{}#{}#{revision}#", self.name, self.run);
            for (i, chunk) in chunks.iter().enumerate() {
                let id = format!("{prefix}{i}");
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item(ID, AttributeValue::S(id.clone()))
                    .item("Body", AttributeValue::B(Blob::new(chunk.to_vec())))
                    .send()
                    .await
                    .map_err(|e| {
                        sdk_save_error(evs_dynamodb::sdk_error(
                            &self.table,
                            "writing a checkpoint part",
                            e,
                        ))
                    })?;
                written.push(id);
            }
            put = put
                .item("Parts", AttributeValue::N(chunks.len().to_string()))
                .item("PartPrefix", AttributeValue::S(prefix));
        }
        put = match self.revision {
            None => put
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", ID),
            Some(r) => put
                .condition_expression("#rev = :rev")
                .expression_attribute_names("#rev", "Revision")
                .expression_attribute_values(":rev", AttributeValue::N(r.to_string())),
        };
        let error = match put.send().await {
            Ok(_) => {
                self.committed(revision, written).await;
                return Ok(());
            }
            Err(e) => evs_dynamodb::sdk_error(&self.table, "saving the checkpoint", e),
        };
        // The write may have happened even so (its acknowledgement lost, and
        // the SDK's retry refused because the first attempt had moved the
        // revision): the head says.
        self.unclear = Some((revision, written));
        if self.settle_unclear().await? {
            return Ok(());
        }
        Err(sdk_save_error(error))
    }

    /// Settles a save whose result was unclear by reading the head: written
    /// by this run at that revision, it is saved; still at the revision
    /// before, it is not (its parts, which nothing names, are deleted);
    /// anything else is another run's save. True: it was saved.
    async fn settle_unclear(&mut self) -> Result<bool, SaveError> {
        let Some((revision, written)) = self.unclear.take() else {
            return Ok(false);
        };
        let head = match self.get(&self.name).await {
            Ok(head) => head,
            Err(e) => {
                self.unclear = Some((revision, written));
                return Err(SaveError::Transient(e));
            }
        };
        let stored = head.as_ref().and_then(|h| number(h, "Revision"));
        let run = head.as_ref().and_then(|h| match h.get("Run") {
            Some(AttributeValue::S(run)) => Some(run.as_str()),
            _ => None,
        });
        if stored == Some(revision) && run == Some(self.run.as_str()) {
            self.committed(revision, written).await;
            Ok(true)
        } else if stored == self.revision {
            self.delete(&written).await;
            Ok(false)
        } else {
            Err(SaveError::Fatal(anyhow::anyhow!(
                "the checkpoint {:?} in table {} was saved by another run since this one \
                 read it (expected revision {}, found {}): two replays must not share a \
                 checkpoint; this one stops without saving",
                self.name,
                self.table,
                self.revision.map_or("none".into(), |r| r.to_string()),
                stored.map_or("none".into(), |r| r.to_string()),
            )))
        }
    }

    /// `revision`, with `parts`, is the stored checkpoint now: the parts of
    /// the one it replaced are deleted.
    async fn committed(&mut self, revision: u64, parts: Vec<String>) {
        let old = std::mem::replace(&mut self.parts, parts);
        self.revision = Some(revision);
        self.delete(&old).await;
    }

    /// Deletes parts no head names any more (best effort: a leftover part
    /// is never read).
    async fn delete(&self, ids: &[String]) {
        for id in ids {
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key(ID, AttributeValue::S(id.clone()))
                .send()
                .await;
            if let Err(e) = deleted {
                tracing::warn!(part = %id, error = %e, "cannot delete an old checkpoint part");
            }
        }
    }
}

/// Creates the checkpoint table (`evs table create-checkpoints`).
pub(crate) async fn create_table(client: &Client, table: &str) -> Result<()> {
    let status = evs_dynamodb::create_table(
        client,
        table,
        &[(
            ID,
            evs_dynamodb::ScalarAttributeType::S,
            evs_dynamodb::KeyType::Hash,
        )],
        None,
    )
    .await?;
    crate::cmd::table::print_created(table, status, None);
    Ok(())
}

/// The checkpoint's JSON, gzip-compressed.
fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let json = checkpoint.to_json()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json.as_bytes())?;
    Ok(gz.finish()?)
}

/// A failed call: transient when waiting may heal it.
fn sdk_save_error(e: evs_core::Error) -> SaveError {
    if e.is_transient() {
        SaveError::Transient(e.into())
    } else {
        SaveError::Fatal(e.into())
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use evs_testkit::{unique_name, Moto};

    use super::*;

    fn checkpoint(streams: u64) -> Checkpoint {
        Checkpoint {
            format: evs_replay::CHECKPOINT_FORMAT,
            start_at_first_seen: false,
            cursor: Some(format!("events/2026/12/03/10/{streams}")),
            last_delivered: (0..streams)
                .map(|i| (format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), i))
                .collect::<BTreeMap<_, _>>(),
            ..Checkpoint::default()
        }
    }

    #[tokio::test]
    async fn a_table_checkpoint_is_whole_in_parts_and_refuses_a_second_writer() {
        let Some(moto) = Moto::shared() else { return };
        let client = moto.dynamodb().await;
        let table = unique_name("evs-checkpoints");
        create_table(&client, &table).await.unwrap();
        let open = || CheckpointStore::table(client.clone(), table.clone(), "orders".into());

        let mut first = open();
        first.check().await.unwrap();
        assert_eq!(first.load().await.unwrap(), None);
        first.save(&checkpoint(3)).await.unwrap();
        assert_eq!(open().load().await.unwrap(), Some(checkpoint(3)));

        // Too large for one item (here: parts of 1,000 bytes): parts, then
        // the head; the replaced revision's parts are deleted.
        let CheckpointStore::Table(t) = &mut first else {
            unreachable!()
        };
        t.part_bytes = 1_000;
        for streams in [2_000, 3_000] {
            first.save(&checkpoint(streams)).await.unwrap();
            assert_eq!(open().load().await.unwrap(), Some(checkpoint(streams)));
        }
        let CheckpointStore::Table(t) = &first else {
            unreachable!()
        };
        assert!(t.parts.len() > 5, "{} parts", t.parts.len());

        // Two runs on one checkpoint: the second to save stops.
        let mut second = open();
        second.load().await.unwrap();
        second.save(&checkpoint(4)).await.unwrap();
        let err = first.save(&checkpoint(5)).await.unwrap_err();
        assert!(matches!(err, SaveError::Fatal(_)), "{err}");
        assert!(err.to_string().contains("saved by another run"), "{err}");
        assert_eq!(open().load().await.unwrap(), Some(checkpoint(4)));

        // A missing table is named before anything is replayed.
        let missing = CheckpointStore::table(client.clone(), unique_name("nope"), "x".into());
        let err = missing.check().await.unwrap_err().to_string();
        assert!(err.contains("create-checkpoints"), "{err}");
    }

    /// A DynamoDB client through `proxy` with the SDK's standard retries,
    /// as in production: a lost acknowledgement is retried, and the retry
    /// of a conditional write then fails its condition.
    fn retrying_client(proxy: &evs_testkit::FaultProxy) -> Client {
        use aws_sdk_dynamodb::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(proxy.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(std::time::Duration::from_millis(5)),
            )
            .build();
        Client::from_conf(config)
    }

    #[tokio::test]
    async fn lost_acknowledgements_never_corrupt_a_checkpoint_nor_look_like_another_run() {
        let Some(moto) = Moto::shared() else { return };
        let seed = std::env::var("EVS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..1_000_000));
        println!("seed {seed} (EVS_SEED={seed} repeats this run)");
        let client = moto.dynamodb().await;
        let table = unique_name("evs-checkpoints");
        create_table(&client, &table).await.unwrap();
        let Some(proxy) = evs_testkit::FaultProxy::start(moto, "{}") else {
            return;
        };
        proxy.configure(&format!(
            r#"{{"lost_ack": 0.25, "drop_after": 0.1, "seed": {seed}}}"#
        ));
        let mut store = CheckpointStore::table(retrying_client(&proxy), table.clone(), "c".into());
        if let CheckpointStore::Table(t) = &mut store {
            t.part_bytes = 1_000;
        }
        let reader = || CheckpointStore::table(client.clone(), table.clone(), "c".into());
        // What the stored checkpoint may be: the last one saved, or one
        // whose save failed after it since (its result unclear).
        let mut may_be: Vec<Option<Checkpoint>> = vec![None];
        let mut successes = 0;
        for round in 0..60u64 {
            // Single items and checkpoints in parts, in turn.
            let next = checkpoint(if round % 2 == 0 {
                3 + round
            } else {
                2_000 + round
            });
            match store.save(&next).await {
                Ok(()) => {
                    successes += 1;
                    may_be = vec![Some(next.clone())];
                }
                Err(SaveError::Transient(_)) => may_be.push(Some(next.clone())),
                Err(SaveError::Fatal(e)) => panic!("round {round}: {e:#}"),
            }
            let stored = reader()
                .load()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
            assert!(
                may_be.contains(&stored),
                "round {round}: the stored checkpoint is none that was saved"
            );
            if may_be.len() == 1 {
                assert_eq!(stored.as_ref(), Some(&next), "round {round}");
            }
        }
        assert!(successes > 20, "{successes} saves of 60");
        let report = proxy.report();
        assert!(report.contains(r#""lost_ack": "#), "{report}");
    }
}
