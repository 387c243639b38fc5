//! `evs read`

use std::io::Write;

use anyhow::Result;
use evs_core::{Direction, EventStore, ReadRequest, StreamId};

use crate::flags::ReadArgs;

pub async fn run(store: &dyn EventStore, args: ReadArgs) -> Result<()> {
    let stream = StreamId::new(&args.stream)?;
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for event in &events {
        serde_json::to_writer(&mut out, &event.to_json())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
