//! `ember put`, `ember get` and `ember del`: one key or a range, printed the
//! way etcdctl prints them (`OK`; key and value on two lines per key; the
//! number of keys deleted).

use std::io::Write;

use super::CliError;
use super::args::{Flag, Parsed, process_env};
use super::output::{connect, failed, flag_number};
use crate::proto::{DeleteRangeRequest, RangeRequest, prefix_range_end};

pub const PUT_FLAGS: &[Flag] = &[];

pub const GET_FLAGS: &[Flag] = &[
    Flag { name: "prefix", takes_value: false, help: "get every key starting with KEY" },
    Flag { name: "rev", takes_value: true, help: "read at this revision (0: the newest)" },
    Flag {
        name: "serializable",
        takes_value: false,
        help: "answer from the member's own state, without a leader round trip",
    },
    Flag { name: "limit", takes_value: true, help: "most keys to print (0: no limit)" },
];

pub const DEL_FLAGS: &[Flag] =
    &[Flag { name: "prefix", takes_value: false, help: "delete every key starting with KEY" }];

/// `put KEY VALUE`: prints `OK`.
pub fn run_put(parsed: &Parsed) -> Result<(), CliError> {
    let [key, value] = parsed.positionals.as_slice() else {
        return Err(CliError::Usage("put takes KEY and VALUE".to_string()));
    };
    let mut client = connect(parsed)?;
    client.put(key.as_bytes(), value.as_bytes()).map_err(failed)?;
    println!("OK");
    Ok(())
}

/// `get KEY [RANGE_END]`: each key then its value, on lines of their own.
pub fn run_get(parsed: &Parsed) -> Result<(), CliError> {
    let (key, range_end) = key_range(parsed, "get")?;
    let request = RangeRequest {
        key,
        range_end,
        limit: flag_number(parsed, "limit", 0i64)?,
        revision: flag_number(parsed, "rev", 0i64)?,
        serializable: parsed.switch("serializable", process_env)?,
        ..RangeRequest::default()
    };
    if request.limit < 0 || request.revision < 0 {
        return Err(CliError::Usage("--limit and --rev must not be negative".to_string()));
    }
    let mut client = connect(parsed)?;
    let response = client.range(request).map_err(failed)?;
    let mut out = std::io::stdout().lock();
    for kv in &response.kvs {
        let written = out
            .write_all(&kv.key)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.write_all(&kv.value))
            .and_then(|()| out.write_all(b"\n"));
        written.map_err(|error| CliError::Failed(format!("writing the answer: {error}")))?;
    }
    Ok(())
}

/// `del KEY [RANGE_END]`: prints how many keys were deleted.
pub fn run_del(parsed: &Parsed) -> Result<(), CliError> {
    let (key, range_end) = key_range(parsed, "del")?;
    let mut client = connect(parsed)?;
    let request = DeleteRangeRequest { key, range_end, prev_kv: false };
    let response = client.delete_range(request).map_err(failed)?;
    println!("{}", response.deleted);
    Ok(())
}

/// `KEY [RANGE_END]`, or `KEY --prefix`, as a key and a range end.
fn key_range(parsed: &Parsed, command: &str) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    let prefix = parsed.switch("prefix", process_env)?;
    match (parsed.positionals.as_slice(), prefix) {
        ([key], false) => Ok((key.as_bytes().to_vec(), Vec::new())),
        // etcdctl: an empty prefix means every key.
        ([key], true) if key.is_empty() => Ok((vec![0], vec![0])),
        ([key], true) => Ok((key.as_bytes().to_vec(), prefix_range_end(key.as_bytes()))),
        ([key, end], false) => Ok((key.as_bytes().to_vec(), end.as_bytes().to_vec())),
        ([_, _], true) => {
            Err(CliError::Usage(format!("{command}: --prefix and RANGE_END exclude each other")))
        }
        _ => Err(CliError::Usage(format!("{command} takes KEY and an optional RANGE_END"))),
    }
}
