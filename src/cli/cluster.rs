//! `ember compaction REV` and `ember member list`.
//!
//! `compaction` drops the history before REV; a revision already compacted
//! is named with the current compact revision. `member list` prints the
//! members the answering node knows, in etcdctl's four formats.

use super::CliError;
use super::args::{Flag, Parsed, process_env};
use super::format::{self, emit};
use super::kv::op_failed;
use super::output::{connect, failed};

pub const COMPACTION_FLAGS: &[Flag] = &[Flag {
    name: "physical",
    takes_value: false,
    help: "return only once the old history is removed from the store",
}];

pub const MEMBER_FLAGS: &[Flag] = &[Flag {
    name: "consistency",
    takes_value: true,
    help: "l (ask the leader's view, default) or s (this member's own view)",
}];

pub fn run_compaction(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format_no_table(parsed, "compaction")?;
    let [text] = parsed.positionals.as_slice() else {
        return Err(CliError::Usage("compaction takes one REVISION".to_string()));
    };
    let revision: i64 = text
        .parse()
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| CliError::Usage(format!("compaction: {text:?} is not a revision")))?;
    let physical = parsed.switch("physical", process_env)?;
    let mut client = connect(parsed)?;
    let response = client.compact(revision, physical).map_err(|e| op_failed(&mut client, e))?;
    emit(&format::compaction(format, &response.header, revision))
}

pub fn run_member(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    match parsed.positionals.as_slice() {
        [what] if what == "list" => {}
        _ => return Err(CliError::Usage("member takes 'list'".to_string())),
    }
    let linearizable = match parsed.value("consistency", process_env).as_deref() {
        None | Some("l") => true,
        Some("s") => false,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "invalid value {other:?} for --consistency: expected l or s"
            )));
        }
    };
    let mut client = connect(parsed)?;
    let response = client.member_list(linearizable).map_err(failed)?;
    emit(&format::member_list(format, &response))
}
