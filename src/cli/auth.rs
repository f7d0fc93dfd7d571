//! `ember user|role|auth ...`, as etcdctl's commands of the same names, in
//! the four output formats; the global `--user NAME[:PASSWORD]` and
//! `--password` every client command logs in with; and the password prompt.
//!
//! A password comes from `--user NAME:PASSWORD`, `--password`,
//! `EMBER_PASSWORD`, or (for `user add` and `user passwd`)
//! `--new-user-password`; when none is given and stdin is a terminal it is
//! asked for without echo, unless `--interactive=false`, where it is then
//! an error. The renderers are pure (response in, bytes out).

#![allow(unsafe_code)] // switching terminal echo off through libc termios

use std::fmt::Write as _;
use std::io::BufRead;

use super::CliError;
use super::format::{self, Format, JsonObject, emit, json_header, table};
use super::output::{connect, failed, write_failed};
use crate::client::Credentials;
use crate::flags::{Flag, Parsed, no_env, process_env};
use crate::proto::{
    self, AuthStatusResponse, Permission, PermissionType, Request, Response, ResponseHeader,
};

pub const USER_FLAGS: &[Flag] = &[
    Flag { name: "detail", takes_value: false, help: "get: also list each role's permissions" },
    Flag {
        name: "new-user-password",
        takes_value: true,
        help: "add, passwd: the new password (otherwise asked for)",
    },
    Flag {
        name: "interactive",
        takes_value: true,
        help: "add, passwd: ask for the password on a terminal (default true)",
    },
    Flag { name: "no-password", takes_value: false, help: "add: a user without a password" },
];

pub const ROLE_FLAGS: &[Flag] = &[
    Flag { name: "prefix", takes_value: false, help: "grant/revoke-permission: KEY is a prefix" },
    Flag {
        name: "from-key",
        takes_value: false,
        help: "grant/revoke-permission: every key >= KEY",
    },
];

/// Credentials from the global `--user` and `--password` (and
/// `EMBER_USER`, `EMBER_PASSWORD`); `None` when no user is given.
pub fn credentials(parsed: &Parsed) -> Result<Option<Credentials>, CliError> {
    let Some(user) = parsed.value("user", process_env) else { return Ok(None) };
    let (name, inline) = match user.split_once(':') {
        Some((name, password)) => (name.to_string(), Some(password.to_string())),
        None => (user, None),
    };
    if name.is_empty() {
        return Err(CliError::Usage("--user needs a name: NAME[:PASSWORD]".to_string()));
    }
    let password = match inline.or_else(|| parsed.value("password", process_env)) {
        Some(password) => password,
        None => prompt_password(&format!("Password of {name}: "), true)?,
    };
    Ok(Some(Credentials { user: name, password: Some(password), token: None }))
}

pub fn run_user(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    let words: Vec<&str> = parsed.positionals.iter().map(String::as_str).collect();
    let (request, done): (Request, Done) = match words.as_slice() {
        ["add", spec] => {
            let name = spec.split_once(':').map_or(*spec, |(name, _)| name);
            (user_add(parsed, spec)?, Done::Said(format!("User {name} created")))
        }
        ["delete", name] => {
            (user(name, Request::UserDelete), Done::Said(format!("User {name} deleted")))
        }
        ["get", name] => (user(name, Request::UserGet), Done::UserGet(name.to_string())),
        ["list"] => (Request::UserList, Done::Listed),
        ["passwd", name] => {
            let password = new_password(parsed, name)?;
            let r = proto::UserChangePasswordRequest { name: name.to_string(), password };
            (Request::UserChangePassword(r), Done::Said("Password updated".to_string()))
        }
        ["grant-role", name, role] => (
            Request::UserGrantRole(role_of(name, role)),
            Done::Said(format!("Role {role} is granted to user {name}")),
        ),
        ["revoke-role", name, role] => (
            Request::UserRevokeRole(role_of(name, role)),
            Done::Said(format!("Role {role} is revoked from user {name}")),
        ),
        _ => {
            return Err(CliError::Usage(
                "user takes add NAME, delete NAME, get NAME, list, passwd NAME, \
                 grant-role NAME ROLE or revoke-role NAME ROLE"
                    .to_string(),
            ));
        }
    };
    let detail = parsed.switch("detail", no_env)?;
    let mut client = connect(parsed)?;
    let write = request.is_write();
    let response = client.request(&request).map_err(if write { write_failed } else { failed })?;
    if let (Done::UserGet(name), true, Response::UserGet(r)) = (&done, detail, &response) {
        let mut roles = Vec::new();
        for role in &r.roles {
            let got = client.request(&Request::RoleGet(proto::RoleRequest { role: role.clone() }));
            match got.map_err(failed)? {
                answer @ Response::RoleGet(_) => roles.push((role.clone(), answer)),
                _ => return Err(CliError::Failed("unexpected answer to RoleGet".to_string())),
            }
        }
        return emit(&render_user_detail(format, name, &roles));
    }
    emit(&render(format, &done, &response))
}

