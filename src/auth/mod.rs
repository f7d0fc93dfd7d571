//! Access control: users, roles, their permissions on key ranges, the
//! enabled flag and the token key; the rules that keep them sound; and the
//! questions a request asks of them.
//!
//! Must not touch: sockets, files, the clock, threads, OS randomness. It
//! is pure like `lease` and `mvcc`: wall-clock time comes in as
//! `now_unix_ms`, random bytes (salts, the token key) as arguments, and
//! password hashing (`password.rs`) is a pure, slow function the node
//! calls on a worker thread. `AuthState` is replicated: the state machine
//! changes it only by applying committed entries, so every member holds
//! the same users, roles and key.
//!
//! The rules, as etcd's: `auth enable` needs user `root` holding role
//! `root`; while auth is on, root cannot be deleted or lose that role; the
//! `root` role may do everything. Each user has an `epoch`, a number from
//! the state's change counter set when the user is added, changes its
//! password or loses a role: tokens carry the epoch they were issued in
//! and die when it moves on, and a user deleted and added again never
//! gets an old epoch back.
//!
//! Layout: `perm.rs` (key spans, coverage), `needs.rs` (what a request
//! needs), `password.rs` (stored hashes), `token.rs` (signed tokens),
//! `cert.rs` (the user a client certificate names).

pub mod cert;
pub mod needs;
pub mod password;
pub mod perm;
pub mod token;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::proto::ErrorCode;

pub use needs::Need;
pub use perm::{PermKind, Permission, Right, Span};
pub use token::{Claims, TokenError};

/// The user and role that may do everything.
pub const ROOT: &str = "root";
/// The longest user or role name.
pub const USER_NAME_BYTES_MAX: usize = 256;
/// The longest password a client may send: PBKDF2 hashes any length, but a
/// bound keeps a request from making a worker hash megabytes.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Users the cluster may hold: each is a few hundred bytes in every
/// snapshot and in memory on every member.
pub const USERS_MAX: usize = 1024;
/// Roles the cluster may hold.
pub const ROLES_MAX: usize = 256;
/// Permissions one role may hold. With `ROLES_MAX` this bounds the
/// permission list every check sweeps and the snapshot's auth section.
pub const PERMISSIONS_PER_ROLE_MAX: usize = 64;
/// Roles one user may hold.
pub const ROLES_PER_USER_MAX: usize = 64;

/// Why an auth operation or check was refused; each maps to etcd's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    PermissionDenied,
    InvalidToken,
    AuthFailed,
    NotEnabled,
    RootUserMissing,
    RootRoleMissing,
    UserExists,
    UserEmpty,
    UserNotFound,
    RoleExists,
    RoleEmpty,
    RoleNotFound,
    RoleNotGranted,
    PermissionNotGranted,
    /// Deleting root, or taking its role away, while auth is on.
    InvalidManagement,
    /// A limit of this module (`USERS_MAX`, ...) would be passed.
    TooMany,
}

/// A user as replicated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// The stored form (`password::StoredPassword::to_text`); `None` for a
    /// user made with no password, who cannot log in with one.
    pub password: Option<String>,
    /// Ascending, without repeats.
    pub roles: Vec<String>,
    /// Tokens issued in another epoch are refused.
    pub epoch: u64,
}

/// A role as replicated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    /// Ascending, without repeats.
    pub permissions: Vec<Permission>,
}

/// Everything about access control that every member holds alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Counts changes; a user's epoch is its value at the user's last
    /// identity change. Invariant: above every user's epoch.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// The token key of the current `auth enable`; empty while disabled.
    /// Invariant: `token::KEY_BYTES` long exactly when `enabled`.
    pub token_key: Vec<u8>,
}

