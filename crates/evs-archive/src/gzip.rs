//! gzip of whole objects through libdeflate (C, built by the `cc` crate).
//!
//! The archiver compresses a whole batch at once and the replayer
//! decompresses whole objects, so neither needs a stream: libdeflate works
//! on whole buffers and, at the same level, takes less CPU than zlib-rs both
//! ways (README, "Speed and memory"; `cargo bench -p evs-archive --bench
//! codec`). Its output is standard gzip (RFC 1952): `zcat`, Athena and
//! DuckDB read it as before.
//!
//! Decompressing needs the output's size first. A gzip member ends with its
//! size mod 2^32 (`ISIZE`), which is the first guess, bounded by what
//! DEFLATE can expand the input to and by the caller's limit; a member that
//! does not fit (a multi-member object, a trailer that lies) is decompressed
//! again into twice the room, up to the limit. Every member of a
//! multi-member object is read (libdeflate's one-call API reads only the
//! first, so this module calls its `_ex` form, which says where a member
//! ends).

use std::io;
use std::ptr::NonNull;

/// The gzip level of archive objects (zlib's and flate2's default).
pub(crate) const LEVEL: i32 = 6;

/// DEFLATE expands at most about 1032:1 (a 258-byte match in under 2 bits).
const MAX_RATIO: usize = 1032;

/// `bytes` as one gzip member at [`LEVEL`].
pub(crate) fn compress(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let level = libdeflater::CompressionLvl::new(LEVEL)
        .map_err(|e| io::Error::other(format!("gzip level {LEVEL}: {e:?}")))?;
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(bytes.len())];
    let n = compressor
        .gzip_compress(bytes, &mut out)
        .map_err(|e| io::Error::other(format!("gzip: {e}")))?;
    out.truncate(n);
    Ok(out)
}

/// Every member of the gzip data `stored`, one after another. More than
/// `limit` bytes is [`io::ErrorKind::InvalidData`], as is anything that is
/// not gzip (empty input, a bad header or CRC, bytes after a member that do
/// not start another).
pub(crate) fn decompress(stored: &[u8], limit: u64) -> io::Result<Vec<u8>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut inflater = Inflater::new()?;
    let mut out: Vec<u8> = Vec::new();
    let mut rest = stored;
    loop {
        let left = limit - out.len();
        let mut room = first_guess(rest).min(left);
        let used = loop {
            out.reserve_exact(room);
            match inflater.gzip_member(rest, &mut out, room)? {
                Some(used) => break used,
                None if room >= left => return Err(too_large(limit)),
                None => room = room.saturating_mul(2).max(4096).min(left),
            }
        };
        rest = &rest[used..];
        if rest.is_empty() {
            return Ok(out);
        }
    }
}

/// The room to try first for the next member of `stored`: the last
/// member's `ISIZE` (exact for the usual one-member object), at most what
/// the input can expand to.
fn first_guess(stored: &[u8]) -> usize {
    let size = stored
        .last_chunk::<4>()
        .map_or(0, |b| u32::from_le_bytes(*b) as usize);
    size.min(stored.len().saturating_mul(MAX_RATIO))
}

fn too_large(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decompresses to more than {limit} bytes, the most an events object may hold"),
    )
}

fn bad_data() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "not gzip data, or corrupt (bad header, data or checksum)",
    )
}

/// A libdeflate decompressor, freed on drop.
struct Inflater(NonNull<libdeflate_sys::libdeflate_decompressor>);

