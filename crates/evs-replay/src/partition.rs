//! Splitting the streams among workers: `--partition i/N`.
//!
//! A replayer given a partition ([`crate::ReplayOptions::partition`]) drops
//! the other partitions' lines as it decodes an object, by stream id, so
//! their streams never reach its sequencer, its gaps, its back-fills or its
//! checkpoint.

use std::fmt;
use std::str::FromStr;

/// A stream's hash for partitioning: 64-bit FNV-1a over the stream id's
/// UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
/// It is part of the stable interface: any language computes the same
/// value, and a stream keeps its partition across versions of the product.
pub fn stream_hash(stream_id: &str) -> u64 {
    stream_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One of `count` disjoint parts of the streams: stream `s` belongs to part
/// `stream_hash(s) % count`. Every stream is in exactly one part, so `count`
/// workers, one per part, together apply every event once, each stream's in
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    index: u64,
    count: u64,
}

/// Why a partition is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// Not `i/N` with whole numbers.
    #[error("a partition is i/N, e.g. 0/4 (got {0:?})")]
    Syntax(String),
    /// `N` is 0 or `i` is not below `N`.
    #[error("partition {index}/{count}: needs 0 <= i < N")]
    Range {
        /// `i`.
        index: u64,
        /// `N`.
        count: u64,
    },
}

impl Partition {
    /// Every stream: the one part of one.
    pub const ALL: Partition = Partition { index: 0, count: 1 };

    /// Part `index` of `count`.
    pub fn new(index: u64, count: u64) -> Result<Self, PartitionError> {
        if count == 0 || index >= count {
            return Err(PartitionError::Range { index, count });
        }
        Ok(Self { index, count })
    }

    /// Whether `stream_id` belongs to this part.
    pub fn contains(&self, stream_id: &str) -> bool {
        self.count == 1 || stream_hash(stream_id) % self.count == self.index
    }
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || PartitionError::Syntax(text.to_owned());
        let (index, count) = text.split_once('/').ok_or_else(syntax)?;
        let index = index.trim().parse().map_err(|_| syntax())?;
        let count = count.trim().parse().map_err(|_| syntax())?;
        Self::new(index, count)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a_64() {
        // the published FNV-1a 64 test vectors
        assert_eq!(stream_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stream_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stream_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_stream_is_in_exactly_one_part() {
        for count in 1..6 {
            let parts: Vec<Partition> = (0..count)
                .map(|i| Partition::new(i, count).unwrap())
                .collect();
            for n in 0..500 {
                let stream = format!("account-{n}");
                let owners = parts.iter().filter(|p| p.contains(&stream)).count();
                assert_eq!(owners, 1, "{stream} in {count} parts");
            }
        }
    }

    #[test]
    fn partitions_parse_and_refuse_with_a_reason() {
        assert_eq!("1/4".parse(), Partition::new(1, 4));
        assert_eq!("0/1".parse::<Partition>().unwrap(), Partition::ALL);
        assert_eq!(Partition::new(2, 3).unwrap().to_string(), "2/3");
        for bad in ["", "1", "a/2", "1/b", "-1/2"] {
            assert!(
                matches!(bad.parse::<Partition>(), Err(PartitionError::Syntax(_))),
                "{bad}"
            );
        }
        for bad in ["2/2", "0/0", "5/3"] {
            assert!(
                matches!(bad.parse::<Partition>(), Err(PartitionError::Range { .. })),
                "{bad}"
            );
        }
    }
}
