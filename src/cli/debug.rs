//! `ember debug wal <data-dir>`: every record of the WAL with its index, term,
//! type, size and CRC verdict, then what a node would do on start (start
//! clean, cut a torn tail, or refuse). Read-only: it repairs nothing, so an
//! operator can look at a damaged node before anything touches it.

use std::fs;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::flags::{Parsed, no_env};
use crate::wal::record::{
    Parsed as RecordParse, RecordKind, decode_segment_header, find_valid_record, parse_record,
    peek_header, record_size_bytes,
};
use crate::wal::recover::{Recovered, Seen, SegmentFile, SegmentView, recover};
use crate::wal::{other_file_fate, parse_segment_name};

/// The data directory when neither an argument nor `--data-dir` names one.
const DATA_DIR_DEFAULT: &str = "default.ember";

/// Runs `ember debug wal [DATA-DIR]`.
pub fn run(parsed: &Parsed) -> Result<(), CliError> {
    let data_dir = match parsed.positionals.as_slice() {
        [what, dir] if what == "wal" => PathBuf::from(dir),
        [what] if what == "wal" => PathBuf::from(
            parsed.value("data-dir", no_env).unwrap_or_else(|| DATA_DIR_DEFAULT.to_string()),
        ),
        _ => return Err(CliError::Usage("usage: ember debug wal [DATA-DIR]".to_string())),
    };
    let report = inspect(&data_dir.join("wal")).map_err(CliError::Failed)?;
    print!("{}", report.text);
    if report.refuses {
        return Err(CliError::Failed("the wal is corrupt: a node would refuse to start".into()));
    }
    Ok(())
}

/// What `debug wal` found.
pub struct Report {
    pub text: String,
    /// A node would refuse to start on this WAL.
    pub refuses: bool,
}

/// Reads every segment in `wal_dir` and describes it.
pub fn inspect(wal_dir: &Path) -> Result<Report, String> {
    let listing = fs::read_dir(wal_dir).map_err(|e| format!("{}: {e}", wal_dir.display()))?;
    let mut text = String::new();
    let mut segments = Vec::new();
    let mut stray = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| format!("{}: {e}", wal_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match parse_segment_name(&name) {
            Some((seq, first_index)) => {
                let bytes = fs::read(entry.path()).map_err(|e| format!("{name}: {e}"))?;
                segments.push(SegmentFile { name, seq, first_index, bytes });
            }
            None if name.ends_with(".wal") => stray.push(name),
            None => text.push_str(&format!("other file: {name} ({})\n", other_file_fate(&name))),
        }
    }
    segments.sort_by_key(|segment| segment.seq);
    let views: Vec<SegmentView> = segments.iter().map(SegmentFile::view).collect();
    text.push_str("file                                    offset     type        index       term   size  crc\n");
    let result = recover(&views, &mut |seen| text.push_str(&record_line(&seen)));
    let refuses = !stray.is_empty() || result.is_err();
    for name in &stray {
        text.push_str(&format!("verdict: REFUSE: {name} is not a valid segment name\n"));
    }
    match result {
        Ok(recovered) => text.push_str(&healthy_verdict(&views, &recovered)),
        Err(corruption) => {
            let at = views.iter().position(|v| v.file_name == corruption.file_name);
            if let Some(at) = at {
                text.push_str(&damage_lines(&views[at], corruption.offset as usize));
                views[at + 1..].iter().for_each(|view| text.push_str(&unreplayed_lines(view)));
            }
            text.push_str(&format!("verdict: REFUSE to start: {corruption}\n"));
        }
    }
    Ok(Report { text, refuses })
}

fn record_line(seen: &Seen) -> String {
    let record = &seen.record;
    format!(
        "{:<38} {:>8}  {:<10} {:>10} {:>10} {:>6}  ok {:08x}\n",
        seen.file_name,
        seen.offset,
        record.kind.name(),
        record.index,
        record.term,
        record.size_bytes,
        record.crc
    )
}

/// The bad record at `offset` and any valid records behind it.
fn damage_lines(view: &SegmentView, offset: usize) -> String {
    let mut text = String::new();
    if let Some((crc, kind, len, index, term)) = peek_header(view.bytes, offset) {
        let kind_name = RecordKind::from_byte(kind).map_or("?", RecordKind::name);
        let why = match parse_record(view.bytes, view.name_seq, offset) {
            RecordParse::Invalid(why) => why.to_string(),
            RecordParse::Empty => "zeros".to_string(),
            RecordParse::Record(_) => "valid record, but out of place".to_string(),
        };
        text.push_str(&format!(
            "{:<38} {:>8}  {:<10} {:>10} {:>10} {:>6}  BAD {crc:08x} ({why})\n",
            view.file_name,
            offset,
            kind_name,
            index,
            term,
            record_size_bytes(len)
        ));
    }
    let mut at = offset + 8;
    while let Some((found, record)) = find_valid_record(view.bytes, view.name_seq, at) {
        text.push_str(&format!(
            "  after damage: {}",
            record_line(&Seen { file_name: view.file_name, offset: found, record })
        ));
        at = found + record.size_bytes;
    }
    text
}

/// The valid records of a segment that replay never reached.
fn unreplayed_lines(view: &SegmentView) -> String {
    let mut text = String::new();
    let Ok(header) = decode_segment_header(view.bytes) else { return String::new() };
    let mut offset = header.records_offset as usize;
    while let RecordParse::Record(record) = parse_record(view.bytes, view.name_seq, offset) {
        let seen = Seen { file_name: view.file_name, offset, record };
        text.push_str(&format!("  not replayed: {}", record_line(&seen)));
        offset += record.size_bytes;
    }
    text
}

fn healthy_verdict(views: &[SegmentView], recovered: &Recovered) -> String {
    let index = &recovered.index;
    let state = recovered.hard_state;
    let mut text = format!(
        "log: {} segments, entries {}..={}, snapshot at {} (term {}), hard state term {} vote {} commit {}\n",
        views.len(),
        index.first_index(),
        index.last_index(),
        recovered.snapshot.index,
        recovered.snapshot.term,
        state.term,
        state.vote,
        state.commit
    );
    match &recovered.torn {
        None => text.push_str("verdict: CLEAN: a node would start with this log\n"),
        Some(torn) => {
            if let Some(view) = views.iter().find(|v| v.file_name == torn.file_name) {
                text.push_str(&damage_lines(view, torn.offset));
            }
            text.push_str(&format!(
                "verdict: TORN TAIL in {} at offset {} ({}): on start {} bytes are kept in a side file and cut off; the log above is what remains\n",
                torn.file_name,
                torn.offset,
                torn.why,
                torn.end - torn.offset
            ));
        }
    }
    text
}
