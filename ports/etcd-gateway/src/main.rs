//! `ember-etcd`: etcd's v3 gRPC and JSON APIs in front of an Ember cluster.
//!
//! Layout: `main` (flags, the runtime, the listener), `gateway` (state
//! shared by the services), one file per etcd service (`kv`, `watch`,
//! `lease`, `cluster`, `maintenance`, `auth`), `http` (`/version`,
//! `/health`), `json_api` (etcd's JSON API over the same services, with
//! `transcode` for etcd's JSON mapping and `json` to read and write it),
//! `caller` (the user a call acts as), `convert` (etcd's messages to
//! Ember's and back), `status` (Ember's error codes as etcd's), `backend`
//! and `link` (the connections to the nodes, in Ember's own protocol).
//!
//! The gateway runs on one thread, like the node: a current-thread tokio
//! runtime. It holds no state of its own beyond connections; every answer
//! comes from a node.

mod auth;
mod backend;
mod caller;
mod cluster;
mod convert;
mod flags;
mod gateway;
mod http;
mod json;
mod json_api;
mod kv;
mod lease;
mod link;
mod maintenance;
mod status;
mod tls;
mod transcode;
mod watch;

mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    // `User` and `Role` are etcd's stored forms, never on the wire here.
    #[allow(dead_code)]
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::backend::Backend;
use crate::gateway::Gateway;
use crate::pb::etcdserverpb as rpc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match flags::parse(&args) {
        Ok(flags::Parsed::Run(settings)) => *settings,
        Ok(flags::Parsed::Help) => {
            print!("{}", flags::HELP);
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("ember-etcd: {why}\n\n{}", flags::HELP);
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ember-etcd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ember-etcd: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: flags::Settings) -> Result<(), String> {
    let gateway = Gateway {
        backend: Arc::new(Backend::new(settings.backend.clone())),
        etcd_version: settings.etcd_version.as_str().into(),
        advertise_client_urls: settings.advertise_client_urls.clone().into(),
        watch_streams: Arc::new(Semaphore::new(settings.max_watch_streams)),
    };
    let tls_config = match &settings.listener_tls {
        Some(files) => Some(tls::listener_config(files).map_err(|error| error.to_string())?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&settings.listen_addr)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", settings.listen_addr))?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    let scheme = if tls_config.is_some() { "https" } else { "http" };
    eprintln!(
        "ember-etcd: serving etcd's API on {scheme}://{bound} for {}",
        settings.backend.endpoints.join(",")
    );
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .add_routes(routes(gateway));
    let served = match (tls_config, settings.listener_tls) {
        (Some(config), Some(files)) => {
            let incoming = tls::incoming(listener, files, config);
            server.serve_with_incoming_shutdown(incoming, shutdown_signal()).await
        }
        _ => {
            // Answers are small and many clients wait on them: without
            // TCP_NODELAY a response can sit behind the client's delayed
            // acknowledgement.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming_shutdown(incoming, shutdown_signal()).await
        }
    };
    served.map_err(|error| error.to_string())
}

/// Every etcd service, then `/version`, `/health` and etcd's JSON API
/// beside them.
fn routes(gateway: Gateway) -> Routes {
    let max_request_bytes = flags::GRPC_MESSAGE_BYTES_MAX;
    let services = Routes::new(
        rpc::kv_server::KvServer::new(gateway.clone()).max_decoding_message_size(max_request_bytes),
    )
    .add_service(rpc::watch_server::WatchServer::new(gateway.clone()))
    .add_service(rpc::lease_server::LeaseServer::new(gateway.clone()))
    .add_service(rpc::cluster_server::ClusterServer::new(gateway.clone()))
    .add_service(rpc::maintenance_server::MaintenanceServer::new(gateway.clone()))
    .add_service(rpc::auth_server::AuthServer::new(gateway.clone()));
    let json_api = json_api::routes(gateway.clone());
    services.into_axum_router().merge(http::routes(gateway)).merge(json_api).into()
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
