//! Generates etcd's message types and gRPC service traits from `proto/`
//! with the protoc that `protoc-bin-vendored` ships, so a build needs no
//! protoc installed on the machine.

fn main() -> std::io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .map_err(|error| std::io::Error::other(format!("no vendored protoc: {error}")))?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().build_client(false).build_server(true).compile_with_config(
        config,
        &["proto/etcdserverpb/rpc.proto"],
        &["proto"],
    )
}
