//! AWS configuration from the standard environment, with the timeouts of
//! every call: [`Timeouts`] (`--connect-timeout`, `--call-timeout`), set
//! once by a `main` with [`configure`] and given to every client [`load`]
//! makes, so that no call of either binary waits for ever on an endpoint
//! that does not answer.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Result};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// How long an AWS call may take: flags of both binaries (global in `evs`),
/// each with an environment variable. A call that runs out of time fails
/// with "timed out", which may heal: the pump and a follower report it and
/// retry it, as a refused connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Timeouts {
    /// Longest wait for a connection to an AWS endpoint (or the emulator).
    #[arg(
        long,
        global = true,
        env = "EVS_CONNECT_TIMEOUT",
        value_name = "DURATION",
        default_value = "3.1s",
        value_parser = crate::positive_duration
    )]
    pub connect_timeout: Duration,

    /// Longest wait for the answer to one try of an AWS call. The SDK tries
    /// a call up to 3 times (AWS_MAX_ATTEMPTS), all tries together for at
    /// most 3 times this.
    #[arg(
        long,
        global = true,
        env = "EVS_CALL_TIMEOUT",
        value_name = "DURATION",
        default_value = "20s",
        value_parser = crate::positive_duration
    )]
    pub call_timeout: Duration,
}

/// The whole call, the SDK's retries included, gets this many call timeouts
/// (the standard retry mode's attempts).
const CALL_TRIES: u32 = 3;

impl Default for Timeouts {
    /// The flags' defaults: 3.1 s to connect (the SDK's own default), 20 s
    /// a try.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(3100),
            call_timeout: Duration::from_secs(20),
        }
    }
}

impl Timeouts {
    /// The SDK's timeout configuration: connect, attempt and operation.
    pub fn sdk_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.call_timeout)
            .operation_timeout(self.call_timeout.saturating_mul(CALL_TRIES))
            .build()
    }

    /// What an error that timed out adds: the limits, and what to do.
    pub fn hint(&self) -> String {
        format!(
            "limits: --connect-timeout {}, --call-timeout {} a try; check that the endpoint \
             answers, or raise them for a slow one",
            crate::human(self.connect_timeout),
            crate::human(self.call_timeout)
        )
    }
}

static TIMEOUTS: OnceLock<Timeouts> = OnceLock::new();

/// Sets the timeouts of every client made from now on (a `main` calls it
/// once, with its flags, before any client is made; later calls change
/// nothing).
pub fn configure(timeouts: Timeouts) {
    let _ = TIMEOUTS.set(timeouts);
}

/// The timeouts in force: [`configure`]'s, or the defaults.
pub fn timeouts() -> Timeouts {
    TIMEOUTS.get().copied().unwrap_or_default()
}

/// Loads the SDK configuration (region, endpoint, credentials) the standard
/// way, with [`timeouts`], and checks what can be checked before the first
/// call.
pub async fn load() -> Result<SdkConfig> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts().sdk_config())
        .load()
        .await;
    if config.region().is_none() {
        bail!("no AWS region configured: set AWS_REGION (or a region in the AWS profile)");
    }
    Ok(config)
}

/// A DynamoDB client from the environment.
pub async fn dynamodb() -> Result<aws_sdk_dynamodb::Client> {
    Ok(aws_sdk_dynamodb::Client::new(&load().await?))
}

/// An S3 client from the environment (path-style with a custom endpoint).
pub async fn s3() -> Result<aws_sdk_s3::Client> {
    Ok(evs_archive::store::s3::client_for(&load().await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        timeouts: Timeouts,
    }

    #[test]
    fn the_flags_defaults_are_the_defaults() {
        let cli = Cli::try_parse_from(["t"]).unwrap();
        assert_eq!(cli.timeouts, Timeouts::default());
        let config = cli.timeouts.sdk_config();
        assert_eq!(config.connect_timeout(), Some(Duration::from_millis(3100)));
        assert_eq!(
            config.operation_attempt_timeout(),
            Some(Duration::from_secs(20))
        );
        assert_eq!(config.operation_timeout(), Some(Duration::from_secs(60)));
        let cli = Cli::try_parse_from(["t", "--call-timeout", "500ms"]).unwrap();
        assert_eq!(cli.timeouts.call_timeout, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["t", "--connect-timeout", "0s"]).is_err());
    }
}