impl Inflater {
    fn new() -> io::Result<Self> {
        // SAFETY: allocates a decompressor; NULL (out of memory) is checked.
        let p = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
        NonNull::new(p)
            .map(Self)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    /// Decompresses the gzip member at the start of `input`, appending it to
    /// `out` in at most `room` bytes (`out` has that much spare capacity).
    /// `Some(bytes of input used)`, or `None` when the member does not fit.
    fn gzip_member(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> io::Result<Option<usize>> {
        let spare = out.spare_capacity_mut();
        let room = room.min(spare.len());
        let (mut used, mut written) = (0_usize, 0_usize);
        // SAFETY: `self.0` is a live decompressor, used by one call at a time
        // (`&mut self`); the input is `input.len()` readable bytes; the output
        // is `room` bytes of `out`'s spare capacity, which libdeflate only
        // writes; `used` and `written` are valid for writes.
        let result = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                spare.as_mut_ptr().cast(),
                room,
                &mut used,
                &mut written,
            )
        };
        match result {
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
                if written <= room && used <= input.len() =>
            {
                // SAFETY: libdeflate wrote `written` (≤ `room` ≤ spare
                // capacity) bytes right after the initialized ones.
                unsafe { out.set_len(out.len() + written) };
                Ok(Some(used))
            }
            libdeflate_sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Ok(None),
            _ => Err(bad_data()),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `libdeflate_alloc_decompressor` and is
        // freed once, here.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{Read, Write};

    fn flate2_gzip(bytes: &[u8], level: u32) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn flate2_gunzip(stored: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(stored).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Text like NDJSON, compressible, of about `n` bytes.
    fn text(seed: u64, n: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let line = format!(
                "{{\"streamId\":\"s-{}\",\"eventId\":{},\"payload\":{{\"x\":{}}}}}\n",
                rng.u32(..50),
                rng.u32(1..1000),
                rng.u64(..)
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.truncate(n);
        out
    }

    #[test]
    fn what_libdeflate_writes_zlib_reads() {
        for n in [0, 1, 100, 70_000, 1_000_000] {
            let bytes = text(n as u64, n);
            let stored = compress(&bytes).unwrap();
            assert_eq!(flate2_gunzip(&stored).unwrap(), bytes, "{n} bytes");
            assert_eq!(decompress(&stored, u64::MAX).unwrap(), bytes, "{n} bytes");
        }
    }

    #[test]
    fn not_gzip_is_an_error() {
        let stored = compress(b"hello\n").unwrap();
        let mut trailing = stored.clone();
        trailing.extend_from_slice(b"\0\0");
        let mut bad_crc = stored.clone();
        let at = bad_crc.len() - 6;
        bad_crc[at] ^= 1;
        for (name, bytes) in [
            ("empty", Vec::new()),
            ("not gzip", b"hello".to_vec()),
            ("truncated", stored[..stored.len() - 1].to_vec()),
            ("bytes after the member", trailing),
            ("a wrong CRC", bad_crc),
        ] {
            let err = decompress(&bytes, u64::MAX).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}: {err}");
            assert!(
                flate2_gunzip(&bytes).is_err(),
                "zlib refuses it too: {name}"
            );
        }
    }

    #[test]
    fn the_limit_holds_whatever_the_trailer_says() {
        let bytes = vec![b'a'; 1 << 20];
        let stored = compress(&bytes).unwrap();
        assert_eq!(decompress(&stored, 1 << 20).unwrap().len(), 1 << 20);
        let err = decompress(&stored, (1 << 20) - 1).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        // a trailer that claims less or more than the member holds: the CRC
        // check refuses it, after the room is grown past the claim
        for isize in [0_u32, 1, u32::MAX] {
            let mut lying = stored.clone();
            let at = lying.len() - 4;
            lying[at..].copy_from_slice(&isize.to_le_bytes());
            let err = decompress(&lying, u64::MAX).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{isize}: {err}");
        }
    }

    proptest! {
        /// Seeded by proptest (its failure output names the case): objects
        /// of one or more members, from either compressor, read back whole.
        #[test]
        fn every_member_is_read(
            seed in any::<u64>(),
            sizes in proptest::collection::vec(0_usize..200_000, 1..4),
            levels in proptest::collection::vec(0_u32..10, 4),
        ) {
            let mut stored = Vec::new();
            let mut expected = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let bytes = text(seed.wrapping_add(i as u64), *n);
                if levels[i] == 0 {
                    stored.extend(compress(&bytes).unwrap());
                } else {
                    stored.extend(flate2_gzip(&bytes, levels[i]));
                }
                expected.extend(bytes);
            }
            prop_assert_eq!(&decompress(&stored, u64::MAX).unwrap(), &expected);
            // exactly at the limit is fine, one byte under is refused
            let limit = expected.len() as u64;
            prop_assert_eq!(decompress(&stored, limit).unwrap().len(), expected.len());
            if limit > 0 {
                prop_assert!(decompress(&stored, limit - 1).is_err());
            }
        }

        /// Corrupt objects: an error or what zlib reads, never a panic.
        #[test]
        fn a_mutated_object_is_what_zlib_reads_or_an_error(
            bytes in evs_testkit::mutated(compress(&text(7, 3000)).unwrap()),
        ) {
            if let Ok(out) = decompress(&bytes, 1 << 20) {
                prop_assert_eq!(Some(out), flate2_gunzip(&bytes).ok());
            }
        }
    }
}
