//! etcd's Auth service, each call one of the node's access-control
//! requests, made as the caller's user (see `caller`).
//!
//! `Authenticate` logs in on a connection of its own, which the node binds
//! to the token it answers; the gateway keeps that connection for the calls
//! that carry the token. Passwords are checked and stored by the node
//! (PBKDF2 there, not etcd's bcrypt), so a password etcd's clients send
//! already hashed (`hashedPassword`) cannot be used and is refused.

use ember::proto::{
    AuthenticateRequest, ErrorBody, ErrorCode, Permission, PermissionType, Request,
    RoleGrantPermissionRequest, RoleRequest, RoleRevokePermissionRequest, UserAddRequest,
    UserChangePasswordRequest, UserRequest, UserRoleRequest,
};
use tonic::{Request as Grpc, Response, Status};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, call_as};
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;
use crate::status;

type Answer<T> = Result<Response<T>, Status>;

/// Why a `hashedPassword` is refused.
const HASHED_PASSWORD: &str = "ember: hashedPassword is not accepted: Ember stores its own \
                               PBKDF2 hash, so send the password itself";

#[tonic::async_trait]
impl pb::auth_server::Auth for Gateway {
    async fn auth_status(
        &self,
        request: Grpc<pb::AuthStatusRequest>,
    ) -> Answer<pb::AuthStatusResponse> {
        let caller = Caller::of(request.metadata());
        let answer = call_as!(self, &caller, Request::AuthStatus, AuthStatus);
        Ok(Response::new(pb::AuthStatusResponse {
            header: convert::header(answer.header),
            enabled: answer.enabled,
            auth_revision: answer.auth_revision,
        }))
    }

    async fn auth_enable(
        &self,
        request: Grpc<pb::AuthEnableRequest>,
    ) -> Answer<pb::AuthEnableResponse> {
        let caller = Caller::of(request.metadata());
        let answer = call_as!(self, &caller, Request::AuthEnable, AuthEnable);
        Ok(Response::new(pb::AuthEnableResponse { header: convert::header(answer.header) }))
    }

    async fn auth_disable(
        &self,
        request: Grpc<pb::AuthDisableRequest>,
    ) -> Answer<pb::AuthDisableResponse> {
        let caller = Caller::of(request.metadata());
        let answer = call_as!(self, &caller, Request::AuthDisable, AuthDisable);
        Ok(Response::new(pb::AuthDisableResponse { header: convert::header(answer.header) }))
    }