impl AuthError {
    /// The protocol's code for this refusal.
    pub fn code(self) -> ErrorCode {
        match self {
            AuthError::PermissionDenied => ErrorCode::PermissionDenied,
            AuthError::InvalidToken => ErrorCode::InvalidAuthToken,
            AuthError::AuthFailed => ErrorCode::AuthFailed,
            AuthError::NotEnabled => ErrorCode::AuthNotEnabled,
            AuthError::RootUserMissing => ErrorCode::RootUserNotExist,
            AuthError::RootRoleMissing => ErrorCode::RootRoleNotExist,
            AuthError::UserExists => ErrorCode::UserAlreadyExist,
            AuthError::UserEmpty => ErrorCode::UserEmpty,
            AuthError::UserNotFound => ErrorCode::UserNotFound,
            AuthError::RoleExists => ErrorCode::RoleAlreadyExist,
            AuthError::RoleEmpty => ErrorCode::RoleEmpty,
            AuthError::RoleNotFound => ErrorCode::RoleNotFound,
            AuthError::RoleNotGranted => ErrorCode::RoleNotGranted,
            AuthError::PermissionNotGranted => ErrorCode::PermissionNotGranted,
            AuthError::InvalidManagement => ErrorCode::InvalidAuthMgmt,
            AuthError::TooMany => ErrorCode::TooManyAuthEntries,
        }
    }
}

