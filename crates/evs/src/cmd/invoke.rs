//! `evs invoke`: the archiver's handler on event files, as the mapping would call it.

use anyhow::{Context, Result};
use evs_archiver::handler;
use serde_json::{json, Value};

use crate::flags::InvokeArgs;

pub(super) async fn run(args: InvokeArgs) -> Result<()> {
    let config = evs_cli::location::config(args.archive.clone())?;
    let sink = evs_cli::location::sink(&config).await?;
    let timeout = args.timeout;
    let archive = evs_cli::location::describe(&config);
    for file in &args.files {
        let event = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let summary = handler::handle(
            &event,
            sink.as_ref(),
            &config,
            &evs_core::now_ms,
            Some(timeout),
        )
        .await
        .with_context(|| {
            format!(
                "invocation on {} failed (the mapping would retry it)",
                file.display()
            )
        })?;
        let mut line = json!({ "file": file.display().to_string(), "archive": archive });
        if let (Value::Object(out), Ok(Value::Object(s))) =
            (&mut line, serde_json::to_value(&summary))
        {
            out.extend(s);
        }
        println!("{line}");
    }
    Ok(())
}
