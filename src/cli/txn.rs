//! `ember txn`: a transaction written as etcdctl reads one from stdin.
//!
//! ```text
//! mod("config") > "0"          <- compares, one per line
//! value("owner") = "me"
//!                              <- blank line
//! put config v2                <- success ops: put, get, del with their flags
//! get owner
//!                              <- blank line
//! get config                   <- failure ops
//! ```
//!
//! A compare is `TARGET("key") OP "value"` with TARGET one of version (ver),
//! create (c), mod (m), value (val) or lease, and OP one of `=`, `!=`, `<`,
//! `>`. Versions and revisions are decimal, leases hex, as etcdctl. With `-i`
//! each part is asked for on the terminal. Parsing is pure (`parse_txn`).

use std::io::BufRead;

use super::CliError;
use super::format::{self, emit};
use super::kv::{self, DEL_FLAGS, GET_FLAGS, PUT_FLAGS, write_op_failed};
use super::output::connect;
use crate::flags::{self as args, Flag, Parsed};
use crate::proto::{Compare, CompareResult, CompareTarget, RequestOp, TXN_ITEMS_MAX, TxnRequest};

pub const TXN_FLAGS: &[Flag] = &[
    Flag {
        name: "interactive",
        takes_value: false,
        help: "ask for compares, success and failure ops on the terminal",
    },
    Flag { name: "i", takes_value: false, help: "same as --interactive" },
];

/// Longest line `txn` reads; a compare or op line beyond it is a typo.
pub const TXN_LINE_BYTES_MAX: usize = 1 << 20;

pub fn run_txn(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format_no_table(parsed, "txn")?;
    if !parsed.positionals.is_empty() {
        return Err(CliError::Usage("txn takes no arguments; it reads stdin".to_string()));
    }
    let interactive =
        parsed.switch("interactive", args::no_env)? || parsed.switch("i", args::no_env)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut sections = Vec::new();
    for prompt in
        ["compares:", "success requests (get, put, del):", "failure requests (get, put, del):"]
    {
        if interactive {
            println!("{prompt}");
        }
        sections.push(read_section(&mut input)?);
    }
    let request = parse_txn(&sections[0], &sections[1], &sections[2])?;
    let mut client = connect(parsed)?;
    let response = client.txn(request).map_err(|e| write_op_failed(&mut client, e))?;
    emit(&format::txn(format, &response))
}

/// Lines up to the next blank line or the end of input.
fn read_section<R: BufRead>(input: &mut R) -> Result<Vec<String>, CliError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let limit = TXN_LINE_BYTES_MAX as u64 + 1;
        let read = <&mut R as std::io::Read>::take(&mut *input, limit)
            .read_line(&mut line)
            .map_err(|error| CliError::Failed(format!("reading the transaction: {error}")))?;
        if line.len() > TXN_LINE_BYTES_MAX {
            return Err(CliError::Usage(format!(
                "txn: a line is longer than {TXN_LINE_BYTES_MAX} bytes"
            )));
        }
        let line = line.trim();
        if read == 0 || line.is_empty() {
            return Ok(lines);
        }
        if lines.len() >= TXN_ITEMS_MAX {
            return Err(CliError::Usage(format!("txn: more than {TXN_ITEMS_MAX} lines in a part")));
        }
        lines.push(line.to_string());
    }
}

/// The transaction from its three parts.
pub fn parse_txn(
    compares: &[String],
    success: &[String],
    failure: &[String],
) -> Result<TxnRequest, CliError> {
    Ok(TxnRequest {
        compare: compares.iter().map(|l| parse_compare(l)).collect::<Result<_, _>>()?,
        success: success.iter().map(|l| parse_op(l)).collect::<Result<_, _>>()?,
        failure: failure.iter().map(|l| parse_op(l)).collect::<Result<_, _>>()?,
    })
}

fn malformed(line: &str, why: &str) -> CliError {
    CliError::Usage(format!("txn: malformed comparison {line:?}: {why}"))
}

/// `TARGET("key") OP "value"`.
pub fn parse_compare(line: &str) -> Result<Compare, CliError> {
    let (target, rest) =
        line.split_once('(').ok_or_else(|| malformed(line, "expected TARGET(\"KEY\")"))?;
    let (key, rest) =
        quoted(rest.trim_start()).ok_or_else(|| malformed(line, "expected a quoted key"))?;
    let rest = rest.trim_start().strip_prefix(')').ok_or_else(|| malformed(line, "expected )"))?;
    let mut words = rest.trim_start().splitn(2, char::is_whitespace);
    let result = match words.next() {
        Some("=") | Some("==") => CompareResult::Equal,
        Some("!=") => CompareResult::NotEqual,
        Some("<") => CompareResult::Less,
        Some(">") => CompareResult::Greater,
        _ => return Err(malformed(line, "expected =, !=, < or >")),
    };
    let value_text = words.next().unwrap_or("").trim();
    let value = match quoted(value_text) {
        Some((value, rest)) if rest.trim().is_empty() => value,
        Some(_) => return Err(malformed(line, "text after the value")),
        None if !value_text.is_empty() => value_text.as_bytes().to_vec(),
        None => return Err(malformed(line, "expected a value")),
    };
    let target = compare_target(target.trim(), &value).map_err(|why| malformed(line, &why))?;
    Ok(Compare { result, target, key, range_end: Vec::new() })
}

