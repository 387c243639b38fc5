//! AWS configuration from the standard environment.

use anyhow::{bail, Result};
use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK configuration (region, endpoint, credentials) the standard
/// way and checks what can be checked before the first call.
pub async fn load() -> Result<SdkConfig> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
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
