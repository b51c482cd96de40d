//! Reading an image's /etc/passwd and /etc/group without trusting them.
//!
//! The image is untrusted: /etc/passwd -> /dev/zero once ate memory up to the OOM killer, a
//! FIFO hung create for good. So callers open the file non-blocking, refuse it unless it is a
//! regular file ([`require_regular`]), and read it as a stream of bounded lines up to the
//! entry they want ([`scan`]), never whole.

use std::io::{self, BufRead, Read};
use std::os::unix::fs::FileTypeExt;

/// The longest line read: Go's bufio.MaxScanTokenSize, the limit of the scanner runc reads
/// passwd with (runc fails with "token too long" past it).
pub const MAX_LINE: usize = 64 * 1024;

/// Refuses anything but a regular file, naming what it is.
pub fn require_regular(file: &std::fs::File, name: &str) -> io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a directory"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{name} is {what}, not a regular file"),
    ))
}

/// Calls `visit` with the ':'-separated fields of each line (trimmed; comments and blank
/// lines included, as runc's parser sees them) until it returns a value. A line longer than
/// [`MAX_LINE`] is an error naming `name`; nothing past the matching line is read.
pub fn scan<T>(
    mut reader: impl BufRead,
    name: &str,
    mut visit: impl FnMut(&[&str]) -> Option<T>,
) -> io::Result<Option<T>> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} has a line longer than {MAX_LINE} bytes"),
            ));
        }
        let text = String::from_utf8_lossy(&line);
        let fields: Vec<&str> = text.trim().split(':').collect();
        if let Some(found) = visit(&fields) {
            return Ok(Some(found));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    #[test]
    fn an_endless_line_is_refused_after_the_limit() {
        let zeros = BufReader::new(io::repeat(0));
        let err = scan(zeros, "/etc/group", |_| Some(())).unwrap_err();
        assert!(
            err.to_string()
                .contains("/etc/group has a line longer than"),
            "{err}"
        );
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        assert!(scan(Cursor::new(long), "f", |_| Some(())).is_err());
    }

    #[test]
    fn reading_stops_at_the_matching_line() {
        // What follows the matching line (endless zeros here) is never read.
        let head = Cursor::new(b"root:x:0:0:root:/root:/bin/sh\n".to_vec());
        let endless = BufReader::new(head.chain(io::repeat(0)));
        let uid = scan(endless, "f", |f| f.get(2).map(|s| s.to_string())).unwrap();
        assert_eq!(uid.as_deref(), Some("0"));
    }

    #[test]
    fn a_fifo_is_not_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("capsa-accounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("passwd");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let err = require_regular(&f, "/etc/passwd").unwrap_err();
        assert_eq!(err.to_string(), "/etc/passwd is a FIFO, not a regular file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