fn compare_target(name: &str, value: &[u8]) -> Result<CompareTarget, String> {
    let text = String::from_utf8_lossy(value);
    let decimal = || text.parse::<i64>().map_err(|_| format!("{text:?} is not a number"));
    match name.to_ascii_lowercase().as_str() {
        "ver" | "version" => Ok(CompareTarget::Version(decimal()?)),
        "c" | "create" => Ok(CompareTarget::Create(decimal()?)),
        "m" | "mod" => Ok(CompareTarget::Mod(decimal()?)),
        "val" | "value" => Ok(CompareTarget::Value(value.to_vec())),
        "lease" => u64::from_str_radix(text.trim_start_matches("0x"), 16)
            .map(|id| CompareTarget::Lease(id as i64))
            .map_err(|_| format!("{text:?} is not a hex lease id")),
        other => {
            Err(format!("unknown target {other:?}: expected version, create, mod, value or lease"))
        }
    }
}

/// A double-quoted string with backslash escapes at the start of `text`:
/// its bytes and the text after the closing quote.
fn quoted(text: &str) -> Option<(Vec<u8>, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[at + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                let byte = match escaped {
                    'n' => b'\n',
                    't' => b'\t',
                    'r' => b'\r',
                    '0' => 0,
                    other => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                        continue;
                    }
                };
                out.push(byte);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    None
}

/// Splits a line into words as a shell would for plain quoting: spaces
/// separate, single and double quotes group, backslash escapes in double
/// quotes and outside.
pub fn words(line: &str) -> Result<Vec<String>, CliError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let text: String = chars.by_ref().take_while(|c| *c != '\'').collect();
                word.get_or_insert_default().push_str(&text);
            }
            '"' => {
                let current = word.get_or_insert_default();
                loop {
                    match chars.next() {
                        None => {
                            return Err(CliError::Usage(format!(
                                "txn: unclosed quote in {line:?}"
                            )));
                        }
                        Some('"') => break,
                        Some('\\') => current.extend(chars.next()),
                        Some(c) => current.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_default().extend(chars.next()),
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// `put KEY VALUE [flags]`, `get KEY [END] [flags]` or `del KEY [END] [flags]`.
pub fn parse_op(line: &str) -> Result<RequestOp, CliError> {
    let words = words(line)?;
    let Some((verb, rest)) = words.split_first() else {
        return Err(CliError::Usage("txn: empty operation".to_string()));
    };
    let bad = |error: CliError| match error {
        CliError::Usage(why) => CliError::Usage(format!("txn: {line:?}: {why}")),
        other => other,
    };
    let op = match verb.to_ascii_lowercase().as_str() {
        "put" => {
            let parsed = args::parse(rest, PUT_FLAGS).map_err(CliError::from)?;
            let no_stdin = || Err(CliError::Usage("put in a txn needs KEY and VALUE".to_string()));
            RequestOp::Put(kv::put_request(&parsed, no_stdin).map_err(bad)?)
        }
        "get" => {
            let parsed = args::parse(rest, GET_FLAGS).map_err(CliError::from)?;
            RequestOp::Range(kv::get_request(&parsed).map_err(bad)?)
        }
        "del" | "delete" => {
            let parsed = args::parse(rest, DEL_FLAGS).map_err(CliError::from)?;
            RequestOp::DeleteRange(kv::del_request(&parsed).map_err(bad)?)
        }
        other => {
            return Err(CliError::Usage(format!(
                "txn: unknown operation {other:?} in {line:?}: expected put, get or del"
            )));
        }
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compare_target_parses() {
        let c = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(
            (c.key, c.result, c.target),
            (b"key1".to_vec(), CompareResult::Greater, CompareTarget::Mod(0))
        );
        let c = parse_compare(r#"value("a b") = "x \"y\"""#).unwrap();
        assert_eq!((c.key, c.target), (b"a b".to_vec(), CompareTarget::Value(b"x \"y\"".to_vec())));
        assert_eq!(parse_compare(r#"ver("k") != "3""#).unwrap().target, CompareTarget::Version(3));
        assert_eq!(parse_compare(r#"c("k") < "7""#).unwrap().target, CompareTarget::Create(7));
        assert_eq!(parse_compare(r#"lease("k") = "1f""#).unwrap().target, CompareTarget::Lease(31));
        assert_eq!(parse_compare(r#"version("k") = 2"#).unwrap().target, CompareTarget::Version(2));
    }

    #[test]
    fn malformed_compares_are_usage_errors() {
        for line in [
            r#"mod(key) > "0""#,
            r#"size("k") = "1""#,
            r#"mod("k") ~ "1""#,
            r#"mod("k") = "x""#,
            "mod",
            r#"mod("k") ="#,
        ] {
            assert!(matches!(parse_compare(line), Err(CliError::Usage(_))), "{line}");
        }
    }

    #[test]
    fn ops_take_their_commands_flags() {
        let RequestOp::Range(get) = parse_op("get k --prefix --limit 2").unwrap() else { panic!() };
        assert_eq!((get.key, get.range_end, get.limit), (b"k".to_vec(), b"l".to_vec(), 2));
        let RequestOp::Put(put) = parse_op(r#"put k "two words""#).unwrap() else { panic!() };
        assert_eq!(put.value, b"two words");
        let RequestOp::DeleteRange(del) = parse_op("del a z --prev-kv").unwrap() else { panic!() };
        assert_eq!((del.range_end, del.prev_kv), (b"z".to_vec(), true));
        assert!(parse_op("put k").is_err());
        assert!(parse_op("frob k").is_err());
        assert!(parse_op("get k --nope").is_err());
    }

    #[test]
    fn words_follow_shell_quoting() {
        assert_eq!(words(r#"put 'a b' "c \"d\"" e\ f"#).unwrap(), ["put", "a b", "c \"d\"", "e f"]);
        assert!(words("put \"open").is_err());
    }
}