impl AuthState {
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users.get_mut(name).ok_or(AuthError::UserNotFound)
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, AuthError> {
        self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)
    }

    pub fn enable(&mut self, token_key: &[u8]) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserMissing)?;
        if !root.roles.iter().any(|r| r == ROOT) {
            return Err(AuthError::RootRoleMissing);
        }
        if token_key.len() != token::KEY_BYTES {
            return Err(AuthError::InvalidManagement);
        }
        self.enabled = true;
        self.token_key = token_key.to_vec();
        // The root role exists implicitly once enabled, as in etcd.
        self.roles
            .entry(ROOT.into())
            .or_insert_with(|| Role { name: ROOT.into(), ..Role::default() });
        // Every user starts a new epoch: a connection still bound to a
        // token of an earlier enable must not pass the per-request check,
        // which compares epochs, not keys.
        let epoch = self.bump();
        for user in self.users.values_mut() {
            user.epoch = epoch;
        }
        Ok(())
    }

    pub fn disable(&mut self) {
        if self.enabled {
            self.enabled = false;
            self.token_key.clear();
            self.bump();
        }
    }

    pub fn add_user(&mut self, name: &str, password: Option<String>) -> Result<(), AuthError> {
        check_name(name, AuthError::UserEmpty)?;
        if self.users.contains_key(name) {
            return Err(AuthError::UserExists);
        }
        if self.users.len() >= USERS_MAX {
            return Err(AuthError::TooMany);
        }
        let epoch = self.bump();
        let user = User { name: name.into(), password, roles: Vec::new(), epoch };
        self.users.insert(name.into(), user);
        Ok(())
    }

    pub fn delete_user(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidManagement);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.bump();
        Ok(())
    }

    pub fn change_password(&mut self, name: &str, password: String) -> Result<(), AuthError> {
        self.user_mut(name)?;
        let epoch = self.bump();
        let user = self.user_mut(name)?;
        user.password = Some(password);
        user.epoch = epoch;
        Ok(())
    }

    pub fn grant_role(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let entry = self.user_mut(user)?;
        match entry.roles.binary_search_by(|r| r.as_str().cmp(role)) {
            Ok(_) => {}
            Err(_) if entry.roles.len() >= ROLES_PER_USER_MAX => return Err(AuthError::TooMany),
            Err(at) => entry.roles.insert(at, role.into()),
        }
        self.bump();
        Ok(())
    }

    /// Takes a role away; the user's tokens end with it.
    pub fn revoke_role(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(AuthError::InvalidManagement);
        }
        let entry = self.user_mut(user)?;
        let at = entry.roles.iter().position(|r| r == role).ok_or(AuthError::RoleNotGranted)?;
        entry.roles.remove(at);
        let epoch = self.bump();
        self.user_mut(user)?.epoch = epoch;
        Ok(())
    }

    pub fn add_role(&mut self, name: &str) -> Result<(), AuthError> {
        check_name(name, AuthError::RoleEmpty)?;
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleExists);
        }
        if self.roles.len() >= ROLES_MAX {
            return Err(AuthError::TooMany);
        }
        self.roles.insert(name.into(), Role { name: name.into(), permissions: Vec::new() });
        self.bump();
        Ok(())
    }

    /// Deletes a role and takes it from every user that held it (their
    /// tokens end: they lost a role).
    pub fn delete_role(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidManagement);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        let epoch = self.bump();
        for user in self.users.values_mut() {
            if let Some(at) = user.roles.iter().position(|r| r == name) {
                user.roles.remove(at);
                user.epoch = epoch;
            }
        }
        Ok(())
    }

    /// Grants a permission; one on the same range replaces its kind.
    pub fn grant_permission(&mut self, role: &str, perm: Permission) -> Result<(), AuthError> {
        let entry = self.role_mut(role)?;
        let same = |p: &Permission| p.key == perm.key && p.range_end == perm.range_end;
        entry.permissions.retain(|p| !same(p));
        if entry.permissions.len() >= PERMISSIONS_PER_ROLE_MAX {
            return Err(AuthError::TooMany);
        }
        let at = entry.permissions.binary_search(&perm).unwrap_or_else(|at| at);
        entry.permissions.insert(at, perm);
        self.bump();
        Ok(())
    }

    pub fn revoke_permission(
        &mut self,
        role: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        let entry = self.role_mut(role)?;
        let before = entry.permissions.len();
        entry.permissions.retain(|p| !(p.key == key && p.range_end == range_end));
        if entry.permissions.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.bump();
        Ok(())
    }

    /// Whether a state read from a snapshot keeps this module's
    /// invariants and bounds.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.enabled != (self.token_key.len() == token::KEY_BYTES)
            || (!self.enabled && !self.token_key.is_empty())
        {
            return Err("auth: token key does not match the enabled flag");
        }
        if self.users.len() > USERS_MAX || self.roles.len() > ROLES_MAX {
            return Err("auth: too many users or roles");
        }
        let users_sound = self.users.iter().all(|(name, u)| {
            *name == u.name
                && u.epoch <= self.revision
                && u.roles.len() <= ROLES_PER_USER_MAX
                && u.roles.windows(2).all(|w| w[0] < w[1])
        });
        let roles_sound = self.roles.iter().all(|(name, r)| {
            *name == r.name
                && r.permissions.len() <= PERMISSIONS_PER_ROLE_MAX
                && r.permissions.windows(2).all(|w| w[0] < w[1])
        });
        if !users_sound || !roles_sound {
            return Err("auth: a user or role breaks its invariants");
        }
        Ok(())
    }

    /// The user a token names, if the token is signed with the current key,
    /// unexpired and of the user's current epoch.
    pub fn check_token(&self, token: &str, now_unix_ms: u64) -> Result<Claims, TokenError> {
        if !self.enabled {
            return Err(TokenError::NoKey);
        }
        let claims = Claims::verify(token, &self.token_key)?;
        self.check_claims(&claims, now_unix_ms)?;
        Ok(claims)
    }

    /// Whether claims already verified still hold: unexpired, and the
    /// user still there in the same epoch.
    pub fn check_claims(&self, claims: &Claims, now_unix_ms: u64) -> Result<(), TokenError> {
        if claims.expired(now_unix_ms) {
            return Err(TokenError::Expired);
        }
        match self.users.get(&claims.user) {
            Some(user) if user.epoch == claims.epoch => Ok(()),
            _ => Err(TokenError::Revoked),
        }
    }

    /// A token for `user` valid for `ttl_secs` from `now_unix_ms`.
    pub fn issue_token(
        &self,
        user: &str,
        now_unix_ms: u64,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::NotEnabled);
        }
        let entry = self.users.get(user).ok_or(AuthError::AuthFailed)?;
        let claims = Claims {
            user: user.into(),
            epoch: entry.epoch,
            issued_unix_ms: now_unix_ms,
            expires_unix_ms: now_unix_ms.saturating_add(ttl_secs.saturating_mul(1000)),
        };
        Ok(claims.sign(&self.token_key))
    }

    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    /// Whether `user` has `right` on every key of `span`.
    pub fn permits(&self, user: &str, right: Right, span: &Span) -> bool {
        let Some(entry) = self.users.get(user) else { return false };
        if entry.roles.iter().any(|r| r == ROOT) {
            return true;
        }
        let grants = || {
            entry
                .roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flat_map(|r| &r.permissions)
                .filter(move |p| p.kind.gives(right))
        };
        // Most requests fall inside one grant: answer those without
        // building the union.
        if grants().any(|p| perm::covers_alone(p, span)) {
            return true;
        }
        perm::covers(grants().map(Permission::span), span)
    }

    /// Whether `user` (`None`: not authenticated) may do what `needs` list.
    /// Always true while auth is off.
    pub fn allows(&self, user: Option<&str>, needs: &[Need]) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = user.ok_or(AuthError::InvalidToken)?;
        if !self.users.contains_key(user) {
            return Err(AuthError::InvalidToken);
        }
        let ok = needs.iter().all(|need| match need {
            Need::Authenticated => true,
            Need::Root => self.is_root(user),
            Need::Key(right, span) => self.permits(user, *right, span),
        });
        if ok { Ok(()) } else { Err(AuthError::PermissionDenied) }
    }
}

