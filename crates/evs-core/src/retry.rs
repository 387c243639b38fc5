//! The one retry policy for long-running work (followers, pumps): which
//! failures may heal, and how long to wait before the next attempt
//! (`docs/design.md` §7).
//!
//! An AWS call is already retried a few times by the SDK itself; what reaches
//! the caller is an outage longer than that (a refused connection, a streak
//! of 5xx, throttling). A follower or a pump should wait and try again, and
//! give up only on what cannot heal by waiting: bad credentials, a missing
//! table or bucket, a request the service refuses as invalid.

use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Capped exponential backoff with jitter: the `n`th wait in a row is a
/// random duration between half and all of `min(max, initial × 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (before jitter).
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let cap = self.cap(failures);
        let half = cap / 2;
        let jitter = u64::try_from((cap - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(fastrand::u64(0..=jitter))
    }

    /// The upper bound of [`Backoff::delay`] for `failures`.
    pub fn cap(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Failures in a row: how many, and since when. One per retried operation;
/// [`Streak::fail`] on each failure, [`Streak::end`] on a success.
#[derive(Debug, Clone, Default)]
pub struct Streak {
    failures: u32,
    since: Option<Instant>,
}

impl Streak {
    /// Counts one more failure: the failures in a row so far (1 for the
    /// first) and the time since the first of them.
    pub fn fail(&mut self) -> (u32, Duration) {
        self.failures += 1;
        (
            self.failures,
            self.since.get_or_insert_with(Instant::now).elapsed(),
        )
    }

    /// Ends the streak on a success: how many failures it had and how long
    /// it lasted, or `None` when there was no failure.
    pub fn end(&mut self) -> Option<(u32, Duration)> {
        let ended = self
            .since
            .take()
            .map(|since| (self.failures, since.elapsed()));
        self.failures = 0;
        ended
    }

    /// Failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// How the report of a failure that will be retried ends, in the one
/// wording of every retry loop: `retrying in 500 ms` after the first
/// failure in a row, then `failing for 3.5 s (4 attempts), retrying in 1 s`.
pub fn retrying(failures: u32, since: Duration, wait: Duration) -> String {
    if failures <= 1 {
        format!("retrying in {}", crate::human(wait))
    } else {
        format!(
            "failing for {} ({}), retrying in {}",
            crate::human(since),
            crate::plural(u64::from(failures), "attempt"),
            crate::human(wait)
        )
    }
}

/// Service error codes that waiting cannot fix: credentials, permissions,
/// missing resources, requests the service refuses as invalid.
const PERMANENT_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidArgument",
    "InvalidBucketName",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "NoSuchBucket",
    "NotAuthorized",
    "PermanentRedirect",
    "ResourceNotFoundException",
    "SignatureDoesNotMatch",
    "TrimmedDataAccessException",
    "UnrecognizedClientException",
    "ValidationException",
];

/// Service error codes that say "try again later" (some come with HTTP 400).
const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TransactionInProgressException",
];

/// Whether a failure with this service error code and HTTP status may heal
/// by waiting. Unknown 4xx answers are permanent, 5xx and 429 transient.
pub fn is_transient_code(code: Option<&str>, status: Option<u16>) -> bool {
    if let Some(code) = code {
        if TRANSIENT_CODES.contains(&code) {
            return true;
        }
        if PERMANENT_CODES.contains(&code) {
            return false;
        }
    }
    match status {
        Some(429) => true,
        Some(s) if (400..500).contains(&s) => false,
        _ => true,
    }
}

/// Whether an AWS SDK error (of any service: they share these types) may
/// heal by waiting: connection failures, timeouts, broken responses, 5xx
/// and throttling do; credentials, permissions, missing resources and
/// invalid requests do not.
pub fn is_transient_sdk_error<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            is_transient_code(service.err().code(), Some(service.raw().status().as_u16()))
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => {
            // A connector's "user" error (a bad request it could not send)
            // and a missing identity do not heal.
            !failure.is_user() && !crate::describe_chain(err).contains("credentials")
        }
        // The request could not even be built (no credentials, bad input).
        _ => false,
    }
}