    async fn authenticate(
        &self,
        request: Grpc<pb::AuthenticateRequest>,
    ) -> Answer<pb::AuthenticateResponse> {
        let pb::AuthenticateRequest { name, password } = request.into_inner();
        let asked = AuthenticateRequest { name, password };
        let answer = self.backend.authenticate(asked).await.map_err(status::from_link)?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: convert::header(answer.header),
            token: answer.token,
        }))
    }

    async fn user_add(
        &self,
        request: Grpc<pb::AuthUserAddRequest>,
    ) -> Answer<pb::AuthUserAddResponse> {
        let caller = Caller::of(request.metadata());
        let pb::AuthUserAddRequest { name, password, options, hashed_password } =
            request.into_inner();
        if !hashed_password.is_empty() {
            return Err(Status::invalid_argument(HASHED_PASSWORD));
        }
        let no_password = options.is_some_and(|options| options.no_password);
        let asked = Request::UserAdd(UserAddRequest { name, password, no_password });
        let answer = call_as!(self, &caller, asked, UserAdd);
        Ok(Response::new(pb::AuthUserAddResponse { header: convert::header(answer.header) }))
    }

    async fn user_get(
        &self,
        request: Grpc<pb::AuthUserGetRequest>,
    ) -> Answer<pb::AuthUserGetResponse> {
        let caller = Caller::of(request.metadata());
        let name = request.into_inner().name;
        let answer = call_as!(self, &caller, Request::UserGet(UserRequest { name }), UserGet);
        Ok(Response::new(pb::AuthUserGetResponse {
            header: convert::header(answer.header),
            roles: answer.roles,
        }))
    }

    async fn user_list(
        &self,
        request: Grpc<pb::AuthUserListRequest>,
    ) -> Answer<pb::AuthUserListResponse> {
        let caller = Caller::of(request.metadata());
        let answer = call_as!(self, &caller, Request::UserList, UserList);
        Ok(Response::new(pb::AuthUserListResponse {
            header: convert::header(answer.header),
            users: answer.users,
        }))
    }

    async fn user_delete(
        &self,
        request: Grpc<pb::AuthUserDeleteRequest>,
    ) -> Answer<pb::AuthUserDeleteResponse> {
        let caller = Caller::of(request.metadata());
        let name = request.into_inner().name;
        let answer = call_as!(self, &caller, Request::UserDelete(UserRequest { name }), UserDelete);
        Ok(Response::new(pb::AuthUserDeleteResponse { header: convert::header(answer.header) }))
    }

    async fn user_change_password(
        &self,
        request: Grpc<pb::AuthUserChangePasswordRequest>,
    ) -> Answer<pb::AuthUserChangePasswordResponse> {
        let caller = Caller::of(request.metadata());
        let pb::AuthUserChangePasswordRequest { name, password, hashed_password } =
            request.into_inner();
        if !hashed_password.is_empty() {
            return Err(Status::invalid_argument(HASHED_PASSWORD));
        }
        let asked = Request::UserChangePassword(UserChangePasswordRequest { name, password });
        let answer = call_as!(self, &caller, asked, UserChangePassword);
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: convert::header(answer.header),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Grpc<pb::AuthUserGrantRoleRequest>,
    ) -> Answer<pb::AuthUserGrantRoleResponse> {
        let caller = Caller::of(request.metadata());
        let pb::AuthUserGrantRoleRequest { user, role } = request.into_inner();
        let asked = Request::UserGrantRole(UserRoleRequest { user, role });
        let answer = call_as!(self, &caller, asked, UserGrantRole);
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header: convert::header(answer.header) }))
    }

    async fn user_revoke_role(
        &self,
        request: Grpc<pb::AuthUserRevokeRoleRequest>,
    ) -> Answer<pb::AuthUserRevokeRoleResponse> {
        let caller = Caller::of(request.metadata());
        let pb::AuthUserRevokeRoleRequest { name, role } = request.into_inner();
        let asked = Request::UserRevokeRole(UserRoleRequest { user: name, role });
        let answer = call_as!(self, &caller, asked, UserRevokeRole);
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header: convert::header(answer.header) }))
    }

    async fn role_add(
        &self,
        request: Grpc<pb::AuthRoleAddRequest>,
    ) -> Answer<pb::AuthRoleAddResponse> {
        let caller = Caller::of(request.metadata());
        let role = request.into_inner().name;
        let answer = call_as!(self, &caller, Request::RoleAdd(RoleRequest { role }), RoleAdd);
        Ok(Response::new(pb::AuthRoleAddResponse { header: convert::header(answer.header) }))
    }

    async fn role_get(
        &self,
        request: Grpc<pb::AuthRoleGetRequest>,
    ) -> Answer<pb::AuthRoleGetResponse> {
        let caller = Caller::of(request.metadata());
        let role = request.into_inner().role;
        let answer = call_as!(self, &caller, Request::RoleGet(RoleRequest { role }), RoleGet);
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: convert::header(answer.header),
            perm: answer.perm.into_iter().map(etcd_permission).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Grpc<pb::AuthRoleListRequest>,
    ) -> Answer<pb::AuthRoleListResponse> {
        let caller = Caller::of(request.metadata());
        let answer = call_as!(self, &caller, Request::RoleList, RoleList);
        Ok(Response::new(pb::AuthRoleListResponse {
            header: convert::header(answer.header),
            roles: answer.roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Grpc<pb::AuthRoleDeleteRequest>,
    ) -> Answer<pb::AuthRoleDeleteResponse> {
        let caller = Caller::of(request.metadata());
        let role = request.into_inner().role;
        let answer = call_as!(self, &caller, Request::RoleDelete(RoleRequest { role }), RoleDelete);
        Ok(Response::new(pb::AuthRoleDeleteResponse { header: convert::header(answer.header) }))
    }

    async fn role_grant_permission(
        &self,
        request: Grpc<pb::AuthRoleGrantPermissionRequest>,
    ) -> Answer<pb::AuthRoleGrantPermissionResponse> {
        let caller = Caller::of(request.metadata());
        let pb::AuthRoleGrantPermissionRequest { name, perm } = request.into_inner();
        let Some(perm) = perm else {
            return Err(status::from_body(&ErrorBody::new(ErrorCode::PermissionNotGiven)));
        };
        let asked = RoleGrantPermissionRequest { role: name, perm: ember_permission(perm)? };
        let answer =
            call_as!(self, &caller, Request::RoleGrantPermission(asked), RoleGrantPermission);
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: convert::header(answer.header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Grpc<pb::AuthRoleRevokePermissionRequest>,
    ) -> Answer<pb::AuthRoleRevokePermissionResponse> {
        let caller = Caller::of(request.metadata());
        let pb::AuthRoleRevokePermissionRequest { role, key, range_end } = request.into_inner();
        let asked = RoleRevokePermissionRequest { role, key, range_end };
        let answer =
            call_as!(self, &caller, Request::RoleRevokePermission(asked), RoleRevokePermission);
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: convert::header(answer.header),
        }))
    }
}

/// etcd's permission as the node's; an unknown type is refused.
fn ember_permission(perm: authpb::Permission) -> Result<Permission, Status> {
    let perm_type = match authpb::permission::Type::try_from(perm.perm_type) {
        Ok(authpb::permission::Type::Read) => PermissionType::Read,
        Ok(authpb::permission::Type::Write) => PermissionType::Write,
        Ok(authpb::permission::Type::Readwrite) => PermissionType::ReadWrite,
        Err(_) => {
            let why = format!("ember: unknown permission type {}", perm.perm_type);
            return Err(Status::invalid_argument(why));
        }
    };
    Ok(Permission { perm_type, key: perm.key, range_end: perm.range_end })
}

fn etcd_permission(perm: Permission) -> authpb::Permission {
    let perm_type = match perm.perm_type {
        PermissionType::Read => authpb::permission::Type::Read,
        PermissionType::Write => authpb::permission::Type::Write,
        PermissionType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission { perm_type: perm_type as i32, key: perm.key, range_end: perm.range_end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_keep_etcds_type_numbers() {
        for (number, ours) in
            [(0, PermissionType::Read), (1, PermissionType::Write), (2, PermissionType::ReadWrite)]
        {
            let theirs =
                authpb::Permission { perm_type: number, key: b"k".to_vec(), range_end: vec![] };
            let converted = ember_permission(theirs.clone()).unwrap();
            assert_eq!(converted.perm_type, ours);
            assert_eq!(etcd_permission(converted), theirs);
        }
        let unknown = authpb::Permission { perm_type: 7, ..Default::default() };
        assert_eq!(ember_permission(unknown).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
