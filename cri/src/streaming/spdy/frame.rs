//! SPDY/3 frames on the wire (SPDY/3 draft, section 2.2 and 2.6), and a streaming decoder.
//!
//! Every frame starts with 8 bytes. A control frame (first bit set):
//!
//! ```text
//! |1| version (15) | type (16) |  flags (8) | length (24) |  payload (length bytes)
//! ```
//!
//! A data frame (first bit clear):
//!
//! ```text
//! |0| stream id (31)           |  flags (8) | length (24) |  data (length bytes)
//! ```
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) stay compressed here: decompressing them
//! needs the connection's zlib context, which is the session's (see [`super::headers`]).
//! The decoder never trusts a length before the bytes are there: it refuses a frame longer
//! than its limit as soon as the 8-byte header arrives, and buffers only what was received.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version this codec speaks; control frames of any other are refused.
pub const VERSION: u16 = 3;
/// The size of every frame header.
pub const HEADER_LEN: usize = 8;
/// The largest length the 24-bit field can carry.
pub const MAX_LENGTH: usize = (1 << 24) - 1;

/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's half is closed.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM: the receiver must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// Control frame types (SPDY/3 draft, section 2.6).
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (section 2.4.2).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes (section 2.6.6).
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids this crate acts on (section 2.6.4).
pub mod settings {
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

/// A frame that cannot be decoded or encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("{frame} frame of {len} bytes is over the limit of {max}")]
    TooLong {
        frame: &'static str,
        len: usize,
        max: usize,
    },
    #[error("control frame of SPDY version {version}: only version 3 is spoken")]
    Version { version: u16 },
    #[error("{frame} frame: a length of {len} bytes does not fit its layout")]
    Length { frame: &'static str, len: usize },
    #[error("{frame} frame: stream id 0 is not a stream")]
    ZeroStream { frame: &'static str },
    #[error("PING frame: id 0 is reserved")]
    ZeroPing,
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) or FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// 24-bit id.
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Header blocks are still zlib-compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        slot: u8,
        flags: u8,
        block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    WindowUpdate {
        /// 0 for the connection's window (SPDY/3.1).
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

const STREAM_MASK: u32 = 0x7fff_ffff;

impl Frame {
    /// A SYN_STREAM with no associated stream, the highest priority and no credential slot
    /// (all Kubernetes' streams are such).
    pub fn syn_stream(stream_id: u32, flags: u8, block: Bytes) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags,
            block,
        }
    }

    /// The frame's name as the draft writes it, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::SynStream { .. } => "SYN_STREAM",
            Frame::SynReply { .. } => "SYN_REPLY",
            Frame::RstStream { .. } => "RST_STREAM",
            Frame::Settings { .. } => "SETTINGS",
            Frame::Ping { .. } => "PING",
            Frame::GoAway { .. } => "GOAWAY",
            Frame::Headers { .. } => "HEADERS",
            Frame::WindowUpdate { .. } => "WINDOW_UPDATE",
            Frame::Data { .. } => "DATA",
        }
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, len: usize| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32(u32::from(flags) << 24 | len as u32);
        };
        let len = self.payload_len();
        if len > MAX_LENGTH {
            return Err(FrameError::TooLong {
                frame: self.name(),
                len,
                max: MAX_LENGTH,
            });
        }
        out.reserve(HEADER_LEN + len);
        match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                block,
            } => {
                control(out, kind::SYN_STREAM, *flags, len);
                out.put_u32(stream_id & STREAM_MASK);
                out.put_u32(associated_to & STREAM_MASK);
                out.put_u8((priority & 0x7) << 5);
                out.put_u8(*slot);
                out.put_slice(block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                block,
            } => {
                control(out, kind::SYN_REPLY, *flags, len);
                out.put_u32(stream_id & STREAM_MASK);
                out.put_slice(block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, kind::RST_STREAM, 0, len);
                out.put_u32(stream_id & STREAM_MASK);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control(out, kind::SETTINGS, *flags, len);
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32(u32::from(e.flags) << 24 | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control(out, kind::PING, 0, len);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, kind::GOAWAY, 0, len);
                out.put_u32(last_good_stream_id & STREAM_MASK);
                out.put_u32(*status);
            }
            Frame::Headers {
                stream_id,
                flags,
                block,
            } => {
                control(out, kind::HEADERS, *flags, len);
                out.put_u32(stream_id & STREAM_MASK);
                out.put_slice(block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, kind::WINDOW_UPDATE, 0, len);
                out.put_u32(stream_id & STREAM_MASK);
                out.put_u32(delta & STREAM_MASK);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & STREAM_MASK);
                out.put_u32(u32::from(*flags) << 24 | len as u32);
                out.put_slice(data);
            }
        }
        Ok(())
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::SynStream { block, .. } => 10 + block.len(),
            Frame::SynReply { block, .. } | Frame::Headers { block, .. } => 4 + block.len(),
            Frame::Settings { entries, .. } => 4 + 8 * entries.len(),
            Frame::Ping { .. } => 4,
            Frame::RstStream { .. } | Frame::GoAway { .. } | Frame::WindowUpdate { .. } => 8,
            Frame::Data { data, .. } => data.len(),
        }
    }
}

