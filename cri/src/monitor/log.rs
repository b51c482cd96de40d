//! kubelet's CRI container log: one record per line,
//! `<RFC3339Nano time> <stdout|stderr> <P|F> <text>\n`, the semantics of containerd's CRI
//! logger (`pkg/cri/io/logger.go`), which kubelet's reader (`parseCRILog`) is written for:
//!
//! - a line ending in `\n` is one `F` record, its `\n` (or `\r\n`) dropped;
//! - a line longer than [`MAX_LINE`] goes as `P` pieces of exactly `MAX_LINE` bytes, then the
//!   rest as `F` (a line of exactly `k * MAX_LINE` bytes ends with a full-size `F`, never an
//!   empty one);
//! - a line still without its newline at end of file is flushed as `P` (in pieces if long);
//!   before end of file it waits for its newline, as containerd's does;
//! - the time is Go's `time.RFC3339Nano` in UTC: trailing zeros of the fraction dropped.
//!
//! [`LineSplitter`] is the pure part (bytes in, records out); [`CriLog`] adds the clock and
//! the file, opened `O_APPEND|O_CREAT` mode 0640 and opened anew by [`CriLog::reopen`] after
//! kubelet renamed it to rotate.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// containerd's `max_container_log_line_size` default: longer lines are split.
pub const MAX_LINE: usize = 16 * 1024;

/// The container stream a record came from (a terminal's output is `Stdout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// `P`: a piece of a line; `F`: the end of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Partial,
    Full,
}

impl Tag {
    pub fn letter(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Cuts one stream's bytes into records. Keeps at most a line's worth (`max` bytes, plus a
/// `\r` that may turn out to end it) between calls.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// `max` > 0: the longest record text.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds `data`; `emit` gets every record it completes, in order.
    pub fn push(&mut self, data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    let mut line = &self.pending[..];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    emit_pieces(line, self.max, Tag::Full, emit);
                    self.pending.clear();
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    rest = &[];
                    self.cut_long(emit);
                }
            }
        }
    }

    /// End of the stream: what is left is a line without its newline, flushed as `P`.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit_pieces(&self.pending, self.max, Tag::Partial, emit);
            self.pending.clear();
        }
    }

    /// Bytes held back, waiting for their line's end.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Emits `P` pieces of an unfinished line once it is known to be longer than `max`. A
    /// lone `\r` just past `max` waits: with a `\n` after it the line is exactly `max` long.
    fn cut_long(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        let mut start = 0;
        loop {
            let left = &self.pending[start..];
            let waits_for_newline = left.len() == self.max + 1 && left[self.max] == b'\r';
            if left.len() <= self.max || waits_for_newline {
                break;
            }
            emit(Tag::Partial, &left[..self.max]);
            start += self.max;
        }
        self.pending.drain(..start);
    }
}

/// `line` as pieces of `max` bytes tagged `P`, the last one tagged `last` (an empty line is
/// one empty record).
fn emit_pieces(line: &[u8], max: usize, last: Tag, emit: &mut impl FnMut(Tag, &[u8])) {
    let mut rest = line;
    while rest.len() > max {
        emit(Tag::Partial, &rest[..max]);
        rest = &rest[max..];
    }
    emit(last, rest);
}

/// Go's `time.RFC3339Nano` of an instant in UTC: `2026-12-03T07:46:30.5Z`, the fraction's
/// trailing zeros (and a zero fraction) left out.
pub fn rfc3339_nano(secs: i64, nanos: u32) -> String {
    let mut s = capsa::internal::format_rfc3339(secs, None);
    if nanos != 0 {
        let frac = format!(".{nanos:09}");
        s.insert_str(s.len() - 1, frac.trim_end_matches('0'));
    }
    s
}

/// One record as it goes in the file.
pub fn format_record(time: &str, stream: Stream, tag: Tag, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(time.len() + text.len() + 12);
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.letter().as_bytes());
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

#[derive(Debug, thiserror::Error)]
#[error("opening the container log {}", path.display())]
pub struct LogOpenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn open_log(path: &Path) -> Result<File, LogOpenError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| LogOpenError {
            path: path.to_path_buf(),
            source,
        })
}

/// A container's log file and one splitter per stream.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: File,
    stdout: LineSplitter,
    stderr: LineSplitter,
    /// The first write error since the last report (a full disk must not stop the copying:
    /// the container would block on its pipe, so the record is dropped, as containerd does).
    write_error: Option<std::io::Error>,
}