fn check_name(name: &str, empty: AuthError) -> Result<(), AuthError> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > USER_NAME_BYTES_MAX {
        return Err(AuthError::TooMany);
    }
    Ok(())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes of lower-case hex text; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; token::KEY_BYTES] = [9; token::KEY_BYTES];

    fn with_root() -> AuthState {
        let mut auth = AuthState::default();
        auth.add_user(ROOT, Some("x".into())).unwrap();
        auth.grant_role(ROOT, ROOT).unwrap();
        auth
    }

    fn perm(kind: PermKind, key: &str, end: &[u8]) -> Permission {
        Permission { kind, key: key.as_bytes().to_vec(), range_end: end.to_vec() }
    }

    #[test]
    fn enable_needs_root_with_the_root_role() {
        let mut auth = AuthState::default();
        assert_eq!(auth.enable(&KEY), Err(AuthError::RootUserMissing));
        auth.add_user(ROOT, None).unwrap();
        assert_eq!(auth.enable(&KEY), Err(AuthError::RootRoleMissing));
        auth.grant_role(ROOT, ROOT).unwrap();
        assert_eq!(auth.enable(&KEY), Ok(()));
        assert!(auth.enabled && auth.roles.contains_key(ROOT));
    }

    #[test]
    fn root_keeps_its_role_and_its_life_while_enabled() {
        let mut auth = with_root();
        auth.enable(&KEY).unwrap();
        assert_eq!(auth.delete_user(ROOT), Err(AuthError::InvalidManagement));
        assert_eq!(auth.revoke_role(ROOT, ROOT), Err(AuthError::InvalidManagement));
        assert_eq!(auth.delete_role(ROOT), Err(AuthError::InvalidManagement));
        auth.disable();
        assert_eq!(auth.revoke_role(ROOT, ROOT), Ok(()));
        assert_eq!(auth.delete_user(ROOT), Ok(()));
    }

    #[test]
    fn names_are_unique_and_errors_are_etcds() {
        let mut auth = with_root();
        assert_eq!(auth.add_user(ROOT, None), Err(AuthError::UserExists));
        assert_eq!(auth.add_user("", None), Err(AuthError::UserEmpty));
        assert_eq!(auth.add_role(""), Err(AuthError::RoleEmpty));
        assert_eq!(auth.grant_role("nobody", ROOT), Err(AuthError::UserNotFound));
        assert_eq!(auth.grant_role(ROOT, "ghost"), Err(AuthError::RoleNotFound));
        auth.add_role("r").unwrap();
        assert_eq!(auth.add_role("r"), Err(AuthError::RoleExists));
        assert_eq!(auth.revoke_role(ROOT, "r"), Err(AuthError::RoleNotGranted));
        assert_eq!(auth.revoke_permission("r", b"a", b""), Err(AuthError::PermissionNotGranted));
    }

    #[test]
    fn tokens_die_with_their_users_epoch_and_nobody_elses() {
        let mut auth = with_root();
        auth.add_user("alice", Some("h".into())).unwrap();
        auth.add_user("bob", Some("h".into())).unwrap();
        auth.add_role("r").unwrap();
        auth.grant_role("alice", "r").unwrap();
        auth.enable(&KEY).unwrap();
        let alice = auth.issue_token("alice", 1_000, 60).unwrap();
        let bob = auth.issue_token("bob", 1_000, 60).unwrap();
        assert!(auth.check_token(&alice, 2_000).is_ok());
        assert_eq!(auth.check_token(&alice, 61_000), Err(TokenError::Expired));
        auth.change_password("alice", "h2".into()).unwrap();
        assert_eq!(auth.check_token(&alice, 2_000), Err(TokenError::Revoked));
        assert!(auth.check_token(&bob, 2_000).is_ok(), "bob's token survives alice's passwd");
        let alice = auth.issue_token("alice", 1_000, 60).unwrap();
        auth.revoke_role("alice", "r").unwrap();
        assert_eq!(auth.check_token(&alice, 2_000), Err(TokenError::Revoked));
        let bob_again = auth.issue_token("bob", 1_000, 60).unwrap();
        auth.delete_user("bob").unwrap();
        auth.add_user("bob", Some("h".into())).unwrap();
        assert_eq!(auth.check_token(&bob_again, 2_000), Err(TokenError::Revoked));
        let root = auth.issue_token(ROOT, 1_000, 60).unwrap();
        let bound = auth.check_token(&root, 2_000).unwrap();
        auth.disable();
        auth.enable(&[1; token::KEY_BYTES]).unwrap();
        assert_eq!(auth.check_token(&root, 2_000), Err(TokenError::BadMac));
        assert_eq!(auth.check_claims(&bound, 2_000), Err(TokenError::Revoked));
    }

    #[test]
    fn permissions_are_the_union_of_the_roles() {
        let mut auth = with_root();
        auth.add_user("u", None).unwrap();
        for role in ["a", "b"] {
            auth.add_role(role).unwrap();
            auth.grant_role("u", role).unwrap();
        }
        auth.grant_permission("a", perm(PermKind::Read, "k", b"m")).unwrap();
        auth.grant_permission("b", perm(PermKind::ReadWrite, "m", &[0])).unwrap();
        auth.enable(&KEY).unwrap();
        let read = |k: &str, e: &[u8]| auth.permits("u", Right::Read, &Span::of(k.as_bytes(), e));
        assert!(read("k", &[0]));
        assert!(!read("j", &[0]));
        assert!(!auth.permits("u", Right::Write, &Span::of(b"l", b"")));
        assert!(auth.permits("u", Right::Write, &Span::of(b"zz", b"")));
        assert!(auth.permits(ROOT, Right::Write, &Span::of(b"", &[0])));
        assert_eq!(auth.allows(None, &[Need::Authenticated]), Err(AuthError::InvalidToken));
        assert_eq!(auth.allows(Some("u"), &[Need::Root]), Err(AuthError::PermissionDenied));
        assert_eq!(auth.allows(Some(ROOT), &[Need::Root]), Ok(()));
        auth.revoke_permission("b", b"m", &[0]).unwrap();
        assert!(!auth.permits("u", Right::Write, &Span::of(b"zz", b"")));
    }

    #[test]
    fn hex_round_trips_and_refuses_other_text() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00ab10"), Some(vec![0, 0xab, 0x10]));
        for bad in ["0", "0g", "AB", " 0"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }
}
