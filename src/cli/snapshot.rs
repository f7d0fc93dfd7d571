//! `ember snapshot save|status|restore`, `ember move-leader` and
//! `ember defrag`: backups and maintenance, as etcdctl and etcdutl give them.
//!
//! `save` pulls a backup stream from one member into `FILE.part`, checks
//! the whole file (lengths and SHA-256, as `status` would), syncs it,
//! renames it to `FILE` and syncs the directory: `FILE` exists only whole.
//! A progress line (bytes, percent, rate) is drawn on stderr when it is a
//! terminal, and nothing when it is not. `status` and `restore` read a
//! file offline and check it whole before anything else; `restore` writes
//! a new member's data directory (see `server::restore`).

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CliError;
use super::format::{self, Format, emit};
use super::output::{client_config, connect, failed, si_bytes};
use crate::client::{Client, ClientError};
use crate::flags::{Flag, Parsed, no_env};
use crate::mvcc::StoreConfig;
use crate::server::Config;
use crate::server::restore::{read_state, restore};
use crate::snap::BackupFile;
use crate::state::Identity;

pub const SNAPSHOT_FLAGS: &[Flag] = &[
    Flag { name: "name", takes_value: true, help: "restore: the new member's name" },
    Flag {
        name: "data-dir",
        takes_value: true,
        help: "restore: the new member's data directory (must be empty or absent)",
    },
    Flag {
        name: "initial-cluster",
        takes_value: true,
        help: "restore: the new cluster's members, name=peer-url,...",
    },
    Flag {
        name: "initial-cluster-token",
        takes_value: true,
        help: "restore: the new cluster's token (its cluster id comes from it)",
    },
    Flag {
        name: "initial-advertise-peer-urls",
        takes_value: true,
        help: "restore: this member's peer URLs, as in --initial-cluster",
    },
];

pub const DEFRAG_FLAGS: &[Flag] = &[Flag {
    name: "cluster",
    takes_value: false,
    help: "defragment every member the cluster lists",
}];

/// How long a save or a defragmentation waits for the member's snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// How often the progress line is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

pub fn run_snapshot(parsed: &Parsed) -> Result<(), CliError> {
    let positionals: Vec<&str> = parsed.positionals.iter().map(String::as_str).collect();
    match positionals.as_slice() {
        ["save", file] => save(parsed, Path::new(file)),
        ["status", file] => status(format::write_format(parsed)?, Path::new(file)),
        ["restore", file] => run_restore(parsed, Path::new(file)),
        _ => Err(CliError::Usage("snapshot takes save FILE, status FILE or restore FILE".into())),
    }
}

fn save(parsed: &Parsed, path: &Path) -> Result<(), CliError> {
    let mut client = connect(parsed)?;
    let part = PathBuf::from(format!("{}.part", path.display()));
    let written = pull(&mut client, &part);
    let result = written.and_then(|()| {
        BackupFile::open(&part).map_err(|e| CliError::Failed(format!("received file: {e}")))?;
        fs::rename(&part, path).map_err(|e| io_failed("rename", &part, e))?;
        sync_parent(path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result?;
    emit(format!("Snapshot saved at {}\n", path.display()).as_bytes())
}

/// Pulls the whole stream into `part` and syncs it.
fn pull(client: &mut Client, part: &Path) -> Result<(), CliError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(part)
        .map_err(|e| io_failed("create", part, e))?;
    let mut piece = client.snapshot_open(SNAPSHOT_WAIT).map_err(failed)?;
    let total_bytes = piece.blob.len() as u64 + piece.remaining_bytes;
    let mut progress = Progress::new(total_bytes);
    loop {
        file.write_all(&piece.blob).map_err(|e| io_failed("write", part, e))?;
        progress.add(piece.blob.len() as u64);
        if piece.remaining_bytes == 0 {
            break;
        }
        piece = client.snapshot_next(piece.stream_id).map_err(stream_failed)?;
    }
    progress.finish();
    file.sync_all().map_err(|e| io_failed("sync", part, e))
}

fn stream_failed(error: ClientError) -> CliError {
    CliError::Failed(format!("the snapshot stream broke off: {error}"))
}

fn io_failed(what: &str, path: &Path, error: std::io::Error) -> CliError {
    CliError::Failed(format!("{what} {}: {error}", path.display()))
}

fn sync_parent(path: &Path) -> Result<(), CliError> {
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io_failed("sync", parent, e))
}

/// The progress line on a terminal: bytes, percent, rate.
struct Progress {
    total_bytes: u64,
    done_bytes: u64,
    started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    fn new(total_bytes: u64) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress { total_bytes, done_bytes: 0, started: Instant::now(), drawn: None, terminal }
    }

    fn add(&mut self, bytes: u64) {
        self.done_bytes += bytes;
        let due = self.drawn.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL);
        if self.terminal && due {
            self.draw();
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        let percent = self.done_bytes * 100 / self.total_bytes.max(1);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (self.done_bytes as f64 / seconds) as u64;
        eprint!(
            "\r{} / {} ({percent}%), {}/s   ",
            si_bytes(self.done_bytes),
            si_bytes(self.total_bytes),
            si_bytes(rate)
        );
    }

    fn finish(&mut self) {
        if self.terminal {
            self.draw();
            eprintln!();
        }
    }
}

