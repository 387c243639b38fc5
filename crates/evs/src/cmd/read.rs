//! `evs read`

use std::io::Write;

use anyhow::Result;
use evs_core::{Direction, EventStore, EventStoreExt, ReadRequest};

use crate::flags::ReadArgs;

pub(super) async fn run(store: &dyn EventStore, args: ReadArgs) -> Result<()> {
    let stream = args.stream;
    let request = ReadRequest {
        from: args.from,
        direction: if args.backward {
            Direction::Backward
        } else {
            Direction::Forward
        },
        limit: args.limit,
    };
    let events = store.read(&stream, request).await?;
    if events.is_empty() {
        // Say why nothing is printed: a typo in the id looks the same.
        let why = if store.version(&stream).await? == 0 {
            format!("stream {stream} has no events (no event was ever appended to it)")
        } else {
            format!("stream {stream} has no events in the range asked for")
        };
        eprintln!("evs: note: {why}");
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for event in &events {
        serde_json::to_writer(&mut out, &evs_archive::event_line(event))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
