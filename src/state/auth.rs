//! Applying access control: the changes to users and roles, and the
//! permission check every client command passes before it applies.
//!
//! The check runs here, at apply time, from the caller recorded in the
//! entry and the auth state every member holds alike, so every member
//! accepts or refuses the same entries. A caller whose epoch moved on
//! since its token was issued (a new password, a role taken away) is
//! refused like a caller with no token. Entries a member proposes on its
//! own (no caller: lease expiry, published attributes) pass.
//!
//! The proposing member has done the slow and the random parts already: a
//! password arrives hashed (`auth::password`), the token key drawn.

use serde::{Deserialize, Serialize};

use super::StateMachine;
use super::command::{Caller, Op};
use crate::auth::{self, AuthError, Need, Permission, Right, Span, needs};
use crate::mvcc;
use crate::proto::{self, ErrorBody, Response};

/// A change of access control, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// Carries the token key the proposing member drew.
    Enable {
        token_key: Vec<u8>,
    },
    Disable,
    /// `password`: the stored form, already hashed; `None` for a user with
    /// no password.
    UserAdd {
        name: String,
        password: Option<String>,
    },
    UserDelete(String),
    UserChangePassword {
        name: String,
        password: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd(String),
    RoleDelete(String),
    RoleGrantPermission {
        role: String,
        permission: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthOp {
    fn apply(
        self,
        auth: &mut auth::AuthState,
    ) -> Result<fn(proto::AuthResponse) -> Response, AuthError> {
        Ok(match self {
            AuthOp::Enable { token_key } => {
                auth.enable(&token_key)?;
                Response::AuthEnable
            }
            AuthOp::Disable => {
                auth.disable();
                Response::AuthDisable
            }
            AuthOp::UserAdd { name, password } => {
                auth.add_user(&name, password)?;
                Response::UserAdd
            }
            AuthOp::UserDelete(name) => {
                auth.delete_user(&name)?;
                Response::UserDelete
            }
            AuthOp::UserChangePassword { name, password } => {
                auth.change_password(&name, password)?;
                Response::UserChangePassword
            }
            AuthOp::UserGrantRole { user, role } => {
                auth.grant_role(&user, &role)?;
                Response::UserGrantRole
            }
            AuthOp::UserRevokeRole { user, role } => {
                auth.revoke_role(&user, &role)?;
                Response::UserRevokeRole
            }
            AuthOp::RoleAdd(name) => {
                auth.add_role(&name)?;
                Response::RoleAdd
            }
            AuthOp::RoleDelete(name) => {
                auth.delete_role(&name)?;
                Response::RoleDelete
            }
            AuthOp::RoleGrantPermission { role, permission } => {
                auth.grant_permission(&role, permission)?;
                Response::RoleGrantPermission
            }
            AuthOp::RoleRevokePermission { role, key, range_end } => {
                auth.revoke_permission(&role, &key, &range_end)?;
                Response::RoleRevokePermission
            }
        })
    }
}

/// The protocol error for an auth refusal.
pub fn auth_error(error: AuthError) -> ErrorBody {
    ErrorBody::new(error.code())
}

impl StateMachine {
    pub(super) fn apply_auth(&mut self, op: AuthOp, raft_term: u64) -> Result<Response, ErrorBody> {
        let deleted = match &op {
            AuthOp::UserDelete(name) => Some(name.clone()),
            _ => None,
        };
        let respond = op.apply(&mut self.auth).map_err(auth_error)?;
        if let Some(name) = deleted {
            // A user added later under this name is someone else.
            self.leases.disown(&name);
        }
        Ok(respond(proto::AuthResponse { header: self.header(raft_term) }))
    }

    /// Whether `caller` may have `op` applied now. Always true while auth
    /// is off, and for a member's own entries.
    pub(super) fn authorize(&self, caller: Option<&Caller>, op: &Op) -> Result<(), AuthError> {
        if !self.auth.enabled {
            return Ok(());
        }
        let (name, epoch) = match caller {
            None => return Ok(()),
            Some(Caller::Anonymous) => return Err(AuthError::InvalidToken),
            Some(Caller::User { name, epoch }) => (name.as_str(), *epoch),
        };
        if self.auth.users.get(name).is_none_or(|u| u.epoch != epoch) {
            return Err(AuthError::InvalidToken);
        }
        if let Op::Auth(AuthOp::UserChangePassword { name: target, .. }) = op
            && target == name
        {
            // Anyone may change their own password.
            return Ok(());
        }
        if let Op::LeaseRevoke(id) = op
            && self.leases.owner(*id) == Some(name)
        {
            // The user who granted a lease may end it, even after losing
            // WRITE on a key attached to it since.
            return Ok(());
        }
        self.auth.allows(Some(name), &self.needs_of(op))
    }

    /// What `op` needs, including the rights that depend on the store: a
    /// put that attaches a lease needs WRITE on the keys already on it,
    /// and a client's revoke, unless the client owns the lease, WRITE on
    /// every key the lease holds.
    fn needs_of(&self, op: &Op) -> Vec<Need> {
        let mut out = Vec::new();
        match op {
            Op::Put(r) => {
                needs::put(r, &mut out);
                self.lease_keys_writable(r.lease, &mut out);
            }
            Op::DeleteRange(r) => needs::delete_range(r, &mut out),
            Op::Txn(r) => {
                needs::txn(r, &mut out);
                for lease in txn_put_leases(r) {
                    self.lease_keys_writable(lease, &mut out);
                }
            }
            Op::Compact(_)
            | Op::Member(_)
            | Op::Auth(_)
            | Op::Alarm(_)
            | Op::Quota(_)
            | Op::Corrupt(_)
            | Op::ClusterVersion(_) => out.push(Need::Root),
            Op::LeaseGrant { .. } | Op::LeaseRenew(_) => out.push(Need::Authenticated),
            Op::LeaseRevoke(id) => {
                out.push(Need::Authenticated);
                self.lease_keys_writable(*id, &mut out);
            }
        }
        out
    }

    fn lease_keys_writable(&self, lease: i64, out: &mut Vec<Need>) {
        if lease == 0 {
            return;
        }
        for key in self.store.lease_keys(lease) {
            out.push(Need::Key(Right::Write, Span::of(&key, &[])));
        }
    }

    pub fn auth(&self) -> &auth::AuthState {
        &self.auth
    }
}

/// The leases the puts of a txn attach, in both branches at every depth.
fn txn_put_leases(txn: &mvcc::TxnRequest) -> Vec<i64> {
    let mut leases = Vec::new();
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            mvcc::RequestOp::Put(p) if p.lease != 0 => leases.push(p.lease),
            mvcc::RequestOp::Txn(t) => leases.extend(txn_put_leases(t)),
            _ => {}
        }
    }
    leases
}

/// The replicated form of a protocol permission.
pub fn permission(p: &proto::Permission) -> Permission {
    Permission {
        kind: match p.perm_type {
            proto::PermissionType::Read => auth::PermKind::Read,
            proto::PermissionType::Write => auth::PermKind::Write,
            proto::PermissionType::ReadWrite => auth::PermKind::ReadWrite,
        },
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

/// The protocol form of a replicated permission.
pub fn proto_permission(p: &Permission) -> proto::Permission {
    proto::Permission {
        perm_type: match p.kind {
            auth::PermKind::Read => proto::PermissionType::Read,
            auth::PermKind::Write => proto::PermissionType::Write,
            auth::PermKind::ReadWrite => proto::PermissionType::ReadWrite,
        },
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}