/// A streaming decoder: feed it bytes as they arrive, take whole frames out.
///
/// Control frames of a type this version does not define (NOOP, CREDENTIAL, anything
/// newer) are skipped as the draft says, without being buffered.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// Bytes of an unknown control frame still to drop.
    skip: usize,
    max_len: usize,
}

impl Decoder {
    /// A decoder refusing frames whose payload is longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            skip: 0,
            max_len,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The receive buffer, to read into directly (`AsyncReadExt::read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next whole frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let first = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let flags = self.buf[4];
            let len = usize::from(self.buf[5]) << 16
                | usize::from(self.buf[6]) << 8
                | usize::from(self.buf[7]);
            let control = first & 0x8000_0000 != 0;
            let kind = (first & 0xffff) as u16;
            if control {
                let version = ((first >> 16) & 0x7fff) as u16;
                if version != VERSION {
                    return Err(FrameError::Version { version });
                }
                if !(kind::SYN_STREAM..=kind::WINDOW_UPDATE).contains(&kind) || kind == 5 {
                    self.buf.advance(HEADER_LEN);
                    self.skip = len;
                    continue;
                }
            }
            let name = if control { control_name(kind) } else { "DATA" };
            if len > self.max_len {
                return Err(FrameError::TooLong {
                    frame: name,
                    len,
                    max: self.max_len,
                });
            }
            if self.buf.len() < HEADER_LEN + len {
                return Ok(None);
            }
            let mut frame = self.buf.split_to(HEADER_LEN + len).freeze();
            frame.advance(HEADER_LEN);
            let parsed = if control {
                parse_control(kind, name, flags, frame)?
            } else {
                let stream_id = first & STREAM_MASK;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStream { frame: name });
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data: frame,
                }
            };
            return Ok(Some(parsed));
        }
    }
}

fn control_name(kind: u16) -> &'static str {
    match kind {
        kind::SYN_STREAM => "SYN_STREAM",
        kind::SYN_REPLY => "SYN_REPLY",
        kind::RST_STREAM => "RST_STREAM",
        kind::SETTINGS => "SETTINGS",
        kind::PING => "PING",
        kind::GOAWAY => "GOAWAY",
        kind::HEADERS => "HEADERS",
        _ => "WINDOW_UPDATE",
    }
}

/// Parses a known control frame's payload `p` (its length already checked against the
/// decoder's limit).
fn parse_control(
    kind: u16,
    frame: &'static str,
    flags: u8,
    mut p: Bytes,
) -> Result<Frame, FrameError> {
    let len = p.len();
    let bad_len = || FrameError::Length { frame, len };
    let stream = |id: u32| {
        let id = id & STREAM_MASK;
        if id == 0 {
            Err(FrameError::ZeroStream { frame })
        } else {
            Ok(id)
        }
    };
    Ok(match kind {
        kind::SYN_STREAM => {
            if len < 10 {
                return Err(bad_len());
            }
            let stream_id = stream(p.get_u32())?;
            let associated_to = p.get_u32() & STREAM_MASK;
            let priority = p.get_u8() >> 5;
            let slot = p.get_u8();
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                block: p,
            }
        }
        kind::SYN_REPLY | kind::HEADERS => {
            if len < 4 {
                return Err(bad_len());
            }
            let stream_id = stream(p.get_u32())?;
            if kind == kind::SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    block: p,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    block: p,
                }
            }
        }
        kind::RST_STREAM => {
            if len != 8 {
                return Err(bad_len());
            }
            Frame::RstStream {
                stream_id: stream(p.get_u32())?,
                status: p.get_u32(),
            }
        }
        kind::SETTINGS => {
            if len < 4 {
                return Err(bad_len());
            }
            let n = p.get_u32() as usize;
            if n.checked_mul(8) != Some(len - 4) {
                return Err(bad_len());
            }
            let entries = (0..n)
                .map(|_| {
                    let word = p.get_u32();
                    Setting {
                        flags: (word >> 24) as u8,
                        id: word & 0x00ff_ffff,
                        value: p.get_u32(),
                    }
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        kind::PING => {
            if len != 4 {
                return Err(bad_len());
            }
            let id = p.get_u32();
            if id == 0 {
                return Err(FrameError::ZeroPing);
            }
            Frame::Ping { id }
        }
        kind::GOAWAY => {
            if len != 8 {
                return Err(bad_len());
            }
            Frame::GoAway {
                last_good_stream_id: p.get_u32() & STREAM_MASK,
                status: p.get_u32(),
            }
        }
        _ => {
            if len != 8 {
                return Err(bad_len());
            }
            Frame::WindowUpdate {
                stream_id: p.get_u32() & STREAM_MASK,
                delta: p.get_u32() & STREAM_MASK,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::new(1 << 20);
        d.feed(bytes);
        let mut frames = Vec::new();
        while let Some(f) = d.next_frame()? {
            frames.push(f);
        }
        Ok(frames)
    }

    /// Decodes `bytes` as exactly `frame`, and encodes `frame` back to exactly `bytes`.
    fn both_ways(bytes: &[u8], frame: Frame) {
        assert_eq!(decode_all(bytes).unwrap(), vec![frame.clone()]);
        let mut out = BytesMut::new();
        frame.encode(&mut out).unwrap();
        assert_eq!(&out[..], bytes, "{}", frame.name());
    }

    #[test]
    fn syn_stream() {
        both_ways(
            &[
                0x80, 0x03, 0x00, 0x01, // control, version 3, type 1
                0x03, 0x00, 0x00, 0x0d, // FIN|UNIDIRECTIONAL, length 13
                0x00, 0x00, 0x00, 0x05, // stream 5
                0x00, 0x00, 0x00, 0x03, // associated to 3
                0x60, 0x07, // priority 3, slot 7
                b'a', b'b', b'c', // header block
            ],
            Frame::SynStream {
                stream_id: 5,
                associated_to: 3,
                priority: 3,
                slot: 7,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                block: Bytes::from_static(b"abc"),
            },
        );
    }

    #[test]
    fn syn_reply_and_headers() {
        both_ways(
            &[0x80, 3, 0, 2, 0x01, 0, 0, 6, 0, 0, 0, 2, b'h', b'b'],
            Frame::SynReply {
                stream_id: 2,
                flags: FLAG_FIN,
                block: Bytes::from_static(b"hb"),
            },
        );
        both_ways(
            &[0x80, 3, 0, 8, 0, 0, 0, 5, 0x7f, 0xff, 0xff, 0xff, b'x'],
            Frame::Headers {
                stream_id: 0x7fff_ffff,
                flags: 0,
                block: Bytes::from_static(b"x"),
            },
        );
    }

    #[test]
    fn rst_stream_ping_goaway_window_update() {
        both_ways(
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 5],
            Frame::RstStream {
                stream_id: 9,
                status: rst::CANCEL,
            },
        );
        both_ways(
            &[0x80, 3, 0, 6, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef],
            Frame::Ping { id: 0xdead_beef },
        );
        both_ways(
            &[0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 11, 0, 0, 0, 1],
            Frame::GoAway {
                last_good_stream_id: 11,
                status: goaway::PROTOCOL_ERROR,
            },
        );
        both_ways(
            &[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0],
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 65536,
            },
        );
    }

    #[test]
    fn settings() {
        both_ways(
            &[
                0x80, 3, 0, 4, 0x01, 0, 0, 20, // CLEAR_SETTINGS, length 4 + 2 * 8
                0, 0, 0, 2, // two entries
                0x01, 0, 0, 7, 0, 0x10, 0, 0, // persist, INITIAL_WINDOW_SIZE = 1 MiB
                0x00, 0, 0, 4, 0, 0, 0, 100, // MAX_CONCURRENT_STREAMS = 100
            ],
            Frame::Settings {
                flags: FLAG_CLEAR_SETTINGS,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: settings::INITIAL_WINDOW_SIZE,
                        value: 1 << 20,
                    },
                    Setting {
                        flags: 0,
                        id: settings::MAX_CONCURRENT_STREAMS,
                        value: 100,
                    },
                ],
            },
        );
        // A count the length does not hold.
        assert_eq!(
            decode_all(&[0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1]),
            Err(FrameError::Length {
                frame: "SETTINGS",
                len: 12
            })
        );
    }

    #[test]
    fn data() {
        both_ways(
            &[0, 0, 0, 3, 0x01, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'],
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 0, 0, 0, 0, 1, b'x']),
            Err(FrameError::ZeroStream { frame: "DATA" })
        );
    }

    #[test]
    fn a_partial_frame_waits_for_its_bytes_one_at_a_time() {
        let mut bytes = Vec::new();
        for f in [
            Frame::Ping { id: 1 },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"payload"),
            },
        ] {
            let mut b = BytesMut::new();
            f.encode(&mut b).unwrap();
            bytes.extend_from_slice(&b);
        }
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.name());
            }
        }
        assert_eq!(got, ["PING", "DATA"]);
    }

    #[test]
    fn unknown_control_types_are_skipped_even_when_split() {
        // NOOP (5, SPDY/2), CREDENTIAL (10) and a type from the future, then a PING.
        let mut bytes = vec![0x80, 3, 0, 5, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0x80, 3, 0, 10, 0, 0, 0, 3, 1, 2, 3]);
        bytes.extend_from_slice(&[0x80, 3, 0x12, 0x34, 0xff, 0, 0, 2, 9, 9]);
        bytes.extend_from_slice(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(decode_all(&bytes).unwrap(), vec![Frame::Ping { id: 7 }]);
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            d.feed(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![Frame::Ping { id: 7 }]);
    }

    #[test]
    fn only_version_3_is_spoken() {
        assert_eq!(
            decode_all(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(FrameError::Version { version: 2 })
        );
    }

    #[test]
    fn a_hostile_length_is_refused_from_the_header_alone() {
        let mut d = Decoder::new(16 * 1024 * 1024);
        // A DATA frame claiming the 24-bit maximum passes the limit but waits; one over a
        // smaller limit is refused before any of its payload arrives.
        d.feed(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.buffer_mut().capacity() < 1024 * 1024, "nothing reserved");
        let mut d = Decoder::new(64 * 1024 - 1);
        d.feed(&[0x80, 3, 0, 1, 0, 0x01, 0, 0]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLong {
                frame: "SYN_STREAM",
                len: 65536,
                max: 64 * 1024 - 1,
            })
        );
    }

    #[test]
    fn layouts_with_the_wrong_length_are_refused() {
        for (kind, len) in [(3u8, 4u8), (6, 8), (7, 4), (9, 12), (2, 2), (1, 8)] {
            let mut bytes = vec![0x80, 3, 0, kind, 0, 0, 0, len];
            bytes.resize(8 + usize::from(len), 1);
            assert!(
                matches!(decode_all(&bytes), Err(FrameError::Length { .. })),
                "type {kind} length {len}"
            );
        }
        assert_eq!(
            decode_all(&[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(FrameError::ZeroStream {
                frame: "RST_STREAM"
            })
        );
    }

    /// Valid frames with bytes flipped, truncated or extended, decoded as frames and their
    /// blocks as header blocks (raw and inflated): errors, never a panic.
    #[test]
    fn mangled_frames_are_errors_not_panics() {
        let mut deflate = crate::streaming::spdy::headers::Compressor::new().unwrap();
        let block = deflate
            .compress(&crate::streaming::spdy::Headers::new().with("streamtype", "data"))
            .unwrap();
        let seeds = [
            Frame::syn_stream(1, FLAG_FIN, block.clone()),
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                block,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 9,
                }],
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 5,
            },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"data"),
            },
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut b = BytesMut::new();
            seeds[round % seeds.len()].encode(&mut b).unwrap();
            let mut bytes = b.to_vec();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[i] ^= 1 << (next() % 8),
                    1 => bytes.truncate(i.max(1)),
                    _ => bytes.insert(i, next() as u8),
                }
            }
            let mut d = Decoder::new(1024);
            d.feed(&bytes);
            while let Ok(Some(f)) = d.next_frame() {
                if let Frame::SynStream { block, .. } | Frame::SynReply { block, .. } = f {
                    let _ = crate::streaming::spdy::Headers::from_block(&block);
                    let _ =
                        crate::streaming::spdy::headers::Decompressor::new(4096).decompress(&block);
                }
            }
        }
    }
}
