//! The one backend behind the `log` facade: plain lines on standard error.
//!
//! Under systemd (`JOURNAL_STREAM` is set) each line starts with a `<N>` syslog
//! priority so journald files it at the right level, and carries no timestamp
//! because the journal adds its own. Elsewhere each line starts with a UTC
//! timestamp. A whole line is written with one `write_all` so lines from a
//! panic hook or a second thread never interleave mid-line.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where a line goes and how it is dressed, fixed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `2026-11-24T05:26:11.123Z WARN  ember::wal: message`
    Timestamped,
    /// `<4>ember::wal: message` for journald.
    Journal,
}

impl Style {
    /// Journal style when systemd connected standard error to the journal.
    pub fn detect() -> Style {
        if std::env::var_os("JOURNAL_STREAM").is_some() {
            Style::Journal
        } else {
            Style::Timestamped
        }
    }
}

/// Parses a level name as accepted by `EMBER_LOG` and `--log-level`.
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    match text.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// The syslog priority journald expects for a level (RFC 5424 numbering).
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Builds one log line, newline included. Pure, so it is tested directly.
pub fn format_line(
    style: Style,
    unix_ms: u64,
    level: Level,
    target: &str,
    message: &str,
) -> String {
    match style {
        Style::Journal => format!("<{}>{target}: {message}\n", syslog_priority(level)),
        Style::Timestamped => {
            let stamp = format_utc_ms(unix_ms);
            format!("{stamp} {level:<5} {target}: {message}\n")
        }
    }
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_utc_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        unix_ms % 1000
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Works in 400-year eras (146,097 days each), counting years from March so
/// that the leap day falls at the end of the counted year.
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    const DAYS_PER_ERA: u64 = 146_097;
    // 719,468 days separate 0000-03-01 from 1970-01-01.
    let days = days_since_epoch + 719_468;
    let era = days / DAYS_PER_ERA;
    let day_of_era = days % DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

struct StderrLogger {
    style: Style,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let message = record.args().to_string();
        let line = format_line(self.style, unix_ms, record.level(), record.target(), &message);
        // A log line that cannot be written has nowhere else to go.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger once per process at `level`. A second call only
/// changes the level, so tests and the command can both call it.
pub fn init(level: LevelFilter) {
    static LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();
    let logger = LOGGER.get_or_init(|| StderrLogger { style: Style::detect() });
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 was a leap day in a century year divisible by 400.
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc_ms(1_795_497_971_123), "2026-11-24T05:26:11.123Z");
        assert_eq!(format_utc_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(format_utc_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn journal_lines_carry_priority_and_no_timestamp() {
        let line = format_line(Style::Journal, 123, Level::Warn, "ember::wal", "torn tail");
        assert_eq!(line, "<4>ember::wal: torn tail\n");
        let line = format_line(Style::Journal, 123, Level::Error, "ember", "fsync failed");
        assert_eq!(line, "<3>ember: fsync failed\n");
    }

    #[test]
    fn plain_lines_start_with_a_timestamp() {
        let line = format_line(Style::Timestamped, 0, Level::Info, "ember::server", "serving");
        assert_eq!(line, "1970-01-01T00:00:00.000Z INFO  ember::server: serving\n");
    }

    #[test]
    fn level_names_parse_and_bad_ones_do_not() {
        assert_eq!(parse_level("WARN"), Some(LevelFilter::Warn));
        assert_eq!(parse_level(" debug "), Some(LevelFilter::Debug));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("verbose"), None);
    }
}