impl crate::Error {
    /// Whether waiting may heal this failure: a backend failure (network,
    /// 5xx, throttling after the SDK's retries) or contention does; a
    /// conflict, an invalid request, a missing table or refused credentials
    /// do not.
    pub fn is_transient(&self) -> bool {
        match self {
            crate::Error::Contention { .. } => true,
            crate::Error::Backend { transient, .. } => *transient,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.cap(1), Duration::from_millis(100));
        assert_eq!(b.cap(2), Duration::from_millis(200));
        assert_eq!(b.cap(6), Duration::from_secs(2));
        assert_eq!(b.cap(1000), Duration::from_secs(2));
        for n in 1..40 {
            let d = b.delay(n);
            assert!(d >= b.cap(n) / 2 && d <= b.cap(n), "{n}: {d:?}");
        }
    }

    #[test]
    fn a_retry_is_reported_in_words() {
        let ms = Duration::from_millis;
        assert_eq!(retrying(1, Duration::ZERO, ms(512)), "retrying in 512 ms");
        assert_eq!(
            retrying(4, ms(3500), ms(1000)),
            "failing for 3.5 s (4 attempts), retrying in 1 s"
        );
    }

    #[test]
    fn a_streak_counts_failures_until_a_success() {
        let mut streak = Streak::default();
        assert_eq!(streak.end(), None);
        assert_eq!(streak.fail().0, 1);
        let (n, since) = streak.fail();
        assert_eq!(n, 2);
        assert_eq!(streak.failures(), 2);
        let (ended, lasted) = streak.end().unwrap();
        assert_eq!(ended, 2);
        assert!(lasted >= since);
        assert_eq!((streak.failures(), streak.end()), (0, None));
        assert_eq!(streak.fail().0, 1);
    }

    #[test]
    fn store_errors_say_whether_they_may_heal() {
        let backend = |transient| crate::Error::Backend {
            message: "m".into(),
            transient,
            source: None,
        };
        assert!(backend(true).is_transient());
        assert!(!backend(false).is_transient());
        assert!(!crate::Error::EmptyAppend.is_transient());
        assert!(!crate::Error::TableNotFound { table: "t".into() }.is_transient());
    }

    /// An error of no service in particular.
    #[derive(Debug)]
    struct NoService(aws_smithy_types::error::ErrorMetadata);

    impl std::fmt::Display for NoService {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("no service")
        }
    }

    impl std::error::Error for NoService {}

    impl ProvideErrorMetadata for NoService {
        fn meta(&self) -> &aws_smithy_types::error::ErrorMetadata {
            &self.0
        }
    }

    /// What the SDK returns when a configured timeout ends a call (the
    /// attempt or operation timeout, or the connect timeout) may heal, as a
    /// refused connection does, and says it timed out in words of its own.
    #[test]
    fn timeouts_may_heal_and_say_so() {
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let call: SdkError<NoService, HttpResponse> = SdkError::timeout_error(
            "operation attempt timeout (single attempt) occurred after 500ms",
        );
        assert!(is_transient_sdk_error(&call));
        assert_eq!(
            crate::describe_sdk_error(&call),
            "timed out waiting for the answer"
        );
        let connect: SdkError<NoService, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::timeout("HTTP connect timeout occurred after 1s".into()),
        );
        assert!(is_transient_sdk_error(&connect));
        assert_eq!(
            crate::describe_sdk_error(&connect),
            "timed out connecting to the endpoint"
        );
        let refused: SdkError<NoService, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
        );
        assert!(is_transient_sdk_error(&refused));
    }

    #[test]
    fn codes_and_statuses_are_classified() {
        assert!(is_transient_code(Some("SlowDown"), Some(503)));
        assert!(is_transient_code(Some("ThrottlingException"), Some(400)));
        assert!(is_transient_code(None, Some(500)));
        assert!(is_transient_code(None, Some(429)));
        assert!(is_transient_code(Some("Whatever"), Some(502)));
        assert!(!is_transient_code(Some("AccessDenied"), Some(403)));
        assert!(!is_transient_code(Some("NoSuchBucket"), Some(404)));
        assert!(!is_transient_code(
            Some("ResourceNotFoundException"),
            Some(400)
        ));
        assert!(!is_transient_code(None, Some(403)));
        assert!(!is_transient_code(Some("Unknown"), Some(400)));
    }
}
