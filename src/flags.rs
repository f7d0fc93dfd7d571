//! Command-line flags with etcd's conventions.
//!
//! A flag is `--name value` or `--name=value`; a switch is `--name` alone (or
//! `--name=true|false`). Everything after a bare `--` is positional. A flag
//! that was not given may fall back to the environment variable
//! `EMBER_<NAME>` (upper case, dashes as underscores), so `--data-dir` reads
//! `EMBER_DATA_DIR`; the command line always wins. Which flags do is the
//! caller's choice, made by the `env` argument of each read: `process_env`
//! for `serve`'s flags and the client commands' global flags, `no_env` for
//! every other flag.

use std::collections::BTreeMap;
use std::fmt;

/// One flag a command accepts.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The name without dashes, as etcd spells it: `data-dir`.
    pub name: &'static str,
    /// Whether the flag takes a value (`--name VALUE`) or is a switch.
    pub takes_value: bool,
    /// One line for `--help`.
    pub help: &'static str,
}

/// A command line that does not fit the command's flags. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    UnknownFlag(String),
    MissingValue(&'static str),
    SwitchWithValue(&'static str, String),
    BadValue { flag: &'static str, value: String, expected: &'static str },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownFlag(name) => write!(f, "unknown flag {name}"),
            UsageError::MissingValue(name) => write!(f, "flag --{name} needs a value"),
            UsageError::SwitchWithValue(name, value) => {
                write!(f, "flag --{name} takes true or false, not {value:?}")
            }
            UsageError::BadValue { flag, value, expected } => {
                write!(f, "invalid value {value:?} for --{flag}: expected {expected}")
            }
        }
    }
}

impl std::error::Error for UsageError {}

/// The flags and positional arguments of one command line.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    pub positionals: Vec<String>,
    /// Where a bare `--` stood: the index in `positionals` of the first
    /// argument after it (`watch KEY -- COMMAND` needs the boundary).
    pub dash_dash_at: Option<usize>,
    /// Invariant: keys are names from the command's `Flag` list.
    values: BTreeMap<&'static str, String>,
}

/// Parses `args` against `flags`. Pure: the environment is read later, by
/// `Parsed::value`, through a function the caller passes in.
pub fn parse(args: &[String], flags: &[Flag]) -> Result<Parsed, UsageError> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            parsed.dash_dash_at = Some(parsed.positionals.len());
            parsed.positionals.extend(rest.by_ref().cloned());
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| short_flag(arg)) else {
            parsed.positionals.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let flag = flags
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| UsageError::UnknownFlag(arg.clone()))?;
        let value = if flag.takes_value {
            match inline {
                Some(value) => value,
                None => rest.next().cloned().ok_or(UsageError::MissingValue(flag.name))?,
            }
        } else {
            switch_value(flag.name, inline)?
        };
        parsed.values.insert(flag.name, value);
    }
    Ok(parsed)
}

/// `-w json` is the one single-dash spelling etcdctl users type daily; any
/// other `-x` is treated as the long flag of the same letters.
fn short_flag(arg: &str) -> Option<&str> {
    let body = arg.strip_prefix('-')?;
    if body.is_empty() || body.starts_with(|c: char| c.is_ascii_digit()) {
        return None; // "-" is stdin by convention and "-5" is a value.
    }
    Some(body)
}

fn switch_value(name: &'static str, inline: Option<String>) -> Result<String, UsageError> {
    match inline.as_deref() {
        None | Some("true") => Ok("true".to_string()),
        Some("false") => Ok("false".to_string()),
        Some(other) => Err(UsageError::SwitchWithValue(name, other.to_string())),
    }
}

/// The environment variable that stands in for a flag: `data-dir` → `EMBER_DATA_DIR`.
pub fn env_name(flag: &str) -> String {
    let mut name = String::from("EMBER_");
    name.extend(flag.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
    name
}

impl Parsed {
    /// The flag's value from the command line, else from `EMBER_<FLAG>` as
    /// looked up by `env`.
    pub fn value(&self, flag: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        self.values.get(flag).cloned().or_else(|| env(&env_name(flag)))
    }

    /// Whether a switch is on, on the command line or in the environment.
    pub fn switch(
        &self,
        flag: &'static str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, UsageError> {
        match self.value(flag, env).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(UsageError::SwitchWithValue(flag, other.to_string())),
        }
    }
}

/// Reads the process environment: the `env` argument of `Parsed::value`
/// for `serve`'s flags and the client commands' global flags.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads nothing: the `env` argument for a client command's own flags. As
/// etcdctl reads only its global flags from `ETCDCTL_*`, a variable left
/// in a shell (`EMBER_PREFIX=1`) must not turn `del KEY` into a prefix
/// delete.
pub fn no_env(_: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag { name: "data-dir", takes_value: true, help: "" },
        Flag { name: "prefix", takes_value: false, help: "" },
        Flag { name: "w", takes_value: true, help: "" },
    ];

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn values_switches_and_positionals() {
        let args = strings(&["get", "--data-dir", "/d", "k", "--prefix", "-w=json"]);
        let parsed = parse(&args, FLAGS).unwrap();
        assert_eq!(parsed.positionals, strings(&["get", "k"]));
        assert_eq!(parsed.value("data-dir", no_env).as_deref(), Some("/d"));
        assert_eq!(parsed.value("w", no_env).as_deref(), Some("json"));
        assert!(parsed.switch("prefix", no_env).unwrap());
    }

    #[test]
    fn everything_after_double_dash_is_positional() {
        let parsed = parse(&strings(&["watch", "k", "--", "echo", "--prefix"]), FLAGS).unwrap();
        assert_eq!(parsed.positionals, strings(&["watch", "k", "echo", "--prefix"]));
        assert!(!parsed.switch("prefix", no_env).unwrap());
    }

    #[test]
    fn environment_fills_in_and_the_command_line_wins() {
        let env = |name: &str| (name == "EMBER_DATA_DIR").then(|| "/from-env".to_string());
        let parsed = parse(&[], FLAGS).unwrap();
        assert_eq!(parsed.value("data-dir", env).as_deref(), Some("/from-env"));
        let parsed = parse(&strings(&["--data-dir=/flag"]), FLAGS).unwrap();
        assert_eq!(parsed.value("data-dir", env).as_deref(), Some("/flag"));
    }

    #[test]
    fn bad_command_lines_name_the_flag() {
        let err = parse(&strings(&["--nope"]), FLAGS).unwrap_err();
        assert_eq!(err.to_string(), "unknown flag --nope");
        let err = parse(&strings(&["--data-dir"]), FLAGS).unwrap_err();
        assert_eq!(err.to_string(), "flag --data-dir needs a value");
        let err = parse(&strings(&["--prefix=maybe"]), FLAGS).unwrap_err();
        assert!(err.to_string().contains("--prefix"));
    }

    #[test]
    fn dash_alone_and_negative_numbers_are_values() {
        let parsed = parse(&strings(&["put", "k", "-", "-5"]), FLAGS).unwrap();
        assert_eq!(parsed.positionals, strings(&["put", "k", "-", "-5"]));
    }

    #[test]
    fn env_names_follow_etcd() {
        assert_eq!(env_name("data-dir"), "EMBER_DATA_DIR");
        assert_eq!(env_name("initial-cluster-token"), "EMBER_INITIAL_CLUSTER_TOKEN");
    }
}
