//! `ember watch KEY [RANGE_END] [-- COMMAND ARGS...]`: prints each event as
//! it comes, in any output format; with a command, runs it after printing
//! each event, the event in its environment:
//!
//! - `EMBER_WATCH_REVISION`: the event's revision (its key's mod revision),
//! - `EMBER_WATCH_EVENT_TYPE`: `PUT` or `DELETE`,
//! - `EMBER_WATCH_KEY`, `EMBER_WATCH_VALUE`: the key and the new value.
//!
//! Ctrl-C (SIGINT) ends the watch with exit 0: every event is written with
//! one flushed write, so nothing half-printed is left behind. A watch the
//! server cancels (compacted start revision, slow reader, ...) or a
//! connection that cannot be resumed ends with exit 1 and the reason.

#![allow(unsafe_code)]

use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use super::CliError;
use super::format::{self, Format, emit};
use super::kv::watch_range;
use super::output::{connect, failed, flag_number};
use crate::flags::{Flag, Parsed, no_env};
use crate::proto::{CancelReason, Event, ResponseHeader, WatchCreateRequest, WatchMessage};

pub const WATCH_FLAGS: &[Flag] = &[
    Flag { name: "prefix", takes_value: false, help: "watch every key starting with KEY" },
    Flag { name: "from-key", takes_value: false, help: "watch every key >= KEY" },
    Flag { name: "rev", takes_value: true, help: "start from this revision (0: from now)" },
    Flag { name: "prev-kv", takes_value: false, help: "also print each key's previous value" },
    Flag {
        name: "progress-notify",
        takes_value: false,
        help: "ask for progress notices while nothing changes",
    },
];

pub fn run_watch(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format_no_table(parsed, "watch")?;
    let (keys, command) = split_command(parsed)?;
    let (key, range_end) = watch_range(&parsed_with_positionals(parsed, keys))?;
    let start_revision: i64 = flag_number(parsed, "rev", 0)?;
    if start_revision < 0 {
        return Err(CliError::Usage("--rev must not be negative".to_string()));
    }
    let request = WatchCreateRequest {
        key,
        range_end,
        start_revision,
        progress_notify: parsed.switch("progress-notify", no_env)?,
        prev_kv: parsed.switch("prev-kv", no_env)?,
        ..WatchCreateRequest::default()
    };
    let mut client = connect(parsed)?;
    let stream = client.watch(request).map_err(failed)?;
    end_on_interrupt();
    for message in stream {
        match message.map_err(|error| CliError::Failed(format!("watch ended: {error}")))? {
            WatchMessage::Events { header, events } => {
                emit(&format::watch_events(format, &header, &events))?;
                if let Some(command) = &command {
                    events.iter().try_for_each(|event| run_hook(command, event))?;
                }
            }
            WatchMessage::Progress { header } => emit(&progress(format, &header))?,
            WatchMessage::Cancelled { header, reason, compact_revision } => {
                if format == Format::Json {
                    emit(format::json_watch(&header, &[], compact_revision, true).as_bytes())?;
                    emit(b"\n")?;
                }
                return Err(CliError::Failed(cancelled(reason, compact_revision)));
            }
        }
    }
    Err(CliError::Failed("watch ended: the connection closed".to_string()))
}

/// The same flags with other positionals: the key part of the command line.
fn parsed_with_positionals(parsed: &Parsed, positionals: Vec<String>) -> Parsed {
    let mut copy = parsed.clone();
    copy.positionals = positionals;
    copy
}

/// The key arguments and, after `--`, the command to run per event.
fn split_command(parsed: &Parsed) -> Result<(Vec<String>, Option<Vec<String>>), CliError> {
    let all = &parsed.positionals;
    match parsed.dash_dash_at {
        None => Ok((all.clone(), None)),
        Some(at) if at >= all.len() => {
            Err(CliError::Usage("watch: no command after --".to_string()))
        }
        Some(at) => Ok((all[..at].to_vec(), Some(all[at..].to_vec()))),
    }
}

fn progress(format: Format, header: &ResponseHeader) -> Vec<u8> {
    match format {
        Format::Json => format!("{}\n", format::json_watch(header, &[], 0, false)).into_bytes(),
        _ => format!("progress notify: {}\n", header.revision).into_bytes(),
    }
}

/// Why the server ended a watch, as one line.
pub fn cancelled(reason: CancelReason, compact_revision: i64) -> String {
    match reason {
        CancelReason::Compacted => format!(
            "watch was cancelled: required revision has been compacted (compact revision {compact_revision})"
        ),
        CancelReason::SlowReader => {
            "watch was cancelled: the reader fell too far behind".to_string()
        }
        CancelReason::EventsTooLarge => {
            "watch was cancelled: an event is larger than a frame".to_string()
        }
        CancelReason::ServerStopping => "watch was cancelled: the member is stopping".to_string(),
        CancelReason::MemberRemoved => "watch was cancelled: the member was removed".to_string(),
        CancelReason::PermissionRevoked => {
            "watch was cancelled: etcdserver: permission denied".to_string()
        }
        CancelReason::Corrupt => "watch was cancelled: etcdserver: corrupt cluster".to_string(),
    }
}

/// Runs the command of `watch ... -- COMMAND` for one event.
fn run_hook(command: &[String], event: &Event) -> Result<(), CliError> {
    let status = Command::new(&command[0])
        .args(&command[1..])
        .env("EMBER_WATCH_REVISION", event.kv.mod_revision.to_string())
        .env("EMBER_WATCH_EVENT_TYPE", format::event_type(event.kind))
        .env("EMBER_WATCH_KEY", std::ffi::OsStr::from_bytes(&event.kv.key))
        .env("EMBER_WATCH_VALUE", std::ffi::OsStr::from_bytes(&event.kv.value))
        .status()
        .map_err(|error| CliError::Failed(format!("command {:?}: {error}", command[0])))?;
    if !status.success() {
        return Err(CliError::Failed(format!("command {command:?} failed ({status})")));
    }
    Ok(())
}

extern "C" fn exit_quietly(_signal: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe; it skips destructors and stdio
    // buffers, which are empty: every answer is flushed as it is written.
    unsafe { libc::_exit(0) }
}

/// Ctrl-C ends the watch with exit 0 instead of the signal's default death.
fn end_on_interrupt() {
    let handler: extern "C" fn(libc::c_int) = exit_quietly;
    // SAFETY: installs a handler that only calls `_exit`; the previous
    // handler is not needed.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}
