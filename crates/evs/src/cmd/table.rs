//! `evs table create`

use anyhow::Result;
use evs_dynamodb::{DynamoStore, TableStatus};
use serde_json::{json, Value};

pub(super) async fn create(store: &DynamoStore) -> Result<()> {
    let status = store.create_table().await?;
    let arn = store.stream_arn().await?;
    print_created(store.table(), status, Some(("streamArn", json!(arn))));
    Ok(())
}

/// Prints what creating `table` did: a JSON line of `table`, `status` and
/// the field `more`, and on stderr a note when the table was there already.
pub(super) fn print_created(table: &str, status: TableStatus, more: Option<(&str, Value)>) {
    let created = status == TableStatus::Created;
    let mut line = json!({
        "table": table,
        "status": if created { "created" } else { "already exists" },
    });
    if let Some((key, value)) = more {
        line[key] = value;
    }
    println!("{line}");
    if !created {
        eprintln!("evs: table {table} already exists; nothing changed");
    }
}
