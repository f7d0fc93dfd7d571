//! The `ember` command: `serve` runs a node, every other subcommand is a client
//! that mirrors etcdctl.
//!
//! Owns: argument parsing, help texts, output formats and exit codes (0 done,
//! 1 the operation failed, 2 the command line is wrong, 3 a write's outcome
//! is unknown).
//!
//! Must not touch: protocol internals beyond the client API, or any node state
//! except through `server`'s entry point.

pub use crate::flags as args;
pub mod alarm;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod completion;
pub mod debug;
pub mod endpoint;
pub mod format;
pub mod kv;
pub mod lease;
pub mod output;
pub mod serve;
pub mod snapshot;
pub mod txn;
pub mod watch;

use std::process::ExitCode;

use args::{Flag, Parsed, UsageError, no_env};

/// Exit code of a command whose operation failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that does not fit (unknown command or flag).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a write that may or may not have been applied (its answer
/// was lost, or no answer came before the deadline): apart from 1, so a
/// script never takes a write that may have happened for one that did not.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;
/// Exit code of `serve` for a member removed from the cluster: apart from
/// a failure, so a supervisor can be told not to restart it
/// (systemd: `RestartPreventExitStatus=4`).
pub const EXIT_MEMBER_REMOVED: u8 = 4;

/// Flags every command accepts, before or after the command name.
const GLOBAL_FLAGS: &[Flag] = &[
    Flag {
        name: "log-level",
        takes_value: true,
        help: "error, warn, info, debug or trace (env EMBER_LOG)",
    },
    Flag { name: "help", takes_value: false, help: "show help for the command" },
    Flag { name: "h", takes_value: false, help: "same as --help" },
    Flag { name: "version", takes_value: false, help: "print the version" },
    Flag {
        name: "endpoints",
        takes_value: true,
        help: "client commands: host:port,... (env EMBER_ENDPOINTS; default 127.0.0.1:7379)",
    },
    Flag {
        name: "dial-timeout",
        takes_value: true,
        help: "client commands: time to connect to one endpoint \
               (env EMBER_DIAL_TIMEOUT; default 2s)",
    },
    Flag {
        name: "command-timeout",
        takes_value: true,
        help: "client commands: time for one request, failovers included \
               (env EMBER_COMMAND_TIMEOUT; default 5s)",
    },
    Flag {
        name: "w",
        takes_value: true,
        help: "client commands: output format simple, json, fields or table (env EMBER_W)",
    },
    Flag { name: "write-out", takes_value: true, help: "same as -w (env EMBER_WRITE_OUT)" },
    Flag {
        name: "user",
        takes_value: true,
        help: "client commands: log in as NAME[:PASSWORD] (env EMBER_USER)",
    },
    Flag {
        name: "password",
        takes_value: true,
        help: "client commands: the password of --user (env EMBER_PASSWORD; asked when missing)",
    },
    Flag {
        name: "cacert",
        takes_value: true,
        help: "client commands: speak TLS, checking the server against this CA bundle \
               (env EMBER_CACERT)",
    },
    Flag {
        name: "cert",
        takes_value: true,
        help: "client commands: TLS client certificate (env EMBER_CERT)",
    },
    Flag { name: "key", takes_value: true, help: "client commands: key of --cert (env EMBER_KEY)" },
    Flag {
        name: "insecure-skip-tls-verify",
        takes_value: false,
        help: "client commands: speak TLS without checking the server's certificate \
               (anyone on the path can read and change the traffic; \
               env EMBER_INSECURE_SKIP_TLS_VERIFY)",
    },
];

/// What a command's `run` reports when it does not succeed.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong: exit 2 with a usage line.
    Usage(String),
    /// The operation failed: exit 1 with one line naming the cause.
    Failed(String),
    /// A write may or may not have been applied: exit 3 with one line
    /// saying so and why.
    OutcomeUnknown(String),
    /// `serve` of a member removed from the cluster: exit 4, saying how to
    /// rejoin.
    MemberRemoved(String),
}

impl From<UsageError> for CliError {
    fn from(err: UsageError) -> CliError {
        CliError::Usage(err.to_string())
    }
}

