//! `evs invoke`: the archiver's handler on event files, as the mapping would call it.

use std::time::Duration;

use anyhow::{Context, Result};
use evs_archiver::config::{Config, Location};
use evs_archiver::handler;
use evs_archiver::sink::{LocalDir, S3Sink, Sink};
use serde_json::{json, Value};

use crate::flags::InvokeArgs;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub async fn run(args: InvokeArgs) -> Result<()> {
    // The archiver's own configuration rules, with --archive as EVS_ARCHIVE.
    let archive = args.archive.clone();
    let config = Config::from_lookup(|k| match k {
        "EVS_ARCHIVE" => archive.clone(),
        // Running here, not in Lambda, whatever the environment says.
        "AWS_LAMBDA_FUNCTION_NAME" => None,
        _ => std::env::var(k).ok(),
    })?;
    let sink: Box<dyn Sink> = match &config.location {
        Location::Local(dir) => Box::new(LocalDir::new(dir.clone())),
        Location::S3 { bucket } => Box::new(S3Sink::new(crate::aws::s3().await?, bucket.clone())),
    };
    let timeout = Duration::from_secs(args.timeout);
    for file in &args.files {
        let event = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let summary = handler::handle_json(&event, sink.as_ref(), &config, &now_ms, Some(timeout))
            .await
            .with_context(|| {
                format!(
                    "invocation on {} failed (the mapping would retry it)",
                    file.display()
                )
            })?;
        let mut line = json!({ "file": file.display().to_string(), "archive": sink.location() });
        if let (Value::Object(out), Ok(Value::Object(s))) =
            (&mut line, serde_json::to_value(&summary))
        {
            out.extend(s);
        }
        println!("{line}");
    }
    Ok(())
}
