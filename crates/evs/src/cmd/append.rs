//! `evs append`

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use evs_core::{format_timestamp_ms, EventStore, NewEvent};
use serde_json::{json, Value};

use crate::flags::AppendArgs;

pub(super) async fn run(store: &dyn EventStore, args: AppendArgs) -> Result<()> {
    let stream = args.stream;
    let expected = args.expected_version;
    // Where each event came from, for errors that name an event's position.
    let (events, lines, source) = match (&args.events, &args.event_name) {
        (Some(path), _) => {
            let (source, events) = read_events(path)?;
            let (events, lines): (Vec<_>, Vec<_>) = events.into_iter().unzip();
            (events, lines, Some(source))
        }
        (None, Some(name)) => {
            if args.payload == "-" && args.metadata.as_deref() == Some("-") {
                return Err(
                    super::Usage("--payload and --metadata cannot both read stdin".into()).into(),
                );
            }
            let payload = json_arg("--payload", &args.payload)?;
            let mut event = NewEvent::new(name.clone(), payload);
            if let Some(m) = &args.metadata {
                event = event.with_metadata(json_arg("--metadata", m)?);
            }
            if let Some(id) = args.id {
                event = event.with_id(id);
            }
            (vec![event], Vec::new(), None)
        }
        (None, None) => {
            return Err(
                super::Usage("give --event-name (with --payload) or --events FILE".into()).into(),
            )
        }
    };
    let outcome = store
        .append(&stream, expected, &events)
        .await
        .map_err(|err| {
            let position = match &err {
                evs_core::Error::InvalidEvent { position, .. }
                | evs_core::Error::ItemTooLarge { position, .. } => Some(*position),
                _ => None,
            };
            let line = position.and_then(|p| lines.get(p.checked_sub(1)?));
            match (line, &source) {
                (Some(line), Some(source)) => {
                    anyhow::Error::new(err).context(format!("{source} line {line}"))
                }
                _ => anyhow::Error::new(err),
            }
        })?;
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

/// The JSON of a flag: the text itself (a usage error if it is not JSON),
/// `@FILE` for a file's content, `-` for stdin.
fn json_arg(flag: &str, value: &str) -> Result<Value> {
    let (text, from) = if value == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("{flag} -: cannot read stdin"))?;
        (text, "stdin".to_owned())
    } else if let Some(path) = value.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{flag} @{path}: cannot read {path}"))?;
        (text, path.to_owned())
    } else {
        return serde_json::from_str(value).map_err(|e| {
            super::Usage(format!(
                "{flag} is not valid JSON: {e} (pass JSON text, @FILE or - for stdin)"
            ))
            .into()
        });
    };
    serde_json::from_str(&text).with_context(|| format!("{flag}: {from} is not valid JSON"))
}

/// The events of an NDJSON file (or stdin), each with its line number, and
/// the name of the source.
fn read_events(path: &Path) -> Result<(String, Vec<(NewEvent, usize)>)> {
    let (input, source): (Box<dyn Read>, String) = if path == Path::new("-") {
        (Box::new(std::io::stdin()), "stdin".to_owned())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        (Box::new(file), path.display().to_string())
    };
    let events = parse_events(BufReader::new(input), &source)?;
    Ok((source, events))
}

/// Parses NDJSON lines of `{"eventName", "payload", "metadata"?, "id"?}`,
/// each event with its line number (blank lines are skipped).
pub(super) fn parse_events(input: impl BufRead, source: &str) -> Result<Vec<(NewEvent, usize)>> {
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
        events.push((event, n));
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
    fn ndjson_events() {
        let input = "{\"eventName\":\"A\",\"payload\":{\"n\":12345678901234567890123}}\n\n{\"eventName\":\"B\",\"id\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\"}\n";
        let events = parse_events(input.as_bytes(), "t").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].1, events[1].1), (1, 3));
        assert_eq!(
            events[0].0.payload["n"].to_string(),
            "12345678901234567890123"
        );
        assert_eq!(
            events[1].0.id.to_string(),
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
