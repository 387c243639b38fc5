//! `evs verify`: is the archive complete?

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use evs_core::EventStoreExt;
use evs_dynamodb::DynamoStore;
use evs_replay::verify;

use super::progress::{count, megabytes, Progress};
use super::{location, Incomplete};
use crate::flags::VerifyArgs;

pub(super) async fn run(table: Option<&str>, args: VerifyArgs) -> Result<()> {
    let archive = location::open(args.archive.archive.clone()).await?;
    let place = archive.location();
    let started = Instant::now();
    // The table first: every event it holds then should be in the archive
    // by the time the archive is read (up to the archiver's lag).
    let store = match table {
        Some(table) => Some(DynamoStore::new(evs_cli::aws::dynamodb().await?, table)),
        None => None,
    };
    let mut versions = match (&store, table) {
        (Some(store), Some(table)) => {
            let progress = Mutex::new(Progress::new(args.quiet));
            let versions = store
                .last_versions(args.segments, &|items| {
                    if let Ok(mut p) = progress.lock() {
                        p.update(false, || {
                            format!(
                                "verify: scanning table {table} in {} segments: {} items",
                                args.segments,
                                count(items)
                            )
                        });
                    }
                })
                .await?;
            if let Ok(mut p) = progress.lock() {
                p.finish();
            }
            Some(versions)
        }
        _ => None,
    };
    let mut progress = Progress::new(args.quiet);
    let index = verify::read_archive(archive, args.archive.read_ahead, |p| {
        progress.update(p.objects == p.total_objects, || {
            let width = 30usize;
            let done = if p.total_objects == 0 {
                width
            } else {
                (p.objects as usize * width) / p.total_objects as usize
            };
            format!(
                "verify: reading {place} [{}{}] {}/{} objects, {} lines, {}",
                "#".repeat(done),
                " ".repeat(width - done),
                count(p.objects),
                count(p.total_objects),
                count(p.lines),
                megabytes(p.stored_bytes),
            )
        });
    })
    .await
    .with_context(|| format!("cannot read the archive {place}"))?;
    progress.finish();

    // Events appended after the scan may be archived already: ask the table
    // again about the streams the archive is ahead on.
    if let (Some(store), Some(versions)) = (&store, versions.as_mut()) {
        for (stream, archived) in index.last_archived() {
            if versions.get(stream).is_none_or(|&v| v < archived) {
                let id = evs_core::StreamId::new(stream)?;
                let now = store.version(&id).await?;
                if now > 0 {
                    versions.insert(stream.to_owned(), now);
                }
            }
        }
    }
    let objects = index.objects;
    let skipped = index.skipped_keys;
    let report = index.report(versions.as_ref());
    println!(
        "verify {place}: {} objects read in {:.1} s{}",
        count(objects),
        started.elapsed().as_secs_f64(),
        if skipped > 0 {
            format!(", {} keys skipped (not archive objects)", count(skipped))
        } else {
            String::new()
        }
    );
    println!("{report}");
    if report.is_complete() {
        Ok(())
    } else {
        Err(Incomplete(format!(
            "the archive is incomplete: {} events missing, {} conflicts",
            report.missing_events(),
            report.conflicts.len()
        ))
        .into())
    }
}
