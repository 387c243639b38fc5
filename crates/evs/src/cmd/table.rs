//! `evs table create`

use anyhow::Result;
use evs_dynamodb::{DynamoStore, TableStatus};
use serde_json::json;

pub(super) async fn create(store: &DynamoStore) -> Result<()> {
    let status = store.create_table().await?;
    let arn = store.stream_arn().await?;
    let line = json!({
        "table": store.table(),
        "status": match status {
            TableStatus::Created => "created",
            TableStatus::AlreadyExists => "already exists",
        },
        "streamArn": arn,
    });
    println!("{line}");
    if status == TableStatus::AlreadyExists {
        eprintln!(
            "evs: table {} already exists; nothing changed",
            store.table()
        );
    }
    Ok(())
}