/// One subcommand of `ember`.
struct Command {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    examples: &'static str,
    flags: &'static [Flag],
    run: fn(&Parsed) -> Result<(), CliError>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        summary: "show the commands, or the help of one command",
        usage: "ember help [COMMAND]",
        examples: "ember help\nember help version",
        flags: &[],
        run: run_help,
    },
    Command {
        name: "debug",
        summary: "inspect a data directory: every WAL record and the recovery verdict",
        usage: "ember debug wal [DATA-DIR]",
        examples: "ember debug wal /var/lib/ember\nember debug wal --data-dir node1.ember",
        flags: &[Flag {
            name: "data-dir",
            takes_value: true,
            help: "data directory when none is given (default default.ember)",
        }],
        run: debug::run,
    },
    Command {
        name: "serve",
        summary: "run a node (alone, or as a member of a cluster)",
        usage: "ember serve [FLAGS]",
        examples: "ember serve\nember serve --name n1 --data-dir n1.ember \\\n  --listen-client-urls http://10.0.0.1:2379 --listen-peer-urls http://10.0.0.1:2380 \\\n  --initial-cluster n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380",
        flags: crate::server::config::SERVE_FLAGS,
        run: serve::run,
    },
    Command {
        name: "version",
        summary: "print the version",
        usage: "ember version",
        examples: "ember version\nember --version",
        flags: &[],
        run: run_version,
    },
    Command {
        name: "put",
        summary: "write a key; prints OK",
        usage: "ember put KEY [VALUE] [--lease HEX_ID] [--prev-kv] [--ignore-value] [--ignore-lease]",
        examples: "ember put greeting hello\n\
                   echo -n hello | ember put greeting\n\
                   ember put greeting hi --prev-kv -w json\n\
                   ember --endpoints 10.0.0.1:7379,10.0.0.2:7379 put k v",
        flags: kv::PUT_FLAGS,
        run: kv::run_put,
    },
    Command {
        name: "get",
        summary: "read a key or a range; prints each key and value on two lines",
        usage: "ember get KEY [RANGE_END] [--prefix|--from-key] [--rev N] [--limit N] \
                [--sort-by TARGET --order ORDER] [--keys-only|--count-only|--print-value-only] \
                [--consistency l|s] [--min/max-mod/create-revision N]",
        examples: "ember get greeting\n\
                   ember get --prefix /config/ --limit 10 --sort-by modify --order descend\n\
                   ember get a z --rev 42 -w json\n\
                   ember get '' --prefix --keys-only",
        flags: kv::GET_FLAGS,
        run: kv::run_get,
    },
    Command {
        name: "del",
        summary: "delete a key or a range; prints how many keys were deleted",
        usage: "ember del KEY [RANGE_END] [--prefix|--from-key] [--prev-kv]",
        examples: "ember del greeting\nember del --prefix /config/ --prev-kv",
        flags: kv::DEL_FLAGS,
        run: kv::run_del,
    },
    Command {
        name: "txn",
        summary: "a transaction from stdin: compares, blank line, success ops, blank line, failure ops",
        usage: "ember txn [-i] < FILE",
        examples: "ember txn < transaction.txt\n\
                   printf 'mod(\"k\") = \"0\"\\n\\nput k v\\n\\nget k\\n' | ember txn\n\
                   ember txn -i\n\
                   compare lines: value(\"k\") = \"v\", version(\"k\") > \"1\", create(\"k\") < \"9\", \
                   mod(\"k\") != \"4\", lease(\"k\") = \"694d\"",
        flags: txn::TXN_FLAGS,
        run: txn::run_txn,
    },
    Command {
        name: "watch",
        summary: "print changes to a key or range as they happen; optionally run a command per event",
        usage: "ember watch KEY [RANGE_END] [--prefix|--from-key] [--rev N] [--prev-kv] \
                [--progress-notify] [-- COMMAND ARGS...]",
        examples: "ember watch greeting\n\
                   ember watch --prefix /config/ --rev 1 --prev-kv\n\
                   ember watch /config/reload -- sh -c 'echo \"$EMBER_WATCH_EVENT_TYPE $EMBER_WATCH_KEY=$EMBER_WATCH_VALUE\"'",
        flags: watch::WATCH_FLAGS,
        run: watch::run_watch,
    },
    Command {
        name: "lease",
        summary: "grant, revoke, inspect, list and keep alive leases (ids in hex)",
        usage: "ember lease grant TTL [--id HEX] | revoke ID | timetolive ID [--keys] | list | \
                keep-alive [--once] ID  [-w simple|json|fields|table]",
        examples: "ember lease grant 60\n\
                   ember put --lease 694d77aa9e38260f session/n1 up\n\
                   ember lease keep-alive 694d77aa9e38260f\n\
                   ember lease timetolive 694d77aa9e38260f --keys -w json\n\
                   ember lease list\n\
                   ember lease revoke 694d77aa9e38260f",
        flags: lease::LEASE_FLAGS,
        run: lease::run_lease,
    },
    Command {
        name: "compaction",
        summary: "drop the history before a revision",
        usage: "ember compaction REVISION [--physical]",
        examples: "ember compaction 1234\nember compaction 1234 --physical",
        flags: cluster::COMPACTION_FLAGS,
        run: cluster::run_compaction,
    },
    Command {
        name: "member",
        summary: "list, add, remove, update or promote the members of the cluster",
        usage: "ember member list [-w simple|json|fields|table]\n\
                ember member add NAME --peer-urls=URL[,URL...] [--learner]\n\
                ember member remove ID\n\
                ember member update ID --peer-urls=URL[,URL...]\n\
                ember member promote ID",
        examples: "ember member list -w table\n\
                   ember member add pi-4 --peer-urls=http://10.0.0.4:7380\n\
                   ember member add pi-5 --peer-urls=http://10.0.0.5:7380 --learner\n\
                   ember member promote 8e9e05c52164694d\n\
                   ember member update 8e9e05c52164694d --peer-urls=http://10.0.0.9:7380\n\
                   ember member remove 8e9e05c52164694d",
        flags: cluster::MEMBER_FLAGS,
        run: cluster::run_member,
    },
    Command {
        name: "user",
        summary: "add, delete, inspect and list users, change passwords, grant and revoke roles",
        usage: "ember user add NAME[:PASSWORD] [--new-user-password P] [--no-password] [--interactive=false]\n\
                ember user delete NAME | get NAME [--detail] | list\n\
                ember user passwd NAME [--new-user-password P] [--interactive=false]\n\
                ember user grant-role NAME ROLE | revoke-role NAME ROLE",
        examples: "ember user add root\n\
                   ember user add alice --new-user-password s3cret\n\
                   ember user grant-role alice app\n\
                   ember --user root:pw user get alice --detail -w json",
        flags: auth::USER_FLAGS,
        run: auth::run_user,
    },
    Command {
        name: "role",
        summary: "add, delete, inspect and list roles; grant and revoke key permissions",
        usage: "ember role add NAME | delete NAME | get NAME | list\n\
                ember role grant-permission NAME read|write|readwrite KEY [END] [--prefix|--from-key]\n\
                ember role revoke-permission NAME KEY [END] [--prefix|--from-key]",
        examples: "ember role add app\n\
                   ember role grant-permission app readwrite /app/ --prefix\n\
                   ember role grant-permission app read /config --from-key\n\
                   ember role get app -w table",
        flags: auth::ROLE_FLAGS,
        run: auth::run_role,
    },
    Command {
        name: "auth",
        summary: "turn access control on or off, or show whether it is on",
        usage: "ember auth enable|disable|status",
        examples: "ember user add root && ember user grant-role root root && ember auth enable\n\
                   ember --user root auth status\n\
                   ember --user root:pw auth disable",
        flags: &[],
        run: auth::run_auth,
    },
    Command {
        name: "endpoint",
        summary: "status, health or keyspace hash of each endpoint",
        usage: "ember endpoint status|health|hashkv [--cluster] [--rev N] [-w simple|json|fields|table]",
        examples: "ember endpoint status -w table\n\
                   ember --endpoints a:7379 endpoint health --cluster\n\
                   ember endpoint hashkv --cluster --rev 42",
        flags: endpoint::ENDPOINT_FLAGS,
        run: endpoint::run_endpoint,
    },
    Command {
        name: "alarm",
        summary: "list the alarms raised in the cluster, or clear them all",
        usage: "ember alarm list|disarm [-w simple|json|fields]",
        examples: "ember alarm list\nember alarm list -w json\nember --user root alarm disarm",
        flags: &[],
        run: alarm::run_alarm,
    },
    Command {
        name: "snapshot",
        summary: "save a backup from a member, show a backup's status, restore one",
        usage: "ember snapshot save FILE | status FILE [-w simple|json|fields|table] | \
                restore FILE --name N --initial-cluster N=URL,... --initial-cluster-token T \
                --initial-advertise-peer-urls URL --data-dir DIR",
        examples: "ember --endpoints 10.0.0.2:7379 snapshot save backup.db\n\
                   ember snapshot status backup.db -w table\n\
                   ember snapshot restore backup.db --name a --data-dir a.ember \
                   --initial-cluster a=http://10.0.0.1:7380 --initial-cluster-token new \
                   --initial-advertise-peer-urls http://10.0.0.1:7380",
        flags: snapshot::SNAPSHOT_FLAGS,
        run: snapshot::run_snapshot,
    },
    Command {
        name: "move-leader",
        summary: "hand the leadership to another voter",
        usage: "ember move-leader MEMBER_ID (hex, as member list prints it)",
        examples: "ember --endpoints a:7379,b:7379,c:7379 move-leader 8e9e05c52164694d",
        flags: &[],
        run: snapshot::run_move_leader,
    },
    Command {
        name: "defrag",
        summary: "snapshot each member now and release the WAL the snapshot covers",
        usage: "ember defrag [--cluster]",
        examples: "ember defrag\nember --endpoints a:7379 defrag --cluster",
        flags: snapshot::DEFRAG_FLAGS,
        run: snapshot::run_defrag,
    },
    Command {
        name: "completion",
        summary: "print a shell completion script",
        usage: "ember completion bash|zsh",
        examples: "ember completion bash > /etc/bash_completion.d/ember\n\
                   ember completion zsh > \"${fpath[1]}/_ember\"",
        flags: &[],
        run: run_completion,
    },
    Command {
        name: "bench",
        summary: "closed-loop load generator; prints one op=.. line",
        usage: "ember bench put|get [--serializable] --clients C --conns K --total N \
                --key-size 8 --val-size V --keyspace S",
        examples: "ember bench put --clients 64 --conns 8 --total 100000 --val-size 256 --keyspace 100000\n\
                   ember bench get --serializable --clients 64 --conns 8 --total 100000 --keyspace 10000",
        flags: bench::BENCH_FLAGS,
        run: bench::run_bench,
    },
];