pub fn run_role(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    let words: Vec<&str> = parsed.positionals.iter().map(String::as_str).collect();
    let role = |name: &str| proto::RoleRequest { role: name.to_string() };
    let (request, done) = match words.as_slice() {
        ["add", name] => (Request::RoleAdd(role(name)), Done::Said(format!("Role {name} created"))),
        ["delete", name] => {
            (Request::RoleDelete(role(name)), Done::Said(format!("Role {name} deleted")))
        }
        ["get", name] => (Request::RoleGet(role(name)), Done::RoleGet(name.to_string())),
        ["list"] => (Request::RoleList, Done::Listed),
        ["grant-permission", name, kind, key, rest @ ..] if rest.len() <= 1 => {
            let perm = permission(parsed, kind, key, rest.first().copied())?;
            let r = proto::RoleGrantPermissionRequest { role: name.to_string(), perm };
            (Request::RoleGrantPermission(r), Done::Said(format!("Role {name} updated")))
        }
        ["revoke-permission", name, key, rest @ ..] if rest.len() <= 1 => {
            let perm = permission(parsed, "read", key, rest.first().copied())?;
            let said = match perm.range_end.is_empty() {
                true => format!("Permission of key {key} is revoked from role {name}"),
                false => format!(
                    "Permission of range [{key}, {}) is revoked from role {name}",
                    String::from_utf8_lossy(&perm.range_end)
                ),
            };
            let r = proto::RoleRevokePermissionRequest {
                role: name.to_string(),
                key: perm.key,
                range_end: perm.range_end,
            };
            (Request::RoleRevokePermission(r), Done::Said(said))
        }
        _ => {
            return Err(CliError::Usage(
                "role takes add NAME, delete NAME, get NAME, list, \
                 grant-permission NAME read|write|readwrite KEY [END] or \
                 revoke-permission NAME KEY [END]"
                    .to_string(),
            ));
        }
    };
    send(parsed, format, request, done)
}

pub fn run_auth(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    let words: Vec<&str> = parsed.positionals.iter().map(String::as_str).collect();
    let (request, done) = match words.as_slice() {
        ["enable"] => (Request::AuthEnable, Done::Said("Authentication Enabled".to_string())),
        ["disable"] => (Request::AuthDisable, Done::Said("Authentication Disabled".to_string())),
        ["status"] => (Request::AuthStatus, Done::Status),
        _ => return Err(CliError::Usage("auth takes enable, disable or status".to_string())),
    };
    send(parsed, format, request, done)
}

fn send(parsed: &Parsed, format: Format, request: Request, done: Done) -> Result<(), CliError> {
    let mut client = connect(parsed)?;
    let write = request.is_write();
    let response = client.request(&request).map_err(if write { write_failed } else { failed })?;
    emit(&render(format, &done, &response))
}

/// What the command prints on success.
enum Done {
    /// One line, etcdctl's words.
    Said(String),
    UserGet(String),
    RoleGet(String),
    Listed,
    Status,
}

fn user(name: &str, make: fn(proto::UserRequest) -> Request) -> Request {
    make(proto::UserRequest { name: name.to_string() })
}

