//! An archive object's stored bytes: the archiver's `decompress`,
//! `decode_events` and `decode_dead_letters`, and the
//! replayer's `decode_object`. The first byte picks the compression (none,
//! gzip, zstd); the rest is the object.
//!
//! Properties: no panic; the archiver and the replayer accept the same
//! uncompressed objects' events; the events of an object re-encode (in each
//! compression) to an object that decodes to the same events.
#![no_main]

use evs_archive::Compression;
use evs_archive::{ArchiveKey, Prefix, Suffix};
use evs_fuzz::check_archived_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stored)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let _ = evs_archive::decompress(stored, compression);
    let _ = evs_archive::decode_dead_letters(stored);

    let suffix = Suffix::new(None, Default::default());
    let key = ArchiveKey::new(&Prefix::root(), 1_795_471_652_123, &suffix, compression)
        .expect("a fixed key builds");
    let replayed = evs_replay::decode_object(&key, stored);

    let Ok(mut events) = evs_archive::decode_events(stored, compression) else {
        return;
    };
    // Every line the archiver reads, the replayer reads too.
    let replayed = replayed.expect("the replayer reads what the archiver reads");
    assert_eq!(replayed.events.len(), events.len());
    for e in &events {
        check_archived_event(e);
    }
    if events.is_empty() {
        return;
    }
    evs_archive::sort_events(&mut events);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let object = evs_archive::encode_events(&events, c).expect("events encode");
        let back = evs_archive::decode_events(&object.bytes, c).expect("an encoded object decodes");
        assert_eq!(back, events, "object round trip ({c:?})");
    }
});