impl CriLog {
    pub fn open(path: &Path) -> Result<Self, LogOpenError> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: open_log(path)?,
            stdout: LineSplitter::new(MAX_LINE),
            stderr: LineSplitter::new(MAX_LINE),
            write_error: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Output of the container on `stream`.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let (splitter, file, error) = self.parts(stream);
        splitter.push(data, &mut |tag, text| {
            write_record(file, error, stream, tag, text)
        });
    }

    /// Both streams ended: their unfinished lines go out as `P`.
    pub fn finish(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let (splitter, file, error) = self.parts(stream);
            splitter.finish(&mut |tag, text| write_record(file, error, stream, tag, text));
        }
    }

    /// Opens the path anew (kubelet has renamed the old file): records from now on go to
    /// the new file. On failure the old file stays in use.
    pub fn reopen(&mut self) -> Result<(), LogOpenError> {
        self.file = open_log(&self.path)?;
        Ok(())
    }

    /// The first write error since the last call, if any.
    pub fn take_write_error(&mut self) -> Option<std::io::Error> {
        self.write_error.take()
    }

    fn parts(
        &mut self,
        stream: Stream,
    ) -> (&mut LineSplitter, &mut File, &mut Option<std::io::Error>) {
        let splitter = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        (splitter, &mut self.file, &mut self.write_error)
    }
}

fn write_record(
    file: &mut File,
    error: &mut Option<std::io::Error>,
    stream: Stream,
    tag: Tag,
    text: &[u8],
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let time = rfc3339_nano(now.as_secs() as i64, now.subsec_nanos());
    // One write(2) per record on an O_APPEND file: a reader never sees half a record
    // interleaved with another.
    if let Err(e) = file.write_all(&format_record(&time, stream, tag, text)) {
        error.get_or_insert(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(max: usize, chunks: &[&[u8]], eof: bool) -> Vec<(Tag, String)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut emit = |t: Tag, b: &[u8]| out.push((t, String::from_utf8_lossy(b).into_owned()));
        for c in chunks {
            s.push(c, &mut emit);
        }
        if eof {
            s.finish(&mut emit);
        }
        out
    }

    fn full(s: &str) -> (Tag, String) {
        (Tag::Full, s.to_string())
    }

    fn part(s: &str) -> (Tag, String) {
        (Tag::Partial, s.to_string())
    }

    #[test]
    fn complete_lines_are_full_records() {
        assert_eq!(
            records(16, &[b"one\ntwo\n\nthree\n"], true),
            vec![full("one"), full("two"), full(""), full("three")]
        );
    }

    #[test]
    fn a_line_across_reads_waits_for_its_newline() {
        assert_eq!(
            records(16, &[b"he", b"llo", b"\nx"], false),
            vec![full("hello")]
        );
    }

    #[test]
    fn crlf_and_one_cr_are_dropped_a_lone_cr_kept() {
        assert_eq!(
            records(16, &[b"a\r\nb\r", b"\nc\rd\ne\r\r\n"], true),
            vec![full("a"), full("b"), full("c\rd"), full("e\r")]
        );
    }

    #[test]
    fn long_lines_split_into_partial_pieces_then_full() {
        // 10 bytes with max 4: P(4) P(4) F(2), whether fed at once or byte by byte.
        let want = vec![part("0123"), part("4567"), full("89")];
        assert_eq!(records(4, &[b"0123456789\n"], true), want);
        let bytes: Vec<&[u8]> = b"0123456789\n".chunks(1).collect();
        assert_eq!(records(4, &bytes, true), want);
    }

    #[test]
    fn a_line_of_exactly_max_bytes_is_one_full_record() {
        assert_eq!(records(4, &[b"0123\n"], true), vec![full("0123")]);
        assert_eq!(
            records(4, &[b"01234567\n"], true),
            vec![part("0123"), full("4567")]
        );
        // Its "\r\n" arriving late does not make an empty F.
        assert_eq!(records(4, &[b"0123\r", b"\n"], true), vec![full("0123")]);
        assert_eq!(
            records(4, &[b"0123\rx", b"y\n"], true),
            vec![part("0123"), full("\rxy")]
        );
    }

    #[test]
    fn output_without_newline_at_eof_is_partial() {
        assert_eq!(
            records(16, &[b"a\nprompt> "], true),
            vec![full("a"), part("prompt> ")]
        );
        assert_eq!(
            records(4, &[b"0123456789"], true),
            vec![part("0123"), part("4567"), part("89")]
        );
        assert_eq!(records(16, &[b"x\r"], true), vec![part("x\r")]);
        assert_eq!(records(16, &[b"a\n"], true), vec![full("a")]);
    }

    #[test]
    fn nothing_is_held_beyond_a_line() {
        let mut s = LineSplitter::new(4);
        let mut n = 0;
        s.push(&[b'x'; 4001], &mut |_, _| n += 1);
        assert_eq!(n, 1000);
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn timestamps_are_go_rfc3339nano() {
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_795_317_703, 500_000_000),
            "2026-11-22T03:21:43.5Z"
        );
        assert_eq!(
            rfc3339_nano(1_795_317_703, 123_456_789),
            "2026-11-22T03:21:43.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(1_795_317_703, 1_000),
            "2026-11-22T03:21:43.000001Z"
        );
    }

    #[test]
    fn records_have_four_space_separated_fields() {
        let r = format_record("T", Stream::Stderr, Tag::Partial, b"a b");
        assert_eq!(r, b"T stderr P a b\n");
    }
}
