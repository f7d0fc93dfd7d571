//! `ember put`, `ember get` and `ember del`: one key or a range, with
//! etcdctl's flags, printed in any of the formats of `format.rs`.
//!
//! The request builders are pure (flags in, request out) so that `txn` reuses
//! them for its `put`/`get`/`del` lines.

use std::io::Read;

use super::CliError;
use super::format::{self, SimpleGet, emit};
use super::output::{connect, failed, flag_number, write_failed};
use crate::client::{Client, ClientError};
use crate::flags::{Flag, Parsed, no_env};
use crate::proto::{
    DeleteRangeRequest, ErrorCode, PutRequest, RangeRequest, SortOrder, SortTarget,
    prefix_range_end,
};

/// Most bytes `put` reads from stdin when the value is not on the command
/// line; the server's request limit is far below, so nothing real is cut.
pub const STDIN_VALUE_BYTES_MAX: u64 = 64 << 20;

pub const PUT_FLAGS: &[Flag] = &[
    Flag { name: "lease", takes_value: true, help: "attach to this lease (hex id, as etcdctl)" },
    Flag { name: "prev-kv", takes_value: false, help: "also print the previous key and value" },
    Flag {
        name: "ignore-value",
        takes_value: false,
        help: "keep the current value (only the lease changes)",
    },
    Flag { name: "ignore-lease", takes_value: false, help: "keep the current lease" },
];

pub const GET_FLAGS: &[Flag] = &[
    Flag { name: "prefix", takes_value: false, help: "get every key starting with KEY" },
    Flag { name: "from-key", takes_value: false, help: "get every key >= KEY" },
    Flag { name: "rev", takes_value: true, help: "read at this revision (0: the newest)" },
    Flag { name: "limit", takes_value: true, help: "most keys to return (0: no limit)" },
    Flag {
        name: "sort-by",
        takes_value: true,
        help: "key, version, create, modify or value (default key when --order is given)",
    },
    Flag { name: "order", takes_value: true, help: "ascend or descend" },
    Flag { name: "keys-only", takes_value: false, help: "return keys without values" },
    Flag { name: "count-only", takes_value: false, help: "return only the number of keys" },
    Flag { name: "print-value-only", takes_value: false, help: "print values without keys" },
    Flag {
        name: "consistency",
        takes_value: true,
        help: "l (linearizable, default) or s (serializable: this member's own state)",
    },
    Flag { name: "serializable", takes_value: false, help: "same as --consistency s" },
    Flag { name: "min-mod-revision", takes_value: true, help: "keys modified at or after" },
    Flag { name: "max-mod-revision", takes_value: true, help: "keys modified at or before" },
    Flag { name: "min-create-revision", takes_value: true, help: "keys created at or after" },
    Flag { name: "max-create-revision", takes_value: true, help: "keys created at or before" },
];

pub const DEL_FLAGS: &[Flag] = &[
    Flag { name: "prefix", takes_value: false, help: "delete every key starting with KEY" },
    Flag { name: "from-key", takes_value: false, help: "delete every key >= KEY" },
    Flag { name: "prev-kv", takes_value: false, help: "also print the deleted keys and values" },
];

/// The `put` request from its positionals and flags; `stdin` supplies the
/// value when it is not on the command line.
pub fn put_request(
    parsed: &Parsed,
    stdin: impl FnOnce() -> Result<Vec<u8>, CliError>,
) -> Result<PutRequest, CliError> {
    let ignore_value = parsed.switch("ignore-value", no_env)?;
    let (key, value) = match (parsed.positionals.as_slice(), ignore_value) {
        ([key, value], false) => (key, value.as_bytes().to_vec()),
        ([key], false) => (key, stdin()?),
        ([key], true) => (key, Vec::new()),
        ([_, _], true) => {
            return Err(CliError::Usage("put: --ignore-value takes no VALUE".to_string()));
        }
        _ => return Err(CliError::Usage("put takes KEY and VALUE".to_string())),
    };
    Ok(PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        lease: lease_flag(parsed)?,
        prev_kv: parsed.switch("prev-kv", no_env)?,
        ignore_value,
        ignore_lease: parsed.switch("ignore-lease", no_env)?,
    })
}