/// Runs the command line `args` (without the program name).
pub fn run(args: &[String]) -> ExitCode {
    match dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("ember: {message}");
            eprintln!("usage: ember [--log-level LEVEL] COMMAND [ARGS...]  (see 'ember help')");
            ExitCode::from(EXIT_USAGE)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("ember: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(CliError::OutcomeUnknown(message)) => {
            eprintln!("ember: {message}");
            ExitCode::from(EXIT_OUTCOME_UNKNOWN)
        }
        Err(CliError::MemberRemoved(message)) => {
            eprintln!("ember: {message}");
            ExitCode::from(EXIT_MEMBER_REMOVED)
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), CliError> {
    let Some(command_at) = command_position(args) else {
        return run_without_command(args);
    };
    let name = args[command_at].as_str();
    let command =
        find_command(name).ok_or_else(|| CliError::Usage(format!("unknown command '{name}'")))?;
    let flags: Vec<Flag> = GLOBAL_FLAGS.iter().chain(command.flags).copied().collect();
    let mut rest: Vec<String> = args[..command_at].to_vec();
    rest.extend_from_slice(&args[command_at + 1..]);
    let parsed = args::parse(&rest, &flags)?;
    init_logging(&parsed)?;
    if parsed.switch("help", no_env)? || parsed.switch("h", no_env)? {
        print!("{}", command_help(command));
        return Ok(());
    }
    (command.run)(&parsed)
}

/// `ember`, `ember --version` and `ember --help` name no command.
fn run_without_command(args: &[String]) -> Result<(), CliError> {
    let parsed = args::parse(args, GLOBAL_FLAGS)?;
    if parsed.switch("version", no_env)? {
        return run_version(&parsed);
    }
    if parsed.switch("help", no_env)? || parsed.switch("h", no_env)? {
        print!("{}", overview());
        return Ok(());
    }
    Err(CliError::Usage("no command given".to_string()))
}

/// Index of the first argument that is neither a global flag nor its value.
fn command_position(args: &[String]) -> Option<usize> {
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        if !arg.starts_with('-') {
            return Some(index);
        }
        let name = arg.trim_start_matches('-');
        let takes_value = GLOBAL_FLAGS.iter().any(|f| f.name == name && f.takes_value);
        index += if takes_value { 2 } else { 1 };
    }
    None
}

