//! `ember completion bash|zsh`: a shell completion script built from the
//! command table, so it names exactly the commands and flags this build has.
//!
//! Install: `ember completion bash > /etc/bash_completion.d/ember`, or for
//! zsh `ember completion zsh > "${fpath[1]}/_ember"`.

use std::fmt::Write as _;

/// One command and its flags (long names without dashes).
pub struct Completable {
    pub name: &'static str,
    pub flags: Vec<&'static str>,
}

/// A flag as typed: one dash for one letter (`-w`), two otherwise.
fn spell(flag: &str) -> String {
    if flag.len() == 1 { format!("-{flag}") } else { format!("--{flag}") }
}

/// Words that follow a command as its subcommand (`endpoint status`).
fn subcommands(command: &str) -> &'static str {
    match command {
        "endpoint" => "status health",
        "member" => "list add remove update promote",
        "completion" => "bash zsh",
        "bench" => "put get",
        "debug" => "wal",
        "lease" => "grant revoke timetolive list keep-alive",
        _ => "",
    }
}

pub fn bash(commands: &[Completable], global_flags: &[&str]) -> String {
    let names: Vec<&str> = commands.iter().map(|c| c.name).collect();
    let mut cases = String::new();
    for command in commands {
        let flags: Vec<String> = command.flags.iter().map(|f| spell(f)).collect();
        let _ = writeln!(
            cases,
            "        {}) words=\"{} {}\" ;;",
            command.name,
            subcommands(command.name),
            flags.join(" ")
        );
    }
    let globals: Vec<String> = global_flags.iter().map(|f| spell(f)).collect();
    format!(
        r#"# bash completion for ember
_ember() {{
    local cur command word words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    command=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in -*) ;; *) command="$word"; break ;; esac
    done
    if [ -z "$command" ]; then
        words="{names} {globals}"
    else
        case "$command" in
{cases}        *) words="" ;;
        esac
        words="$words {globals}"
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _ember ember
"#,
        names = names.join(" "),
        globals = globals.join(" "),
    )
}

pub fn zsh(commands: &[Completable], global_flags: &[&str]) -> String {
    let mut text = String::from("#compdef ember\n# zsh completion for ember\n_ember() {\n");
    let names: Vec<&str> = commands.iter().map(|c| c.name).collect();
    let globals: Vec<String> = global_flags.iter().map(|f| spell(f)).collect();
    let _ = writeln!(text, "    local -a commands globals\n    commands=({})", names.join(" "));
    let _ = writeln!(text, "    globals=({})", globals.join(" "));
    text.push_str("    local command=\"\" w\n    for w in ${words[2,CURRENT-1]}; do\n");
    text.push_str("        [[ $w != -* ]] && { command=$w; break; }\n    done\n");
    text.push_str("    if [[ -z $command ]]; then\n        compadd -- $commands $globals\n        return\n    fi\n");
    text.push_str("    case $command in\n");
    for command in commands {
        let flags: Vec<String> = command.flags.iter().map(|f| spell(f)).collect();
        let _ = writeln!(
            text,
            "        {}) compadd -- {} {} $globals ;;",
            command.name,
            subcommands(command.name),
            flags.join(" ")
        );
    }
    text.push_str("        *) _files ;;\n    esac\n}\n_ember \"$@\"\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_commands_and_flags() {
        let commands = [Completable { name: "get", flags: vec!["prefix"] }];
        let script = bash(&commands, &["endpoints"]);
        assert!(script.contains("get) words=\" --prefix\""));
        assert!(script.contains("complete -o default -F _ember ember"));
        let script = zsh(&commands, &["endpoints"]);
        assert!(script.starts_with("#compdef ember"));
        assert!(script.contains("get) compadd --  --prefix $globals"));
    }
}