/// The whole of stdin, bounded by `STDIN_VALUE_BYTES_MAX`.
pub fn read_stdin_value() -> Result<Vec<u8>, CliError> {
    let mut value = Vec::new();
    std::io::stdin()
        .take(STDIN_VALUE_BYTES_MAX)
        .read_to_end(&mut value)
        .map_err(|error| CliError::Failed(format!("reading the value from stdin: {error}")))?;
    Ok(value)
}

/// `put KEY [VALUE]`: prints `OK`, then with `--prev-kv` the previous value.
pub fn run_put(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format_no_table(parsed, "put")?;
    let request = put_request(parsed, read_stdin_value)?;
    let mut client = connect(parsed)?;
    let response = client.put_with(request).map_err(write_failed)?;
    emit(&format::put(format, &response))
}

/// `--lease` in hex, as etcdctl writes lease ids; 0 (none) when absent.
fn lease_flag(parsed: &Parsed) -> Result<i64, CliError> {
    let Some(text) = parsed.value("lease", no_env) else { return Ok(0) };
    let id = u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|_| {
        CliError::Usage(format!("invalid value {text:?} for --lease: expected hex"))
    })?;
    // Lease ids travel as i64, as in etcd; the bits are what matter.
    Ok(id as i64)
}

/// The `get` request from its positionals and flags.
pub fn get_request(parsed: &Parsed) -> Result<RangeRequest, CliError> {
    let (key, range_end) = key_range(parsed, "get")?;
    let (sort_order, sort_target) = sort_flags(parsed)?;
    let request = RangeRequest {
        key,
        range_end,
        limit: flag_number(parsed, "limit", 0i64)?,
        revision: flag_number(parsed, "rev", 0i64)?,
        sort_order,
        sort_target,
        serializable: serializable(parsed)?,
        keys_only: parsed.switch("keys-only", no_env)?,
        count_only: parsed.switch("count-only", no_env)?,
        min_mod_revision: flag_number(parsed, "min-mod-revision", 0i64)?,
        max_mod_revision: flag_number(parsed, "max-mod-revision", 0i64)?,
        min_create_revision: flag_number(parsed, "min-create-revision", 0i64)?,
        max_create_revision: flag_number(parsed, "max-create-revision", 0i64)?,
    };
    let numbers = [
        request.limit,
        request.revision,
        request.min_mod_revision,
        request.max_mod_revision,
        request.min_create_revision,
        request.max_create_revision,
    ];
    if numbers.iter().any(|n| *n < 0) {
        return Err(CliError::Usage("get: limits and revisions must not be negative".to_string()));
    }
    Ok(request)
}

fn serializable(parsed: &Parsed) -> Result<bool, CliError> {
    let by_switch = parsed.switch("serializable", no_env)?;
    match parsed.value("consistency", no_env).as_deref() {
        None => Ok(by_switch),
        Some("l") => Ok(by_switch),
        Some("s") => Ok(true),
        Some(other) => Err(CliError::Usage(format!(
            "invalid value {other:?} for --consistency: expected l or s"
        ))),
    }
}

/// `--sort-by` and `--order`, as etcdctl: an order alone sorts by key, a
/// target alone sorts ascending.
fn sort_flags(parsed: &Parsed) -> Result<(SortOrder, SortTarget), CliError> {
    let order = parsed.value("order", no_env).map(|t| t.to_ascii_lowercase());
    let target = parsed.value("sort-by", no_env).map(|t| t.to_ascii_lowercase());
    let order = match order.as_deref() {
        None if target.is_some() => SortOrder::Ascend,
        None => SortOrder::None,
        Some("ascend") => SortOrder::Ascend,
        Some("descend") => SortOrder::Descend,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "invalid value {other:?} for --order: expected ascend or descend"
            )));
        }
    };
    let target = match target.as_deref() {
        None | Some("key") => SortTarget::Key,
        Some("version") => SortTarget::Version,
        Some("create") => SortTarget::Create,
        Some("modify") => SortTarget::Mod,
        Some("value") => SortTarget::Value,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "invalid value {other:?} for --sort-by: expected key, version, create, modify or value"
            )));
        }
    };
    Ok((order, target))
}

