//! Log lines on stderr, as containerd writes its own: text
//! `time="…" level=info msg="…"` or JSON `{"level":"info","msg":"…","time":"…"}`.

use crate::config::LogFormat;
use std::io::Write;

struct Logger {
    format: LogFormat,
    level: log::LevelFilter,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    level: &'a str,
    msg: &'a str,
    time: &'a str,
}

fn level_name(l: log::Level) -> &'static str {
    match l {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// One line in `format` (without the newline).
pub fn format_line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            serde_json::to_string(&JsonLine { level, msg, time }).unwrap_or_default()
        }
        LogFormat::Text => format!(
            "time={} level={level} msg={}",
            serde_json::Value::from(time),
            serde_json::Value::from(msg)
        ),
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            self.format,
            level_name(record.level()),
            &record.args().to_string(),
            &capsa::internal::now_rfc3339_nanos(),
        );
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {}
}

/// Installs the logger once for the process; later calls keep the first.
pub fn init(format: LogFormat, level: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(Logger { format, level })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_containerd_s() {
        assert_eq!(
            format_line(LogFormat::Json, "info", "serving \"x\"", "T"),
            r#"{"level":"info","msg":"serving \"x\"","time":"T"}"#
        );
        assert_eq!(
            format_line(LogFormat::Text, "warning", "a \"b\"", "T"),
            r#"time="T" level=warning msg="a \"b\"""#
        );
    }
}
