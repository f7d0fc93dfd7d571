//! `ember serve`: run a node with etcd's flags (see `server::config`).

use super::CliError;
use crate::flags::{Parsed, process_env};
use crate::server::{self, Config};

pub fn run(parsed: &Parsed) -> Result<(), CliError> {
    if let Some(extra) = parsed.positionals.first() {
        return Err(CliError::Usage(format!("serve takes no arguments, got '{extra}'")));
    }
    let config =
        Config::from_parsed(parsed, process_env).map_err(|e| CliError::Usage(e.to_string()))?;
    server::serve(config).map_err(|e| match e {
        server::ServeError::Removed(text) => CliError::MemberRemoved(text),
        e => CliError::Failed(e.to_string()),
    })
}
