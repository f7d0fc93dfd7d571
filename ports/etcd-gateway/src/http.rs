//! `GET /version` and `GET /health` on the gRPC listener, in etcd's JSON
//! shapes: kubeadm and load balancers probe them over plain HTTP/1.1.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::gateway::Gateway;

/// The cluster version reported beside the server version: etcd reports
/// the major.minor of its members with patch 0.
fn cluster_version(etcd_version: &str) -> String {
    let mut parts = etcd_version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => etcd_version.to_string(),
    }
}

pub fn routes(gateway: Gateway) -> Router {
    let for_health = gateway.clone();
    Router::new()
        .route("/version", get(move || version(gateway.clone())))
        .route("/health", get(move || health(for_health.clone())))
}

async fn version(gateway: Gateway) -> impl IntoResponse {
    let server = &gateway.etcd_version;
    let body =
        format!(r#"{{"etcdserver":"{server}","etcdcluster":"{}"}}"#, cluster_version(server));
    json(StatusCode::OK, body)
}

/// Healthy when the member behind the gateway knows a leader and reports no
/// error condition, as etcd's own check.
async fn health(gateway: Gateway) -> impl IntoResponse {
    let reason = match gateway.member_status().await {
        Ok(status) if status.leader_id == 0 => Some("RAFT NO LEADER".to_string()),
        Ok(status) if !status.errors.is_empty() => Some(status.errors.join(", ")),
        Ok(_) => None,
        Err(error) => Some(error.message().to_string()),
    };
    match reason {
        None => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
        Some(reason) => {
            let reason = reason.replace(['"', '\\'], "'");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(r#"{{"health":"false","reason":"{reason}"}}"#),
            )
        }
    }
}

fn json(code: StatusCode, body: String) -> impl IntoResponse {
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cluster_version_drops_the_patch() {
        assert_eq!(super::cluster_version("3.5.13"), "3.5.0");
        assert_eq!(super::cluster_version("odd"), "odd");
    }
}
