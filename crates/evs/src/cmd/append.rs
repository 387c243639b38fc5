//! `evs append`

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use evs_core::{format_timestamp_ms, EventStore, ExpectedVersion, NewEvent, StreamId};
use serde_json::{json, Value};

use crate::flags::AppendArgs;

pub async fn run(store: &dyn EventStore, args: AppendArgs) -> Result<()> {
    let stream = StreamId::new(&args.stream)?;
    let expected = parse_expected(&args.expected_version)?;
    let events = match (&args.events, &args.event_name) {
        (Some(path), _) => read_events(path)?,
        (None, Some(name)) => {
            let payload = parse_json(&args.payload).context("--payload is not valid JSON")?;
            let mut event = NewEvent::new(name.clone(), payload);
            if let Some(m) = &args.metadata {
                event = event.with_metadata(parse_json(m).context("--metadata is not valid JSON")?);
            }
            vec![event]
        }
        (None, None) => bail!("give --event-name (with --payload) or --events FILE"),
    };
    let outcome = store.append(&stream, expected, &events).await?;
    let line = json!({
        "streamId": stream.as_str(),
        "firstEventId": outcome.first,
        "version": outcome.version,
        "events": events.len(),
        "timestamp": format_timestamp_ms(outcome.timestamp_ms),
        "alreadyAppended": outcome.already_appended,
    });
    println!("{line}");
    Ok(())
}

/// `N`, `none` or `any`.
pub fn parse_expected(text: &str) -> Result<ExpectedVersion> {
    match text.trim().to_ascii_lowercase().as_str() {
        "any" => Ok(ExpectedVersion::Any),
        "none" | "no-stream" => Ok(ExpectedVersion::NoStream),
        n => n
            .parse::<u64>()
            .map(ExpectedVersion::Exact)
            .with_context(|| {
                format!("--expected-version must be a number, `none` or `any`, not {text:?}")
            }),
    }
}

fn parse_json(text: &str) -> Result<Value> {
    Ok(serde_json::from_str(text)?)
}

fn read_events(path: &Path) -> Result<Vec<NewEvent>> {
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )
    };
    let source = if path == Path::new("-") {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    parse_events(BufReader::new(input), &source)
}

/// Parses NDJSON lines of `{"eventName", "payload", "metadata"?, "id"?}`.
pub fn parse_events(input: impl BufRead, source: &str) -> Result<Vec<NewEvent>> {
    let mut events = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let n = index + 1;
        let line = line.with_context(|| format!("cannot read {source}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{source} line {n}");
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("{} is not valid JSON", at()))?;
        let Value::Object(mut obj) = value else {
            bail!("{} must be a JSON object with eventName and payload", at());
        };
        let name = match obj.remove("eventName") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => bail!("{} has no eventName (a non-empty string)", at()),
        };
        let payload = obj.remove("payload").unwrap_or_else(|| json!({}));
        let mut event = NewEvent::new(name, payload);
        if let Some(m) = obj.remove("metadata") {
            event = event.with_metadata(m);
        }
        if let Some(id) = obj.remove("id") {
            let id = id
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .with_context(|| format!("{}: id must be a UUID string", at()))?;
            event = event.with_id(id);
        }
        if let Some(key) = obj.keys().next() {
            bail!(
                "{}: unknown field {key:?} (expected eventName, payload, metadata, id)",
                at()
            );
        }
        events.push(event);
    }
    if events.is_empty() {
        bail!("{source} holds no events");
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions() {
        assert_eq!(parse_expected("any").unwrap(), ExpectedVersion::Any);
        assert_eq!(parse_expected("none").unwrap(), ExpectedVersion::NoStream);
        assert_eq!(parse_expected("7").unwrap(), ExpectedVersion::Exact(7));
        assert!(parse_expected("-1").is_err());
        assert!(parse_expected("latest").is_err());
    }

    #[test]
    fn ndjson_events() {
        let input = "{\"eventName\":\"A\",\"payload\":{\"n\":12345678901234567890123}}\n\n{\"eventName\":\"B\",\"id\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\"}\n";
        let events = parse_events(input.as_bytes(), "t").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].payload["n"].to_string(),
            "12345678901234567890123"
        );
        assert_eq!(
            events[1].id.to_string(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        for (bad, says) in [
            (
                "{\"eventName\":\"A\"}\nnot json\n",
                "t line 2 is not valid JSON",
            ),
            ("[1]\n", "t line 1 must be a JSON object"),
            ("{\"payload\":{}}\n", "t line 1 has no eventName"),
            (
                "{\"eventName\":\"A\",\"extra\":1}\n",
                "unknown field \"extra\"",
            ),
            ("{\"eventName\":\"A\",\"id\":\"x\"}\n", "id must be a UUID"),
            ("\n", "t holds no events"),
        ] {
            let err = format!("{:#}", parse_events(bad.as_bytes(), "t").unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }
}
