//! An object key as listed from the bucket: `ArchiveKey::parse`,
//! `DeadLetterKey::parse`, `Prefix::new`.
//!
//! Properties: no panic; a key that parses is exactly the key its parts
//! build, and keeps its seal time's order.
#![no_main]

use evs_archive::{ArchiveKey, DeadLetterKey, Prefix};
use evs_fuzz::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    if let Ok(prefix) = Prefix::new(text) {
        assert_eq!(prefix.as_str(), text);
    }
    if let Ok(key) = ArchiveKey::parse(text) {
        assert_eq!(key.as_str(), text);
        let prefix = Prefix::new(key.prefix()).expect("a parsed key's prefix is valid");
        let rebuilt = ArchiveKey::new(&prefix, key.sealed_at_ms(), key.suffix(), key.compression())
            .expect("a parsed key's parts build a key");
        assert_eq!(rebuilt.as_str(), text, "an archive key is the key its parts build");
        assert_eq!(rebuilt, key);
    }
    if let Ok(key) = DeadLetterKey::parse(text) {
        assert_eq!(key.as_str(), text);
        let prefix = Prefix::new(key.prefix()).expect("a parsed key's prefix is valid");
        let rebuilt = DeadLetterKey::new(&prefix, key.sealed_at_ms(), key.suffix())
            .expect("a parsed key's parts build a key");
        assert_eq!(rebuilt.as_str(), text, "a dead-letter key is the key its parts build");
    }
});