/// What `snapshot status` reports, etcdutl's four figures.
struct Status {
    hash: u32,
    revision: u64,
    total_keys: usize,
    total_bytes: u64,
}

fn status(format: Format, path: &Path) -> Result<(), CliError> {
    let file = BackupFile::open(path).map_err(|e| CliError::Failed(e.to_string()))?;
    let identity = Identity { cluster_id: 0, member_id: 0 };
    let state = read_state(&file, identity, StoreConfig::default())
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    let store = state.store();
    let hash = store.hash_kv(0).map_err(|e| CliError::Failed(format!("{e:?}")))?.hash;
    let status = Status {
        hash,
        revision: store.current_revision(),
        total_keys: store.key_count(),
        total_bytes: file.file_bytes(),
    };
    emit(status_text(format, &status).as_bytes())
}

fn status_text(format: Format, s: &Status) -> String {
    match format {
        Format::Simple => {
            format!("{:x}, {}, {}, {}\n", s.hash, s.revision, s.total_keys, si_bytes(s.total_bytes))
        }
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_keys, s.total_bytes
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            s.hash, s.revision, s.total_keys, s.total_bytes
        ),
        Format::Table => format::table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", s.hash),
                s.revision.to_string(),
                s.total_keys.to_string(),
                si_bytes(s.total_bytes),
            ]],
        ),
    }
}

fn run_restore(parsed: &Parsed, path: &Path) -> Result<(), CliError> {
    for flag in ["name", "initial-cluster", "initial-cluster-token", "data-dir"] {
        if parsed.value(flag, no_env).is_none() {
            return Err(CliError::Usage(format!("snapshot restore needs --{flag}")));
        }
    }
    let config = Config::from_parsed(parsed, no_env).map_err(|e| CliError::Usage(e.to_string()))?;
    let data_dir = config.data_dir.clone();
    let restored = restore(path, config).map_err(|e| CliError::Failed(e.to_string()))?;
    let text = format!(
        "restored revision {} ({} keys) into {} as member {:x} of cluster {:x} ({} members)\n",
        restored.revision,
        restored.keys,
        data_dir.display(),
        restored.member_id,
        restored.cluster_id,
        restored.members
    );
    emit(text.as_bytes())
}

pub fn run_move_leader(parsed: &Parsed) -> Result<(), CliError> {
    let [id] = parsed.positionals.as_slice() else {
        return Err(CliError::Usage("move-leader takes the new leader's member ID (hex)".into()));
    };
    let target_id = u64::from_str_radix(id, 16)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| CliError::Usage(format!("move-leader: {id:?} is not a member ID")))?;
    let config = client_config(parsed)?;
    let (mut leader, leader_id) = find_leader(&config)?;
    leader.move_leader(target_id).map_err(failed)?;
    emit(format!("Leadership transferred from {leader_id:x} to {target_id:x}\n").as_bytes())
}

/// A client on the leader, found by asking each endpoint's status.
fn find_leader(config: &crate::client::Config) -> Result<(Client, u64), CliError> {
    let mut last_error = None;
    for endpoint in &config.endpoints {
        let mut single = config.clone();
        single.endpoints = vec![endpoint.clone()];
        match Client::connect(single).and_then(|mut c| c.status().map(|s| (c, s))) {
            Ok((client, status)) if status.leader_id == status.header.member_id => {
                return Ok((client, status.leader_id));
            }
            Ok(_) => {}
            Err(error) => last_error = Some(error),
        }
    }
    Err(CliError::Failed(match last_error {
        Some(error) => format!("no endpoint is the leader ({error}); list every member's"),
        None => "no endpoint is the leader; list every member's with --endpoints".to_string(),
    }))
}

pub fn run_defrag(parsed: &Parsed) -> Result<(), CliError> {
    if let Some(extra) = parsed.positionals.first() {
        return Err(CliError::Usage(format!("defrag takes no arguments, got '{extra}'")));
    }
    let mut config = client_config(parsed)?;
    if parsed.switch("cluster", no_env)? {
        config.endpoints = super::endpoint::cluster_client_urls(&config)?;
    }
    let mut failures = 0;
    for endpoint in &config.endpoints {
        let mut single = config.clone();
        single.endpoints = vec![endpoint.clone()];
        match Client::connect(single).and_then(|mut c| c.defragment(SNAPSHOT_WAIT)) {
            Ok(_) => println!("Finished defragmenting etcd member[{endpoint}]"),
            Err(error) => {
                failures += 1;
                eprintln!("Failed to defragment etcd member[{endpoint}] ({error})");
            }
        }
    }
    if failures > 0 {
        return Err(CliError::Failed(format!("{failures} members not defragmented")));
    }
    Ok(())
}
