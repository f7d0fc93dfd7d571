//! `GET /version` and `GET /health` on the gRPC listener, in etcd's JSON
//! shapes: kubeadm and load balancers probe them over plain HTTP/1.1.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::gateway::Gateway;

/// What etcd reports as the cluster version before its members have
/// decided one.
const NOT_DECIDED: &str = "not_decided";

/// The cluster version reported beside the server version: etcd reports
/// the major.minor of its members with patch 0, or `not_decided`. The
/// gateway speaks for the etcd release `--etcd-version` names, so once the
/// Ember members behind it have decided their cluster version (every
/// member published one) it reports that release; until then, as etcd,
/// `not_decided`.
fn cluster_version(etcd_version: &str, decided: bool) -> String {
    let mut parts = etcd_version.split('.');
    match (decided, parts.next(), parts.next()) {
        (false, _, _) => NOT_DECIDED.to_string(),
        (true, Some(major), Some(minor)) => format!("{major}.{minor}.0"),
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
    let decided = gateway.member_status().await.is_ok_and(|s| !s.cluster_version.is_empty());
    let server = &gateway.etcd_version;
    let cluster = cluster_version(server, decided);
    let body = format!(r#"{{"etcdserver":"{server}","etcdcluster":"{cluster}"}}"#);
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
    fn the_cluster_version_drops_the_patch_once_decided() {
        assert_eq!(super::cluster_version("3.5.13", true), "3.5.0");
        assert_eq!(super::cluster_version("odd", true), "odd");
        assert_eq!(super::cluster_version("3.5.13", false), "not_decided");
    }
}
