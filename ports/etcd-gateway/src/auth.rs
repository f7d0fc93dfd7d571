//! etcd's Auth service. Ember has no users or roles yet, so every request
//! is served without authentication and `AuthStatus` says so; the methods
//! that would manage auth answer UNIMPLEMENTED, naming themselves.

use tonic::{Request as Grpc, Response, Status};

use crate::convert;
use crate::gateway::Gateway;
use crate::pb::etcdserverpb as pb;
use crate::status::unimplemented;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::auth_server::Auth for Gateway {
    async fn auth_status(&self, _: Grpc<pb::AuthStatusRequest>) -> Answer<pb::AuthStatusResponse> {
        let header = self.member_status().await?.header;
        Ok(Response::new(pb::AuthStatusResponse {
            header: convert::header(header),
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn auth_enable(&self, _: Grpc<pb::AuthEnableRequest>) -> Answer<pb::AuthEnableResponse> {
        Err(unimplemented("auth (auth_enable)"))
    }

    async fn auth_disable(
        &self,
        _: Grpc<pb::AuthDisableRequest>,
    ) -> Answer<pb::AuthDisableResponse> {
        Err(unimplemented("auth (auth_disable)"))
    }

    async fn authenticate(
        &self,
        _: Grpc<pb::AuthenticateRequest>,
    ) -> Answer<pb::AuthenticateResponse> {
        Err(unimplemented("auth (authenticate)"))
    }

    async fn user_add(&self, _: Grpc<pb::AuthUserAddRequest>) -> Answer<pb::AuthUserAddResponse> {
        Err(unimplemented("auth (user_add)"))
    }

    async fn user_get(&self, _: Grpc<pb::AuthUserGetRequest>) -> Answer<pb::AuthUserGetResponse> {
        Err(unimplemented("auth (user_get)"))
    }

    async fn user_list(
        &self,
        _: Grpc<pb::AuthUserListRequest>,
    ) -> Answer<pb::AuthUserListResponse> {
        Err(unimplemented("auth (user_list)"))
    }

    async fn user_delete(
        &self,
        _: Grpc<pb::AuthUserDeleteRequest>,
    ) -> Answer<pb::AuthUserDeleteResponse> {
        Err(unimplemented("auth (user_delete)"))
    }

    async fn user_change_password(
        &self,
        _: Grpc<pb::AuthUserChangePasswordRequest>,
    ) -> Answer<pb::AuthUserChangePasswordResponse> {
        Err(unimplemented("auth (user_change_password)"))
    }

    async fn user_grant_role(
        &self,
        _: Grpc<pb::AuthUserGrantRoleRequest>,
    ) -> Answer<pb::AuthUserGrantRoleResponse> {
        Err(unimplemented("auth (user_grant_role)"))
    }

    async fn user_revoke_role(
        &self,
        _: Grpc<pb::AuthUserRevokeRoleRequest>,
    ) -> Answer<pb::AuthUserRevokeRoleResponse> {
        Err(unimplemented("auth (user_revoke_role)"))
    }

    async fn role_add(&self, _: Grpc<pb::AuthRoleAddRequest>) -> Answer<pb::AuthRoleAddResponse> {
        Err(unimplemented("auth (role_add)"))
    }

    async fn role_get(&self, _: Grpc<pb::AuthRoleGetRequest>) -> Answer<pb::AuthRoleGetResponse> {
        Err(unimplemented("auth (role_get)"))
    }

    async fn role_list(
        &self,
        _: Grpc<pb::AuthRoleListRequest>,
    ) -> Answer<pb::AuthRoleListResponse> {
        Err(unimplemented("auth (role_list)"))
    }

    async fn role_delete(
        &self,
        _: Grpc<pb::AuthRoleDeleteRequest>,
    ) -> Answer<pb::AuthRoleDeleteResponse> {
        Err(unimplemented("auth (role_delete)"))
    }

    async fn role_grant_permission(
        &self,
        _: Grpc<pb::AuthRoleGrantPermissionRequest>,
    ) -> Answer<pb::AuthRoleGrantPermissionResponse> {
        Err(unimplemented("auth (role_grant_permission)"))
    }

    async fn role_revoke_permission(
        &self,
        _: Grpc<pb::AuthRoleRevokePermissionRequest>,
    ) -> Answer<pb::AuthRoleRevokePermissionResponse> {
        Err(unimplemented("auth (role_revoke_permission)"))
    }
}