fn role_of(user: &str, role: &str) -> proto::UserRoleRequest {
    proto::UserRoleRequest { user: user.to_string(), role: role.to_string() }
}

fn user_add(parsed: &Parsed, spec: &str) -> Result<Request, CliError> {
    // etcdctl accepts `user add NAME:PASSWORD` too.
    let (name, inline) = match spec.split_once(':') {
        Some((name, password)) => (name, Some(password.to_string())),
        None => (spec, None),
    };
    let no_password = parsed.switch("no-password", no_env)?;
    let password = match (no_password, inline) {
        (true, _) => String::new(),
        (false, Some(password)) => password,
        (false, None) => new_password(parsed, name)?,
    };
    let r = proto::UserAddRequest { name: name.to_string(), password, no_password };
    Ok(Request::UserAdd(r))
}

/// The new password of `user add` and `user passwd`: the flag, else asked
/// twice on the terminal.
fn new_password(parsed: &Parsed, name: &str) -> Result<String, CliError> {
    if let Some(password) = parsed.value("new-user-password", no_env) {
        return Ok(password);
    }
    let interactive = match parsed.value("interactive", no_env).as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(CliError::Usage(format!("invalid value {other:?} for --interactive")));
        }
    };
    let first = prompt_password(&format!("Password of {name}: "), interactive)?;
    if interactive && is_terminal() {
        let again = prompt_password("Type password again for confirmation: ", true)?;
        if again != first {
            return Err(CliError::Failed("the two passwords differ".to_string()));
        }
    }
    Ok(first)
}

/// `KIND KEY [END]` with `--prefix` or `--from-key`, as a permission.
fn permission(
    parsed: &Parsed,
    kind: &str,
    key: &str,
    end: Option<&str>,
) -> Result<Permission, CliError> {
    let perm_type = match kind.to_ascii_lowercase().as_str() {
        "read" => PermissionType::Read,
        "write" => PermissionType::Write,
        "readwrite" => PermissionType::ReadWrite,
        _ => return Err(CliError::Usage(format!("invalid permission type {kind:?}"))),
    };
    let prefix = parsed.switch("prefix", no_env)?;
    let from_key = parsed.switch("from-key", no_env)?;
    let range_end = match (prefix, from_key, end) {
        (false, false, None) => Vec::new(),
        (false, false, Some(end)) => end.as_bytes().to_vec(),
        (true, false, None) => proto::prefix_range_end(key.as_bytes()),
        (false, true, None) => vec![0],
        _ => {
            return Err(CliError::Usage(
                "give one of RANGE_END, --prefix or --from-key".to_string(),
            ));
        }
    };
    Ok(Permission { perm_type, key: key.as_bytes().to_vec(), range_end })
}

fn is_terminal() -> bool {
    // SAFETY: isatty only reads the descriptor's state.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Reads a password from stdin: without echo when it is a terminal (and
/// `interactive`), else one line of it. A terminal with `interactive`
/// false is an error, so a script never hangs on a prompt.
fn prompt_password(prompt: &str, interactive: bool) -> Result<String, CliError> {
    let terminal = is_terminal();
    if terminal && !interactive {
        return Err(CliError::Usage(
            "no password given: use --user NAME:PASSWORD, --password or --new-user-password"
                .to_string(),
        ));
    }
    if !terminal {
        return read_line();
    }
    eprint!("{prompt}");
    let saved = echo_off();
    let line = read_line();
    if let Some(saved) = saved {
        // SAFETY: restores the attributes read from the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved);
        }
    }
    eprintln!();
    line
}

/// Turns terminal echo off; the attributes to restore, if it worked.
fn echo_off() -> Option<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to owned memory.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
        return None;
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    // SAFETY: as above; the attributes came from tcgetattr.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) };
    Some(saved)
}

