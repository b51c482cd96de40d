//! SPDY/3 header blocks (draft section 2.6.10): a name/value block, zlib-compressed with
//! the SPDY/3 dictionary.
//!
//! ```text
//! | number of pairs (32) | length of name (32) | name | length of value (32) | value | ...
//! ```
//!
//! Names are lowercase and unique within a block; several values of one name travel as
//! one value joined by NUL bytes. Each direction of a connection has one zlib stream: every
//! block is a continuation of the previous one (SYNC_FLUSH after each), so a
//! [`Compressor`] and a [`Decompressor`] live as long as the connection and see every
//! block in wire order. Decompression stops at a size limit: a block that inflates past it
//! (a zlib bomb) is an error, not an allocation.

use super::dictionary::dictionary;
use bytes::{Buf, BufMut, Bytes};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// A header block that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header block: {what} is cut short")]
    Truncated { what: &'static str },
    #[error("header block: header {name:?} appears twice")]
    Duplicate { name: String },
    #[error("header block: header name {name:?} is not lowercase")]
    Uppercase { name: String },
    #[error("header block: a header name is empty")]
    EmptyName,
    #[error("header block: header {name:?} is not UTF-8")]
    NotUtf8 { name: String },
    #[error("header block: {bytes} trailing bytes after the last header")]
    Trailing { bytes: usize },
    #[error("header block inflates to more than {max} bytes")]
    TooLarge { max: usize },
    #[error("header block: zlib stream names dictionary {adler:#010x}, not SPDY/3's")]
    Dictionary { adler: u32 },
    #[error("header block: zlib stream is corrupt")]
    Inflate(#[source] flate2::DecompressError),
    #[error("header block: zlib stream does not progress")]
    Stalled,
    #[error("header block: compressing")]
    Deflate(#[source] flate2::CompressError),
}

/// The headers of a stream, in order. Names are stored lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a value (names are lowercased: SPDY/3 requires it).
    pub fn add(&mut self, name: &str, value: &str) {
        self.pairs
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// `self` with one more value, for building headers in one expression.
    pub fn with(mut self, name: &str, value: &str) -> Headers {
        self.add(name, value);
        self
    }

    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The uncompressed name/value block: one entry per name, its values joined by NUL.
    pub fn to_block(&self) -> Vec<u8> {
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in &self.pairs {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let mut out = Vec::new();
        out.put_u32(names.len() as u32);
        for name in names {
            let values: Vec<&str> = self
                .pairs
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let value = values.join("\0");
            out.put_u32(name.len() as u32);
            out.put_slice(name.as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed name/value block.
    pub fn from_block(mut b: &[u8]) -> Result<Headers, HeaderError> {
        fn field<'a>(b: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], HeaderError> {
            if b.remaining() < 4 {
                return Err(HeaderError::Truncated { what });
            }
            let len = b.get_u32() as usize;
            if b.remaining() < len {
                return Err(HeaderError::Truncated { what });
            }
            let (v, rest) = b.split_at(len);
            *b = rest;
            Ok(v)
        }
        if b.remaining() < 4 {
            return Err(HeaderError::Truncated {
                what: "the number of headers",
            });
        }
        let n = b.get_u32() as usize;
        // Each pair takes at least 8 bytes: never reserve more than the block can hold.
        let mut h = Headers {
            pairs: Vec::with_capacity(n.min(b.len() / 8)),
        };
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..n {
            let name = field(&mut b, "a header name")?;
            let name = std::str::from_utf8(name)
                .map_err(|_| HeaderError::NotUtf8 {
                    name: String::from_utf8_lossy(name).into_owned(),
                })?
                .to_string();
            if name.is_empty() {
                return Err(HeaderError::EmptyName);
            }
            if name.bytes().any(|c| c.is_ascii_uppercase()) {
                return Err(HeaderError::Uppercase { name });
            }
            if seen.contains(&name) {
                return Err(HeaderError::Duplicate { name });
            }
            let value = field(&mut b, "a header value")?;
            let value = std::str::from_utf8(value)
                .map_err(|_| HeaderError::NotUtf8 { name: name.clone() })?;
            for v in value.split('\0') {
                h.pairs.push((name.clone(), v.to_string()));
            }
            seen.push(name);
        }
        if !b.is_empty() {
            return Err(HeaderError::Trailing { bytes: b.len() });
        }
        Ok(h)
    }
}

/// One direction's compression context.
pub struct Compressor {
    z: Compress,
}

impl Compressor {
    pub fn new() -> Result<Compressor, HeaderError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary())
            .map_err(HeaderError::Deflate)?;
        Ok(Compressor { z })
    }

    /// The compressed block for `headers`, flushed (SYNC_FLUSH) so that the peer can
    /// inflate it alone.
    pub fn compress(&mut self, headers: &Headers) -> Result<Bytes, HeaderError> {
        let raw = headers.to_block();
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            self.z
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .map_err(HeaderError::Deflate)?;
            // All input taken and room left over: the flush is complete.
            if (self.z.total_in() - start) as usize == raw.len() && out.len() < out.capacity() {
                return Ok(out.into());
            }
            out.reserve(256);
        }
    }
}

/// The other direction's decompression context, with a size limit per block.
pub struct Decompressor {
    z: Decompress,
    max: usize,
}

impl Decompressor {
    /// A context refusing blocks that inflate to more than `max` bytes.
    pub fn new(max: usize) -> Decompressor {
        Decompressor {
            z: Decompress::new(true),
            max,
        }
    }

    /// Inflates and parses one block. After an error the context is unusable: the session
    /// ends the connection.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let mut out: Vec<u8> = Vec::new();
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                // Grow in steps, never past one byte over the limit.
                let room = (self.max + 1 - out.len()).min(out.len().max(1024));
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let result = self
                .z
                .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.z.total_in() - in_before) as usize;
            match result {
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(adler) => {
                        if adler != super::dictionary::ADLER {
                            return Err(HeaderError::Dictionary { adler });
                        }
                        self.z
                            .set_dictionary(dictionary())
                            .map_err(HeaderError::Inflate)?;
                        continue;
                    }
                    None => return Err(HeaderError::Inflate(e)),
                },
            }
            if out.len() > self.max {
                return Err(HeaderError::TooLarge { max: self.max });
            }
            if pos == block.len() && out.len() < out.capacity() {
                break;
            }
            if pos < block.len()
                && self.z.total_in() == in_before
                && out.len() == out_before
                && out.len() < out.capacity()
            {
                return Err(HeaderError::Stalled);
            }
        }
        Headers::from_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_has_the_drafts_layout() {
        let h = Headers::new()
            .with("streamType", "data")
            .with("port", "80")
            .with("accept", "a")
            .with("accept", "b");
        let mut want = vec![0, 0, 0, 3];
        for (n, v) in [("streamtype", "data"), ("port", "80"), ("accept", "a\0b")] {
            want.extend_from_slice(&(n.len() as u32).to_be_bytes());
            want.extend_from_slice(n.as_bytes());
            want.extend_from_slice(&(v.len() as u32).to_be_bytes());
            want.extend_from_slice(v.as_bytes());
        }
        assert_eq!(h.to_block(), want);
        let back = Headers::from_block(&want).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.get("StreamType"), Some("data"));
    }

    #[test]
    fn bad_blocks_name_what_is_wrong() {
        let block = |pairs: &[(&[u8], &[u8])], extra: &[u8]| {
            let mut b = (pairs.len() as u32).to_be_bytes().to_vec();
            for (n, v) in pairs {
                b.extend_from_slice(&(n.len() as u32).to_be_bytes());
                b.extend_from_slice(n);
                b.extend_from_slice(&(v.len() as u32).to_be_bytes());
                b.extend_from_slice(v);
            }
            b.extend_from_slice(extra);
            b
        };
        let err = |b: Vec<u8>| Headers::from_block(&b).unwrap_err().to_string();
        assert!(err(block(&[(b"Port", b"1")], b"")).contains("\"Port\" is not lowercase"));
        assert!(err(block(&[(b"a", b"1"), (b"a", b"2")], b"")).contains("\"a\" appears twice"));
        assert!(err(block(&[(b"", b"1")], b"")).contains("empty"));
        assert!(err(block(&[(b"a", b"\xff")], b"")).contains("not UTF-8"));
        assert!(err(block(&[(b"a", b"1")], b"xy")).contains("2 trailing bytes"));
        // A count of 4 billion pairs in a 12-byte block: cut short, nothing reserved.
        assert!(err(vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 9, b'a', 0, 0, 0]).contains("cut short"));
        assert!(err(vec![0, 0, 0, 1, 0, 0, 0x10, 0, b'a']).contains("name is cut short"));
    }

    #[test]
    fn blocks_share_one_zlib_stream_per_direction() {
        let mut c = Compressor::new().unwrap();
        let mut d = Decompressor::new(64 * 1024);
        let blocks: Vec<Headers> = (0..5)
            .map(|i| {
                Headers::new()
                    .with("streamtype", if i % 2 == 0 { "data" } else { "error" })
                    .with("port", "8080")
                    .with("requestid", &i.to_string())
            })
            .collect();
        let mut sizes = Vec::new();
        for h in &blocks {
            let z = c.compress(h).unwrap();
            sizes.push(z.len());
            assert_eq!(&d.decompress(&z).unwrap(), h);
        }
        // The later blocks refer back to the earlier ones: the context is shared.
        assert!(sizes[4] < sizes[0], "sizes {sizes:?}");
        // A fresh decompressor cannot read a later block alone.
        let z = c.compress(&blocks[0]).unwrap();
        assert!(Decompressor::new(64 * 1024).decompress(&z).is_err());
    }

    #[test]
    fn a_zlib_bomb_stops_at_the_limit() {
        // 64 MiB of one header value compresses to a few tens of KiB.
        let mut c = Compressor::new().unwrap();
        let big = "a".repeat(64 * 1024 * 1024);
        let z = c.compress(&Headers::new().with("x", &big)).unwrap();
        assert!(z.len() < 128 * 1024, "{} bytes", z.len());
        let mut d = Decompressor::new(1024 * 1024);
        let err = d.decompress(&z).unwrap_err();
        assert!(
            matches!(err, HeaderError::TooLarge { max } if max == 1024 * 1024),
            "{err}"
        );
    }

    #[test]
    fn a_stream_with_another_dictionary_is_refused() {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut out = Vec::with_capacity(256);
        z.compress_vec(
            &Headers::new().with("a", "b").to_block(),
            &mut out,
            FlushCompress::Sync,
        )
        .unwrap();
        let err = Decompressor::new(1024).decompress(&out).unwrap_err();
        assert!(matches!(err, HeaderError::Dictionary { .. }), "{err}");
    }
}
