//! The S3 backend. Only this module talks to the S3 SDK.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::Client;

use super::{Object, ObjectStore, StoreError, Stored};

/// An archive in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

/// S3's limit on a key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

impl S3Store {
    /// A store writing to `bucket` with `client` (configure path-style
    /// addressing on the client when a custom endpoint is used).
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// One `PutObject`; `only_if_absent` makes it conditional
    /// (`If-None-Match: *`), so that an existing key is `AlreadyExists`.
    async fn put_object(
        &self,
        key: &str,
        object: &Object,
        only_if_absent: bool,
    ) -> Result<Stored, StoreError> {
        check_key(key)?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_none_match(only_if_absent.then(|| "*".to_owned()))
            .content_type(&object.content_type)
            .body(ByteStream::from(object.bytes.clone()));
        if let Some(enc) = &object.content_encoding {
            request = request.content_encoding(enc);
        }
        for (k, v) in &object.metadata {
            request = request.metadata(k, v);
        }
        let date = ResponseDate::default();
        match request.customize().interceptor(date.clone()).send().await {
            Ok(_) => Ok(Stored {
                server_time_ms: date.millis(),
            }),
            Err(e) if e.code() == Some("PreconditionFailed") => Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            }),
            Err(e) => Err(self.sdk_error("writing", key, e)),
        }
    }

    /// An SDK error while `doing` something at `key`.
    fn sdk_error<E>(&self, doing: &'static str, key: &str, e: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        StoreError::S3 {
            doing,
            key: format!("s3://{}/{key}", self.bucket),
            message: evs_core::describe_sdk_error(&e),
            transient: evs_core::is_transient_sdk_error(&e),
            source: Some(Box::new(evs_core::SdkCause::new(e))),
        }
    }
}

/// Keeps the `Date` header of a request's last response: S3's clock, for
/// the archiver's check of its own (the SDK's output types leave it out).
#[derive(Debug, Clone, Default)]
struct ResponseDate(Arc<Mutex<Option<String>>>);

impl ResponseDate {
    /// The header's time, epoch ms, if it came and reads as an HTTP date.
    fn millis(&self) -> Option<i64> {
        let date = self.0.lock().ok()?.clone()?;
        DateTime::from_str(&date, DateTimeFormat::HttpDate)
            .ok()?
            .to_millis()
            .ok()
    }
}

impl Intercept for ResponseDate {
    fn name(&self) -> &'static str {
        "ResponseDate"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let (Some(date), Ok(mut slot)) =
            (context.response().headers().get("date"), self.0.lock())
        {
            *slot = Some(date.to_owned());
        }
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: format!("an S3 key is 1 to {MAX_KEY_BYTES} bytes"),
        });
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        self.put_object(key, object, true).await
    }

    async fn replace(&self, key: &str, object: &Object) -> Result<(), StoreError> {
        self.put_object(key, object, false).await.map(drop)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("NoSuchKey") => StoreError::NotFound {
                    key: key.to_owned(),
                },
                _ => self.sdk_error("reading", key, e),
            })?;
        let body = out.body.collect().await.map_err(|e| StoreError::S3 {
            doing: "reading",
            key: format!("s3://{}/{key}", self.bucket),
            message: e.to_string(),
            // The connection broke while the body was streamed.
            transient: true,
            source: Some(Box::new(evs_core::SdkCause::new(e))),
        })?;
        Ok(body.into_bytes().to_vec())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        while keys.len() < limit {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_start_after(start_after.map(str::to_owned))
                .set_continuation_token(token.take())
                .max_keys(i32::try_from((limit - keys.len()).min(1000)).unwrap_or(1000))
                .send()
                .await
                .map_err(|e| self.sdk_error("listing", prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }

    fn location(&self) -> String {
        format!("s3://{}/", self.bucket)
    }
}

/// An S3 client from the standard AWS environment; path-style addressing
/// when a custom endpoint is configured.
pub async fn client_from_env() -> Client {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    client_for(&shared)
}

/// An S3 client for `shared`; path-style addressing when it names a custom endpoint.
pub fn client_for(shared: &aws_config::SdkConfig) -> Client {
    let conf = aws_sdk_s3::config::Builder::from(shared)
        .force_path_style(shared.endpoint_url().is_some())
        .build();
    Client::from_conf(conf)
}
