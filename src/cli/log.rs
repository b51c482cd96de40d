//! Log lines as runc (logrus) writes them: text `time="..." level=error msg="..."` or JSON
//! `{"level":"error","msg":"...","time":"..."}`, which containerd and podman read back from
//! `--log` and show the last error's msg to their user.

use super::LogFormat;
use anyhow::Context;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

pub struct Logger {
    file: Option<Mutex<std::fs::File>>,
    format: LogFormat,
    level: ::log::LevelFilter,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    level: &'a str,
    msg: &'a str,
    time: &'a str,
}

/// Go's %q-style quoting, as logrus uses for text values.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn format_line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            serde_json::to_string(&JsonLine { level, msg, time }).unwrap_or_default()
        }
        LogFormat::Text => format!("time={} level={level} msg={}", quote(time), quote(msg)),
    }
}

fn level_name(l: ::log::Level) -> &'static str {
    match l {
        ::log::Level::Error => "error",
        ::log::Level::Warn => "warning",
        ::log::Level::Info => "info",
        ::log::Level::Debug => "debug",
        ::log::Level::Trace => "trace",
    }
}

impl Logger {
    fn write(&self, level: &str, msg: &str) {
        let line = format_line(self.format, level, msg, &capsa::internal::now_rfc3339());
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
            None => super::out::error_line(format_args!("{line}")),
        }
    }

    /// The final error: to the log (file or stderr), and, when the log is a file, the bare
    /// message on stderr as well (what runc does).
    pub fn fatal(&self, msg: &str) {
        self.write("error", msg);
        if self.file.is_some() {
            super::out::error_line(format_args!("{msg}"));
        }
    }
}

impl ::log::Log for Logger {
    fn enabled(&self, m: &::log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &::log::Record) {
        if self.enabled(r.metadata()) {
            self.write(level_name(r.level()), &r.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// The logger the global options ask for (--log, --log-format, --debug).
pub fn init(options: &super::Options) -> anyhow::Result<&'static Logger> {
    let (format, debug) = (options.log_format, options.debug);
    let file = match options.log.as_deref() {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log file {}", p.display()))?,
        )),
        None => None,
    };
    let level = if debug {
        ::log::LevelFilter::Debug
    } else {
        ::log::LevelFilter::Warn
    };
    let logger = LOGGER.get_or_init(|| Logger {
        file,
        format,
        level,
    });
    let _ = ::log::set_logger(logger);
    // The container's init and exec'd processes log to the same file (see set_log_fd).
    if let Some(Ok(f)) = logger.file.as_ref().map(|f| f.lock()) {
        capsa::internal::set_log_fd(Some(std::os::fd::AsFd::as_fd(&*f)));
    }
    ::log::set_max_level(level);
    Ok(logger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_containerds_fields_in_order() {
        let line = format_line(
            LogFormat::Json,
            "error",
            "container \"x\" does not exist",
            "2026-11-22T03:21:43Z",
        );
        assert_eq!(
            line,
            r#"{"level":"error","msg":"container \"x\" does not exist","time":"2026-11-22T03:21:43Z"}"#
        );
    }

    #[test]
    fn text_lines_match_logrus() {
        let line = format_line(LogFormat::Text, "error", "a \"b\"", "T");
        assert_eq!(line, r#"time="T" level=error msg="a \"b\"""#);
    }
}
