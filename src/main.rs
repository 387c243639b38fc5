//! The archiver Lambda's entry point: read the configuration once, build the
//! sink once, and hand every invocation to [`evs_archiver::handler::handle`].

use std::time::Duration;

use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use evs_archiver::config::Config;
use evs_archiver::handler;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

/// mimalloc: the handler allocates and frees many small values per record
/// (the parsed attributes and JSON values, the events); with it the pure path
/// of a 10,000-record batch took 14% less time than with glibc's allocator
/// (`benches/archive.rs` uses it too, so it measures what runs here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Time kept back from the invocation deadline for logging and the response.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// Bound on an invocation's writes when it carries no usable deadline (local
/// emulators); in Lambda the deadline is always there.
const FALLBACK_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Logs as Lambda's advanced logging controls ask, as lambda_runtime's
/// default subscriber does: JSON lines when `AWS_LAMBDA_LOG_FORMAT` is
/// `JSON`, at `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`'s level, else INFO),
/// no target or time (Lambda stamps each line). `RUST_LOG` may add
/// per-target levels (`aws_smithy_runtime=debug`); unlike env-filter's,
/// span and field filters are not understood, and that filter's regex
/// engine stays out of the binary.
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let mut filter: Targets = var("RUST_LOG")
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_default();
    let level = var("AWS_LAMBDA_LOG_LEVEL").and_then(|level| level.parse::<LevelFilter>().ok());
    filter = match (level, filter.default_level()) {
        (Some(level), _) => filter.with_default(level),
        (None, Some(_)) => filter,
        (None, None) => filter.with_default(LevelFilter::INFO),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time();
    let registry = tracing_subscriber::registry().with(filter);
    if var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json")) {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = Config::from_lookup(|k| std::env::var(k).ok())?;
    let sink = evs_archiver::config::store_for(&config).await;
    tracing::info!(archive = %sink.location(), prefix = %config.prefix, "archiver ready");
    let (config, sink) = (&config, sink.as_ref());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| async move {
        let deadline_ms = i64::try_from(event.context.deadline).unwrap_or(i64::MAX);
        let left = Duration::from_millis(u64::try_from(deadline_ms.saturating_sub(evs_core::now_ms())).unwrap_or(0));
        let timeout = if left > DEADLINE_MARGIN {
            left - DEADLINE_MARGIN
        } else {
            tracing::warn!(deadline_ms, "the invocation has no usable deadline; bounding writes by {FALLBACK_WRITE_TIMEOUT:?}");
            FALLBACK_WRITE_TIMEOUT
        };
        let summary = match handler::handle(event.payload.get(), sink, config, &evs_core::now_ms, Some(timeout)).await {
            Ok(summary) => summary,
            Err(err) => {
                // The runtime reports the error to Lambda but does not log it.
                tracing::error!(error = %err, "batch not archived; the invocation fails and the event source mapping retries it");
                return Err(err.into());
            }
        };
        tracing::info!(
            records_in = summary.records_in,
            archived = summary.archived,
            dead_lettered = summary.dead_lettered,
            bytes = summary.bytes,
            key = summary.key.as_deref().unwrap_or("-"),
            dead_letter_key = summary.dead_letter_key.as_deref().unwrap_or("-"),
            oldest_record_age_ms = summary.oldest_record_age_ms.unwrap_or(0),
            batch_item_failures = summary.batch_item_failures.len(),
            "batch archived"
        );
        println!("{}", evs_archiver::metrics::emf_line(&summary, evs_core::now_ms()));
        let mut response = DynamoDbEventResponse::default();
        for id in summary.batch_item_failures {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(id);
            response.batch_item_failures.push(failure);
        }
        Ok::<_, Error>(response)
    }))
    .await
}
