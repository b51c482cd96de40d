//! RFC 3339 timestamps (UTC) without a calendar dependency: state.json's `created` and log lines.

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 -> (year, month, day), Howard Hinnant's civil_from_days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats seconds and nanoseconds since the epoch; `nanos: None` gives whole seconds.
pub fn format_rfc3339(secs: i64, nanos: Option<u32>) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    match nanos {
        Some(n) => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{n:09}Z"),
        None => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
    }
}

fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// Now, with nanoseconds, as runc writes `created`.
pub fn now_rfc3339_nanos() -> String {
    let (s, n) = now();
    format_rfc3339(s, Some(n))
}

/// Now, to the second, as logrus writes `time`.
pub fn now_rfc3339() -> String {
    format_rfc3339(now().0, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_795_317_703, Some(5)),
            "2026-11-22T03:21:43.000000005Z"
        );
    }
}