fn find_command(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// `--log-level` wins over `EMBER_LOG`; the default is `info`.
fn init_logging(parsed: &Parsed) -> Result<(), CliError> {
    let text = parsed.value("log-level", no_env).or_else(|| std::env::var("EMBER_LOG").ok());
    let level = match text {
        None => log::LevelFilter::Info,
        Some(text) => crate::logger::parse_level(&text).ok_or(UsageError::BadValue {
            flag: "log-level",
            value: text,
            expected: "off, error, warn, info, debug or trace",
        })?,
    };
    crate::logger::init(level);
    Ok(())
}

fn run_version(_: &Parsed) -> Result<(), CliError> {
    println!("ember {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}

fn run_help(parsed: &Parsed) -> Result<(), CliError> {
    match parsed.positionals.as_slice() {
        [] => print!("{}", overview()),
        [name] => {
            let command = find_command(name)
                .ok_or_else(|| CliError::Usage(format!("unknown command '{name}'")))?;
            print!("{}", command_help(command));
        }
        _ => return Err(CliError::Usage("help takes at most one command".to_string())),
    }
    Ok(())
}

fn run_completion(parsed: &Parsed) -> Result<(), CliError> {
    let commands: Vec<completion::Completable> = COMMANDS
        .iter()
        .map(|c| completion::Completable {
            name: c.name,
            flags: c.flags.iter().map(|f| f.name).collect(),
        })
        .collect();
    let globals: Vec<&str> = GLOBAL_FLAGS.iter().map(|f| f.name).collect();
    match parsed.positionals.as_slice() {
        [shell] if shell == "bash" => print!("{}", completion::bash(&commands, &globals)),
        [shell] if shell == "zsh" => print!("{}", completion::zsh(&commands, &globals)),
        _ => return Err(CliError::Usage("completion takes bash or zsh".to_string())),
    }
    Ok(())
}

fn overview() -> String {
    let mut text = format!(
        "ember {}: a small etcd for edge clusters\n\nusage: ember [--log-level LEVEL] COMMAND [ARGS...]\n\ncommands:\n",
        env!("CARGO_PKG_VERSION")
    );
    for command in COMMANDS {
        text.push_str(&format!("  {:<12} {}\n", command.name, command.summary));
    }
    text.push_str("\nglobal flags:\n");
    push_flags(&mut text, GLOBAL_FLAGS);
    text.push_str(EXIT_CODES_HELP);
    text.push_str("\n'ember help COMMAND' or 'ember COMMAND --help' shows one command.\n");
    text
}

const EXIT_CODES_HELP: &str = "\nexit codes:\n  \
    0  done\n  \
    1  the operation failed (a write that fails this way was not applied)\n  \
    2  the command line is wrong\n  \
    3  the write may or may not have been applied: its answer was lost or did\n     \
    not come in time; read the key to find out before retrying\n  \
    4  (serve) this member was removed from the cluster; it will not start again\n";

fn command_help(command: &Command) -> String {
    let mut text = format!("{}\n\nusage: {}\n", command.summary, command.usage);
    if !command.flags.is_empty() {
        text.push_str(if command.name == "serve" {
            "\nflags (each also read from EMBER_<FLAG>, as EMBER_DATA_DIR):\n"
        } else {
            "\nflags (never read from the environment: only the global ones are):\n"
        });
        push_flags(&mut text, command.flags);
    }
    text.push_str("\nexamples:\n");
    for line in command.examples.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn push_flags(text: &mut String, flags: &[Flag]) {
    for flag in flags {
        // One-letter flags are written with one dash, as users type them.
        let dashes = if flag.name.len() == 1 { "-" } else { "--" };
        let spelled = if flag.takes_value {
            format!("{dashes}{} VALUE", flag.name)
        } else {
            format!("{dashes}{}", flag.name)
        };
        text.push_str(&format!("  {spelled:<28} {}\n", flag.help));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_is_found_behind_global_flags() {
        assert_eq!(command_position(&strings(&["--log-level", "debug", "help"])), Some(2));
        assert_eq!(command_position(&strings(&["--log-level=debug", "help"])), Some(1));
        assert_eq!(command_position(&strings(&["--version"])), None);
    }

    #[test]
    fn unknown_commands_and_flags_are_usage_errors() {
        assert!(matches!(dispatch(&strings(&["frobnicate"])), Err(CliError::Usage(_))));
        assert!(matches!(dispatch(&strings(&["version", "--nope"])), Err(CliError::Usage(_))));
        assert!(matches!(dispatch(&[]), Err(CliError::Usage(_))));
        assert!(matches!(
            dispatch(&strings(&["--log-level", "loud", "version"])),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn every_command_has_help_with_examples() {
        for command in COMMANDS {
            let help = command_help(command);
            assert!(help.contains(command.usage), "{}", command.name);
            assert!(!command.examples.is_empty(), "{} has no examples", command.name);
        }
    }
}
