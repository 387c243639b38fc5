//! The DynamoDB backend of [`evs_core::EventStore`]: [`DynamoStore`], an
//! event store in one DynamoDB table.
//!
//! The append algorithm (expected versions, conflicts, recognising retried
//! appends, timestamps that never go backwards) is not here: it lives once in
//! `evs-core` (`store/write.rs`), shared with the memory backend. This crate
//! provides what [`evs_core::store::Backend`] asks of a backend, on DynamoDB:
//!
//! * the atomic conditional write: one conditional `PutItem` for a single
//!   event that needs no condition on the previous one (it opens the stream,
//!   or a read has just shown the previous one to be the last), else one
//!   `TransactWriteItems` with a `ConditionCheck` on the previous event
//!   (when needed) and a conditional `Put` for each new one; a failed condition or a colliding transaction is reported as
//!   [`evs_core::store::Written::ConditionFailed`], never as a write;
//! * the strongly consistent read: a paginated `Query`, read again while a
//!   transaction in flight leaves a hole in the `EventId`s.
//!
//! Besides, [`DynamoStore::create_table`] creates the table with the layout
//! of [`evs_core::item`] (and reports a [`TableStatus`]),
//! [`DynamoStore::stream_arn`] finds its DynamoDB stream and
//! [`DynamoStore::last_versions`] scans every stream's last `EventId`.
//! [`to_sdk`] and [`from_sdk`] convert between the SDK's `AttributeValue`
//! and the SDK-independent [`evs_core::AttrValue`].
//!
//! SDK failures become [`evs_core::Error`]: a missing table is
//! [`evs_core::Error::TableNotFound`]; anything else is
//! [`evs_core::Error::Backend`], described by
//! [`evs_core::describe_sdk_error`] and classified as transient or not by
//! [`evs_core::is_transient_sdk_error`].

mod store;

/// The SDK's key types, for [`create_table`].
pub use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, StreamViewType};
pub use store::{
    create_table, from_sdk, sdk_error, to_sdk, DynamoStore, TableStatus, MAX_SCAN_SEGMENTS,
};

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::{ErrorMetadata, SdkError};
    use aws_sdk_dynamodb::operation::query::QueryError;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use evs_core::describe_sdk_error;

    #[test]
    fn sdk_errors_name_the_service_the_operation_and_the_code() {
        let unreadable: SdkError<QueryError, ()> =
            SdkError::service_error(QueryError::unhandled("expected an object at $.Items"), ());
        let text = describe_sdk_error(&unreadable);
        assert_eq!(
            text,
            "DynamoDB Query: no HTTP status, unreadable response: expected an object at $.Items"
        );
        let coded: SdkError<QueryError, ()> = SdkError::service_error(
            QueryError::generic(
                ErrorMetadata::builder()
                    .code("ValidationException")
                    .message("Empty attribute name")
                    .build(),
            ),
            (),
        );
        assert_eq!(
            describe_sdk_error(&coded),
            "DynamoDB Query: ValidationException: Empty attribute name"
        );
        let code_only: SdkError<TransactWriteItemsError, ()> = SdkError::service_error(
            TransactWriteItemsError::generic(ErrorMetadata::builder().code("Teapot").build()),
            (),
        );
        assert_eq!(
            describe_sdk_error(&code_only),
            "DynamoDB TransactWriteItems: Teapot"
        );
    }
}