/// `get KEY [RANGE_END]`: each key then its value, on lines of their own.
pub fn run_get(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format_no_table(parsed, "get")?;
    let request = get_request(parsed)?;
    let simple = SimpleGet {
        value_only: parsed.switch("print-value-only", no_env)?,
        count_only: request.count_only,
    };
    let mut client = connect(parsed)?;
    let response = client.range(request).map_err(|e| op_failed(&mut client, e))?;
    emit(&format::get(format, &response, simple))
}

/// The `del` request from its positionals and flags.
pub fn del_request(parsed: &Parsed) -> Result<DeleteRangeRequest, CliError> {
    let (key, range_end) = key_range(parsed, "del")?;
    let prev_kv = parsed.switch("prev-kv", no_env)?;
    Ok(DeleteRangeRequest { key, range_end, prev_kv })
}

/// `del KEY [RANGE_END]`: prints how many keys were deleted, then with
/// `--prev-kv` each deleted key and value.
pub fn run_del(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format_no_table(parsed, "del")?;
    let request = del_request(parsed)?;
    let mut client = connect(parsed)?;
    let response = client.delete_range(request).map_err(write_failed)?;
    emit(&format::del(format, &response))
}

/// `KEY [RANGE_END]`, `KEY --prefix` or `KEY --from-key`, as a key and a
/// range end.
fn key_range(parsed: &Parsed, command: &str) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    let prefix = parsed.switch("prefix", no_env)?;
    let from_key = parsed.switch("from-key", no_env)?;
    if prefix && from_key {
        return Err(CliError::Usage(format!(
            "{command}: --prefix and --from-key exclude each other"
        )));
    }
    match (parsed.positionals.as_slice(), prefix || from_key) {
        ([key], false) => Ok((key.as_bytes().to_vec(), Vec::new())),
        // etcdctl: an empty prefix, or from an empty key, means every key.
        ([key], true) if key.is_empty() => Ok((vec![0], vec![0])),
        ([key], true) if from_key => Ok((key.as_bytes().to_vec(), vec![0])),
        ([key], true) => Ok((key.as_bytes().to_vec(), prefix_range_end(key.as_bytes()))),
        ([key, end], false) => Ok((key.as_bytes().to_vec(), end.as_bytes().to_vec())),
        ([_, _], true) => Err(CliError::Usage(format!(
            "{command}: --prefix or --from-key and RANGE_END exclude each other"
        ))),
        _ => Err(CliError::Usage(format!("{command} takes KEY and an optional RANGE_END"))),
    }
}

/// A failed operation as one line. A compacted revision is named: the
/// server's error carries no number, so the member's status supplies it.
pub fn op_failed(client: &mut Client, error: ClientError) -> CliError {
    if error.code() == Some(ErrorCode::Compacted)
        && let Ok(status) = client.status()
    {
        return CliError::Failed(format!(
            "{error}: the oldest revision kept is {} (compact revision {})",
            status.compact_revision + 1,
            status.compact_revision
        ));
    }
    failed(error)
}

/// A failed write that may name an old revision (txn, compaction): a
/// write whose outcome is unknown says so, anything else as `op_failed`.
pub fn write_op_failed(client: &mut Client, error: ClientError) -> CliError {
    if error.outcome_unknown() {
        return write_failed(error);
    }
    op_failed(client, error)
}

/// The key flags of `watch`, which takes the same `KEY [RANGE_END]` forms.
pub fn watch_range(parsed: &Parsed) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    key_range(parsed, "watch")
}
