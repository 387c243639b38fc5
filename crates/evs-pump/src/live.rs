//! The live projection driver outside Lambda (docs/design.md §9): the
//! pump's stream reader feeds `evs_projection::live::apply_records`, the
//! code a projection's Lambda runs, and the source commits what was applied.
//! A stream that failed is applied again from its first record not applied,
//! as Lambda would retry it; the records after it that were applied are
//! skipped by version.

use evs_core::Streak;
use evs_projection::live::{apply_records, LiveReport};
use evs_projection::{Applier, Projection, RowStore};

use crate::{next_work, Next, Options, PumpError, Source, Stop};

/// What [`run_live`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSummary {
    /// Batches read and applied in full.
    pub batches: u64,
    /// Events applied (holes filled from the table included).
    pub applied: u64,
    /// Events skipped as already applied.
    pub skipped: u64,
    /// Records that are not events, as reported (never retried, but
    /// reported again when a part of a batch holding them is applied again).
    pub dead_letters: u64,
    /// Attempts that had to apply part of a batch again.
    pub retries: u64,
    /// Streams parked (an event the projection or the store refused): the
    /// others went on; `RowStore::parked` lists them.
    pub parked: u64,
    /// Events of parked streams that wait until they are resumed.
    pub held: u64,
    /// Whether it ended on a stop (rather than caught up with `once`).
    pub stopped: bool,
}

/// Applies the records of `source` to a projection until `stop` (or, with
/// [`Options::once`], until the source is caught up). An event the
/// projection refuses parks its stream and the rest goes on. Each batch's records
/// are committed to the source up to the first one to retry; the rest is
/// applied again after a backoff. Failures that may heal (the state store or
/// the events table throttled or unreachable, a lost race) are retried as
/// [`Options::retry_for`] allows, others up to [`Options::max_attempts`]
/// times; then it stops with an error, and a restart resumes from the
/// source's checkpoint. `report` sees every attempt.
pub async fn run_live<S, P, St>(
    source: &mut S,
    applier: &mut Applier<P, St>,
    options: &Options,
    mut stop: Stop,
    report: &mut (dyn FnMut(&LiveReport) + Send),
) -> Result<LiveSummary, PumpError>
where
    S: Source + ?Sized,
    P: Projection,
    St: RowStore<P::Row>,
{
    options.validate()?;
    let mut summary = LiveSummary::default();
    loop {
        let batch = match next_work(source, options, &mut stop).await? {
            Next::Batch(batch) => batch,
            Next::CaughtUp => return Ok(summary),
            Next::Stopped => {
                summary.stopped = true;
                return Ok(summary);
            }
        };
        let mut start = 0;
        let mut streak = Streak::default();
        while start < batch.records.len() {
            let live = apply_records(applier, &batch.records[start..], evs_core::now_ms()).await;
            report(&live);
            summary.applied += live.batch.applied();
            summary.skipped += live.batch.skipped();
            summary.parked += live.batch.parked().count() as u64;
            summary.held += live.batch.held();
            for (stream, parked) in live.batch.parked() {
                tracing::error!(source = %batch.label, %stream, event_id = parked.event_id, reason = %parked.reason, "stream parked: its later events wait until it is resumed; the other streams go on");
            }
            // A dead letter after the first record to retry comes again.
            summary.dead_letters += live.dead_letters_before_retry as u64;
            if live.first_retry > 0 {
                source.commit(&batch, start + live.first_retry).await?;
                start += live.first_retry;
                streak.end();
            }
            let transient = live.batch.only_transient_failures();
            let failed = live.batch.streams.into_iter().find_map(|s| {
                s.failed
                    .map(|(event_id, error)| (s.stream, event_id, error))
            });
            let Some((stream, event_id, error)) = failed else {
                continue;
            };
            let (failures, since) = streak.fail();
            if options.gives_up(failures, transient, since) {
                return Err(PumpError::Projection {
                    label: batch.label.clone(),
                    attempts: failures,
                    stream,
                    event_id,
                    source: Box::new(error),
                });
            }
            let wait = options.backoff_policy().delay(failures);
            tracing::warn!(source = %batch.label, %stream, event_id, error = %evs_core::describe_chain(&error), "stream not applied; retrying in {wait:.1?}");
            summary.retries += 1;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.stopped() => {
                    summary.stopped = true;
                    return Ok(summary);
                }
            }
        }
        summary.batches += 1;
    }
}

#[cfg(test)]
mod tests {
    use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent, StreamId};
    use evs_projection::{Applier, MemoryRowStore, Projection, RowKey};
    use serde_json::json;

    use super::*;
    use crate::MemorySource;

    /// A sum per stream that refuses a negative amount.
    struct Sums;

    #[derive(Debug, thiserror::Error)]
    #[error("negative amount")]
    struct Negative;

    impl Projection for Sums {
        type Row = i64;
        type Error = Negative;

        fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Negative> {
            Ok(vec![RowKey::of_stream("sums", event)])
        }

        fn apply(
            &self,
            event: &RecordedEvent,
            _key: &RowKey,
            row: &mut Option<i64>,
        ) -> Result<(), Negative> {
            let amount = event.payload["amount"].as_i64().unwrap_or(0);
            if amount < 0 {
                return Err(Negative);
            }
            *row = Some(row.unwrap_or(0) + amount);
            Ok(())
        }
    }

    /// Before parking, a refused event stopped `run_live` for every stream
    /// after `max_attempts` (and a restart hit it again).
    #[tokio::test]
    async fn a_refused_event_parks_its_stream_and_the_pump_goes_on(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let table = MemoryStore::new();
        for (stream, amount) in [("a", 1), ("b", 2), ("a", -1), ("b", 3), ("a", 5), ("c", 4)] {
            table
                .append(
                    &StreamId::new(stream)?,
                    ExpectedVersion::Any,
                    &[NewEvent::new("Moved", json!({ "amount": amount }))],
                )
                .await?;
        }
        let store = MemoryRowStore::new();
        let mut applier = Applier::new(Sums, store.clone());
        let mut source = MemorySource::new(table);
        let options = Options {
            once: true,
            batch_size: 4,
            max_attempts: 2,
            ..Options::default()
        };
        let (_stop, stop) = Stop::channel();
        let summary = run_live(&mut source, &mut applier, &options, stop, &mut |_| {}).await?;
        // held: the refused event and the stream's next one
        assert_eq!((summary.parked, summary.held, summary.applied), (1, 2, 4));
        let rows: Vec<(String, i64)> = store
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.key, v))
            .collect();
        assert_eq!(
            rows,
            vec![("a".into(), 1), ("b".into(), 5), ("c".into(), 4)]
        );
        assert_eq!(source.position(), 6);
        Ok(())
    }
}