fn read_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Failed(format!("reading the password: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn line(text: &str) -> Vec<u8> {
    format!("{text}\n").into_bytes()
}

fn fields_header(out: &mut String, header: &ResponseHeader) {
    let _ = writeln!(out, "\"ClusterID\" : {}", header.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", header.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", header.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", header.raft_term);
}

fn quoted(names: &[String]) -> Vec<String> {
    names.iter().map(|n| super::output::json_string(n)).collect()
}

/// The answer of a user, role or auth command in `format`.
fn render(format: Format, done: &Done, response: &Response) -> Vec<u8> {
    let header = response.header();
    match (format, done, response) {
        // etcdctl says these in words whatever the format.
        (_, Done::Said(text), Response::AuthEnable(_) | Response::AuthDisable(_)) => line(text),
        (Format::Json, _, _) => line(&json(response)),
        (Format::Fields, _, _) => fields(response).into_bytes(),
        (Format::Table, Done::Listed, Response::UserList(r)) => {
            table(&["USER"], &r.users.iter().map(|u| vec![u.clone()]).collect::<Vec<_>>()).into()
        }
        (Format::Table, Done::Listed, Response::RoleList(r)) => {
            table(&["ROLE"], &r.roles.iter().map(|u| vec![u.clone()]).collect::<Vec<_>>()).into()
        }
        (Format::Table, Done::RoleGet(_), Response::RoleGet(r)) => {
            let rows: Vec<Vec<String>> = r.perm.iter().map(permission_row).collect();
            table(&["TYPE", "KEY", "RANGE END"], &rows).into()
        }
        (_, Done::Said(text), _) => line(text),
        (_, Done::UserGet(name), Response::UserGet(r)) => {
            line(&format!("User: {name}\nRoles: {}", r.roles.join(" ")))
        }
        (_, Done::RoleGet(name), Response::RoleGet(r)) => role_text(name, &r.perm).into_bytes(),
        (_, Done::Listed, Response::UserList(r)) => lines(&r.users),
        (_, Done::Listed, Response::RoleList(r)) => lines(&r.roles),
        (_, Done::Status, Response::AuthStatus(r)) => line(&format!(
            "Authentication Status: {}\nAuthRevision: {}",
            r.enabled, r.auth_revision
        )),
        _ => line(&format!("revision {}", header.revision)),
    }
}

fn lines(names: &[String]) -> Vec<u8> {
    names.iter().map(|n| format!("{n}\n")).collect::<String>().into_bytes()
}

fn json(response: &Response) -> String {
    let mut object = JsonObject::default();
    object.raw("header", json_header(response.header()));
    match response {
        Response::UserGet(r) => object.list("roles", quoted(&r.roles)),
        Response::UserList(r) => object.list("users", quoted(&r.users)),
        Response::RoleList(r) => object.list("roles", quoted(&r.roles)),
        Response::RoleGet(r) => object.list("perm", r.perm.iter().map(json_permission).collect()),
        Response::AuthStatus(AuthStatusResponse { enabled, auth_revision, .. }) => {
            object.flag("enabled", *enabled).int("authRevision", (*auth_revision).into())
        }
        Response::Authenticate(r) => object.raw("token", super::output::json_string(&r.token)),
        _ => &mut object,
    };
    object.finish()
}

fn json_permission(p: &Permission) -> String {
    JsonObject::default()
        .int("permType", perm_number(p.perm_type))
        .bytes("key", &p.key)
        .bytes("range_end", &p.range_end)
        .finish()
}

fn perm_number(kind: PermissionType) -> i128 {
    match kind {
        PermissionType::Read => 0,
        PermissionType::Write => 1,
        PermissionType::ReadWrite => 2,
    }
}

fn perm_name(kind: PermissionType) -> &'static str {
    match kind {
        PermissionType::Read => "READ",
        PermissionType::Write => "WRITE",
        PermissionType::ReadWrite => "READWRITE",
    }
}

fn fields(response: &Response) -> String {
    let mut out = String::new();
    fields_header(&mut out, response.header());
    let names = |out: &mut String, title: &str, names: &[String]| {
        let _ = write!(out, "\"{title}\" :");
        for name in names {
            let _ = write!(out, " {name:?}");
        }
        out.push('\n');
    };
    match response {
        Response::UserGet(r) => names(&mut out, "Roles", &r.roles),
        Response::UserList(r) => names(&mut out, "Users", &r.users),
        Response::RoleList(r) => names(&mut out, "Roles", &r.roles),
        Response::RoleGet(r) => {
            for p in &r.perm {
                let _ = writeln!(out, "\"PermType\" : {:?}", perm_name(p.perm_type));
                let _ = writeln!(out, "\"Key\" : {:?}", String::from_utf8_lossy(&p.key));
                let _ = writeln!(out, "\"RangeEnd\" : {:?}", String::from_utf8_lossy(&p.range_end));
            }
        }
        Response::AuthStatus(r) => {
            let _ = writeln!(out, "\"Enabled\" : {}", r.enabled);
            let _ = writeln!(out, "\"AuthRevision\" : {}", r.auth_revision);
        }
        _ => {}
    }
    out
}

fn permission_row(p: &Permission) -> Vec<String> {
    vec![
        perm_name(p.perm_type).to_string(),
        String::from_utf8_lossy(&p.key).into_owned(),
        String::from_utf8_lossy(&p.range_end).into_owned(),
    ]
}

/// etcdctl's `role get`: the role, then its read and write grants.
fn role_text(name: &str, perms: &[Permission]) -> String {
    let mut out = format!("Role {name}\n");
    for (title, right) in [("KV Read:", PermissionType::Read), ("KV Write:", PermissionType::Write)]
    {
        out.push_str(title);
        out.push('\n');
        let gives =
            |p: &&Permission| p.perm_type == right || p.perm_type == PermissionType::ReadWrite;
        for p in perms.iter().filter(gives) {
            let _ = writeln!(out, "\t{}", span_text(p));
        }
    }
    out
}

fn span_text(p: &Permission) -> String {
    let key = String::from_utf8_lossy(&p.key);
    match p.range_end.as_slice() {
        [] => key.into_owned(),
        [0] => format!("[{key}, <open ended>"),
        end if end == proto::prefix_range_end(&p.key).as_slice() => {
            format!("[{key}, {}) (prefix {key})", String::from_utf8_lossy(end))
        }
        end => format!("[{key}, {})", String::from_utf8_lossy(end)),
    }
}

/// `user get --detail` as etcdctl prints it in every format: the user's
/// name, then each role as `role get` prints it, after a blank line.
fn render_user_detail(format: Format, name: &str, roles: &[(String, Response)]) -> Vec<u8> {
    let mut out = format!("User: {name}\n").into_bytes();
    for (role, answer) in roles {
        out.push(b'\n');
        out.extend(render(format, &Done::RoleGet(role.clone()), answer));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermissionType, key: &str, end: &[u8]) -> Permission {
        Permission { perm_type: kind, key: key.as_bytes().to_vec(), range_end: end.to_vec() }
    }

    #[test]
    fn role_get_reads_like_etcdctl() {
        let perms = [
            perm(PermissionType::Read, "a", b""),
            perm(PermissionType::ReadWrite, "p/", b"p0"),
            perm(PermissionType::Write, "z", &[0]),
        ];
        assert_eq!(
            role_text("r", &perms),
            "Role r\nKV Read:\n\ta\n\t[p/, p0) (prefix p/)\nKV Write:\n\t[p/, p0) (prefix p/)\n\t[z, <open ended>\n"
        );
    }

    #[test]
    fn every_format_renders_a_role_list() {
        let response = Response::RoleList(proto::RoleListResponse {
            header: ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 },
            roles: vec!["a".into(), "b".into()],
        });
        assert_eq!(render(Format::Simple, &Done::Listed, &response), b"a\nb\n");
        let json = String::from_utf8(render(Format::Json, &Done::Listed, &response)).unwrap();
        assert!(json.ends_with(",\"roles\":[\"a\",\"b\"]}\n"), "{json}");
        let fields = String::from_utf8(render(Format::Fields, &Done::Listed, &response)).unwrap();
        assert!(fields.ends_with("\"Roles\" : \"a\" \"b\"\n"), "{fields}");
        let table = String::from_utf8(render(Format::Table, &Done::Listed, &response)).unwrap();
        assert!(table.contains("| ROLE |") && table.contains("| a    |"), "{table}");
    }
}
