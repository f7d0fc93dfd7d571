//! `ember serve`'s configuration as an operator writes it: etcd's flags,
//! `EMBER_<FLAG>` fallbacks, defaults, consistency checks and derived ids.

use std::path::PathBuf;

use ember::cli::args::parse;
use ember::server::config::{
    ClusterState, Config, ConfigError, REQUEST_BYTES_MAX_DEFAULT, SERVE_FLAGS,
};

fn config_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let parsed = parse(&args, SERVE_FLAGS).expect("flags parse");
    let env: Vec<(String, String)> =
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_parsed(&parsed, |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

fn config(args: &[&str]) -> Result<Config, ConfigError> {
    config_with_env(args, &[])
}

const THREE: &str = "a=http://10.0.0.1:7380,b=10.0.0.2:7380,c=http://10.0.0.3:7380";

fn member(name: &str, ip: &str) -> Config {
    let peer = format!("http://{ip}:7380");
    let client = format!("{ip}:7379");
    let args = [
        "--name",
        name,
        "--initial-advertise-peer-urls",
        &peer,
        "--listen-peer-urls",
        "0.0.0.0:7380",
        "--listen-client-urls",
        &client,
        "--initial-cluster",
        THREE,
    ];
    config(&args).unwrap()
}

#[test]
fn no_flags_is_a_single_member_cluster_on_loopback() {
    let c = config(&[]).unwrap();
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.ember"));
    assert_eq!(c.listen_client_addrs[0].to_string(), "127.0.0.1:7379");
    assert_eq!(c.advertise_client_addrs, c.listen_client_addrs);
    assert_eq!(c.listen_peer_addrs[0].to_string(), "127.0.0.1:7380");
    assert_eq!(c.initial_cluster.len(), 1);
    assert_eq!(c.initial_cluster[0].name, "default");
    assert_eq!(c.initial_cluster[0].peer_addrs[0].to_string(), "127.0.0.1:7380");
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert_eq!(c.initial_cluster_token, "ember-cluster");
    assert_eq!((c.heartbeat_interval_ms, c.election_timeout_ms), (100, 1000));
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(c.max_request_bytes, REQUEST_BYTES_MAX_DEFAULT);
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.member_id, c.initial_cluster[0].id);
    assert_ne!(c.member_id, 0);
    assert_ne!(c.cluster_id, 0);
    assert_eq!(c.initial_peers().count(), 0);
}

#[test]
fn the_default_cluster_matches_the_etcd_style_spelling() {
    let spelled = config(&["--initial-cluster", "default=http://127.0.0.1:7380"]).unwrap();
    assert_eq!(spelled, config(&[]).unwrap());
}

#[test]
fn every_member_derives_the_same_ids() {
    let (a, b, c) = (member("a", "10.0.0.1"), member("b", "10.0.0.2"), member("c", "10.0.0.3"));
    assert_eq!(a.cluster_id, b.cluster_id);
    assert_eq!(b.cluster_id, c.cluster_id);
    assert_eq!(a.initial_cluster, b.initial_cluster);
    let ids = [a.member_id, b.member_id, c.member_id];
    assert!(ids.iter().all(|&id| id != 0));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    let peers_of_a: Vec<u64> = a.initial_peers().map(|(id, _)| id).collect();
    assert_eq!(peers_of_a.len(), 2);
    assert!(peers_of_a.contains(&b.member_id) && peers_of_a.contains(&c.member_id));
}

#[test]
fn ids_do_not_depend_on_the_order_members_are_written_in() {
    let reordered = "c=10.0.0.3:7380,a=10.0.0.1:7380,b=http://10.0.0.2:7380/";
    let args = ["--name", "a", "--initial-advertise-peer-urls", "10.0.0.1:7380"];
    let one = config(&[&args[..], &["--initial-cluster", THREE]].concat()).unwrap();
    let two = config(&[&args[..], &["--initial-cluster", reordered]].concat()).unwrap();
    assert_eq!((one.member_id, one.cluster_id), (two.member_id, two.cluster_id));
}

#[test]
fn another_token_is_another_cluster() {
    let one = config(&[]).unwrap();
    let two = config(&["--initial-cluster-token", "other"]).unwrap();
    assert_ne!(one.cluster_id, two.cluster_id);
    assert_ne!(one.member_id, two.member_id);
}

#[test]
fn environment_fills_in_and_flags_win() {
    let env = [("EMBER_DATA_DIR", "/var/lib/ember"), ("EMBER_SNAPSHOT_COUNT", "500")];
    let c = config_with_env(&["--snapshot-count", "700"], &env).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/ember"));
    assert_eq!(c.snapshot_count, 700);
    let env = [("EMBER_HEARTBEAT_INTERVAL", "50"), ("EMBER_ELECTION_TIMEOUT", "500")];
    let c = config_with_env(&[], &env).unwrap();
    assert_eq!((c.heartbeat_interval_ms, c.election_timeout_ms), (50, 500));
    let env = [("EMBER_INITIAL_CLUSTER_STATE", "existing")];
    assert_eq!(config_with_env(&[], &env).unwrap().initial_cluster_state, ClusterState::Existing);
}

#[test]
fn a_named_member_alone_gets_a_cluster_of_itself() {
    let c = config(&["--name", "n1", "--listen-peer-urls", "127.0.0.1:9380"]).unwrap();
    assert_eq!(c.initial_cluster.len(), 1);
    assert_eq!(c.initial_cluster[0].name, "n1");
    assert_eq!(c.initial_advertise_peer_addrs[0].to_string(), "127.0.0.1:9380");
}

#[test]
fn several_urls_per_flag() {
    let c = config(&["--listen-client-urls", "http://127.0.0.1:1,127.0.0.2:2"]).unwrap();
    assert_eq!(c.listen_client_addrs.len(), 2);
    let cluster = "x=127.0.0.1:7380,x=127.0.0.2:7380";
    let args = ["--name", "x", "--initial-advertise-peer-urls", "127.0.0.2:7380,127.0.0.1:7380"];
    let c = config(&[&args[..], &["--initial-cluster", cluster]].concat()).unwrap();
    assert_eq!(c.initial_cluster[0].peer_addrs.len(), 2);
}

fn flag_of(result: Result<Config, ConfigError>) -> &'static str {
    let err = result.expect_err("configuration should be refused");
    assert!(err.to_string().contains(&format!("--{}", err.flag)), "{err}");
    err.flag
}

#[test]
fn bad_values_name_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--heartbeat-interval", "fast"], "heartbeat-interval"),
        (&["--heartbeat-interval", "0"], "heartbeat-interval"),
        (&["--election-timeout", "-1"], "election-timeout"),
        (&["--snapshot-count", "0"], "snapshot-count"),
        (&["--max-request-bytes", "1.5MiB"], "max-request-bytes"),
        (&["--max-request-bytes", "999999999999"], "max-request-bytes"),
        (&["--max-request-bytes", "4194305"], "max-request-bytes"),
        (&["--max-txn-ops", ""], "max-txn-ops"),
        (&["--initial-cluster-state", "old"], "initial-cluster-state"),
        (&["--initial-cluster-token", ""], "initial-cluster-token"),
        (&["--listen-client-urls", "https://127.0.0.1:7379"], "listen-client-urls"),
        (&["--listen-peer-urls", "nowhere"], "listen-peer-urls"),
        (&["--advertise-client-urls", "127.0.0.1:0"], "advertise-client-urls"),
        (&["--name", "a=b"], "name"),
        (&["--data-dir", ""], "data-dir"),
        (&["--initial-cluster", "default"], "initial-cluster"),
    ];
    for (args, flag) in cases {
        assert_eq!(flag_of(config(args)), *flag, "{args:?}");
    }
}

#[test]
fn election_timeout_must_span_five_heartbeats() {
    let args = ["--heartbeat-interval", "100", "--election-timeout", "499"];
    assert_eq!(flag_of(config(&args)), "election-timeout");
    let args = ["--heartbeat-interval", "100", "--election-timeout", "500"];
    assert!(config(&args).is_ok());
}

#[test]
fn our_name_must_be_in_the_initial_cluster() {
    let args = ["--name", "d", "--initial-cluster", THREE];
    assert_eq!(flag_of(config(&args)), "initial-cluster");
}

#[test]
fn our_advertised_urls_must_match_the_initial_cluster() {
    let args = ["--name", "a", "--initial-advertise-peer-urls", "10.0.0.9:7380"];
    let err = config(&[&args[..], &["--initial-cluster", THREE]].concat()).unwrap_err();
    assert_eq!(err.flag, "initial-advertise-peer-urls");
    assert!(err.reason.contains("10.0.0.1:7380"), "{err}");
}

#[test]
fn two_members_cannot_share_an_address() {
    let cluster = "a=10.0.0.1:7380,b=10.0.0.1:7380";
    let args = ["--name", "a", "--initial-advertise-peer-urls", "10.0.0.1:7380"];
    let err = config(&[&args[..], &["--initial-cluster", cluster]].concat()).unwrap_err();
    assert_eq!(err.flag, "initial-cluster");
}

#[test]
fn wildcard_listeners_need_advertised_urls() {
    assert_eq!(flag_of(config(&["--listen-client-urls", "0.0.0.0:7379"])), "advertise-client-urls");
    let args = ["--listen-client-urls", "0.0.0.0:7379", "--advertise-client-urls", "10.0.0.1:7379"];
    let c = config(&args).unwrap();
    assert_eq!(c.advertise_client_addrs[0].to_string(), "10.0.0.1:7379");
}

#[test]
fn every_serve_flag_has_an_environment_twin() {
    const SWITCHES: [&str; 4] =
        ["client-cert-auth", "peer-client-cert-auth", "peer-insecure", "corrupt-repair"];
    for flag in SERVE_FLAGS {
        assert_eq!(flag.takes_value, !SWITCHES.contains(&flag.name), "{}", flag.name);
        assert!(!flag.help.is_empty(), "{}", flag.name);
    }
    let names: Vec<&str> = SERVE_FLAGS.iter().map(|f| f.name).collect();
    for etcd_flag in [
        "name",
        "data-dir",
        "listen-client-urls",
        "advertise-client-urls",
        "listen-peer-urls",
        "initial-advertise-peer-urls",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "heartbeat-interval",
        "election-timeout",
        "snapshot-count",
        "max-request-bytes",
        "max-txn-ops",
        "cert-file",
        "key-file",
        "trusted-ca-file",
        "client-cert-auth",
        "peer-cert-file",
        "peer-key-file",
        "peer-trusted-ca-file",
        "peer-client-cert-auth",
        "peer-cert-allowed-hostname",
        "tls-min-version",
        "max-learners",
        "experimental-max-learners",
    ] {
        assert!(names.contains(&etcd_flag), "{etcd_flag}");
    }
}

#[test]
fn peers_resolve_for_the_transport_and_timing_becomes_ticks() {
    let cluster = "a=127.0.0.1:7380,b=localhost:7381,c=http://127.0.0.3:7382";
    let args = ["--name", "a", "--initial-cluster", cluster, "--election-timeout", "1250"];
    let c = config(&args).unwrap();
    let peers = c.transport_peers().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.id != c.member_id && !p.addrs.is_empty()));
    let c_id = c.initial_cluster.iter().find(|m| m.name == "c").unwrap().id;
    let c_peer = peers.iter().find(|p| p.id == c_id).unwrap();
    assert_eq!(c_peer.addrs, vec!["127.0.0.3:7382".parse().unwrap()]);
    assert_eq!(c.tick_interval(), std::time::Duration::from_millis(100));
    assert_eq!(c.election_ticks(), 12);
}

#[test]
fn an_unresolvable_peer_names_the_initial_cluster() {
    let cluster = "a=127.0.0.1:7380,b=no-such-host.invalid:7381";
    let c = config(&["--name", "a", "--initial-cluster", cluster]).unwrap();
    assert_eq!(c.transport_peers().unwrap_err().flag, "initial-cluster");
}

#[test]
fn https_urls_need_a_certificate_and_a_certificate_needs_https() {
    let err = config(&["--listen-client-urls", "https://127.0.0.1:7379"]).unwrap_err();
    assert_eq!(err.flag, "listen-client-urls");
    assert!(err.reason.contains("--cert-file"), "{err}");
    let tls = ["--cert-file", "c.pem", "--key-file", "c.key"];
    let err = config(&[&tls[..], &["--listen-client-urls", "http://127.0.0.1:7379"]].concat());
    assert!(err.unwrap_err().reason.contains("https://"));
    let c = config(&[&tls[..], &["--listen-client-urls", "https://127.0.0.1:7379"]].concat());
    let c = c.unwrap();
    assert_eq!(c.client_url(&c.advertise_client_addrs[0]), "https://127.0.0.1:7379");
    assert!(c.client_tls.is_some() && c.peer_tls.is_none());
    assert_eq!(flag_of(config(&["--cert-file", "c.pem"])), "cert-file");
    assert_eq!(flag_of(config(&["--client-cert-auth"])), "cert-file");
    assert_eq!(flag_of(config(&[&tls[..], &["--client-cert-auth"]].concat())), "client-cert-auth");
    let err = config(&["--initial-cluster", "default=https://127.0.0.1:7380"]).unwrap_err();
    assert_eq!(err.flag, "initial-cluster");
}

#[test]
fn peer_tls_needs_the_peer_ca_and_always_checks_certificates() {
    let files = ["--peer-cert-file", "p.pem", "--peer-key-file", "p.key"];
    assert_eq!(flag_of(config(&files)), "peer-trusted-ca-file");
    let all = [&files[..], &["--peer-trusted-ca-file", "ca.pem"]].concat();
    let c = config(&[&all[..], &["--listen-peer-urls", "https://127.0.0.1:7380"]].concat());
    let c = c.unwrap();
    let peer_tls = c.peer_tls.as_ref().unwrap();
    assert!(peer_tls.server.client_cert_auth);
    assert_eq!(c.peer_url(&c.initial_advertise_peer_addrs[0]), "https://127.0.0.1:7380");
    let off = [&all[..], &["--peer-client-cert-auth=false"]].concat();
    assert_eq!(flag_of(config(&off)), "peer-client-cert-auth");
    assert_eq!(flag_of(config(&["--tls-min-version", "TLS1.1"])), "tls-min-version");
    assert!(config(&["--tls-min-version", "TLS1.3"]).is_ok());
}

#[test]
fn a_peer_port_on_the_network_needs_authentication_or_consent() {
    let wildcard = ["--listen-peer-urls", "0.0.0.0:7380"];
    let advertise = ["--initial-advertise-peer-urls", "10.0.0.1:7380"];
    let args = [&wildcard[..], &advertise[..]].concat();
    let network: std::net::SocketAddr = "0.0.0.0:7380".parse().unwrap();
    let loopback: std::net::SocketAddr = "127.0.0.1:7380".parse().unwrap();
    let open = config(&args).unwrap();
    assert!(open.check_peer_exposure(loopback).is_ok());
    let err = open.check_peer_exposure(network).unwrap_err();
    assert!(err.reason.contains("--peer-secret-file") && err.reason.contains("--peer-insecure"));
    let consented = config(&[&args[..], &["--peer-insecure"]].concat()).unwrap();
    assert!(consented.check_peer_exposure(network).is_ok());
    let secret = config(&[&args[..], &["--peer-secret-file", "s"]].concat()).unwrap();
    assert!(secret.check_peer_exposure(network).is_ok());
}

#[test]
fn client_timeouts_are_flags_and_environment_within_their_ranges() {
    let c = config(&[]).unwrap();
    let defaults = (c.client_hello_timeout_ms, c.client_frame_timeout_ms);
    assert_eq!(defaults, (2_000, 30_000));
    assert_eq!(c.watch_slow_reader_timeout_ms, 5_000);
    let args = ["--client-hello-timeout", "500", "--client-frame-timeout", "120000"];
    let env = [("EMBER_WATCH_SLOW_READER_TIMEOUT", "250"), ("EMBER_CLIENT_HELLO_TIMEOUT", "9000")];
    let c = config_with_env(&args, &env).unwrap();
    let set =
        (c.client_hello_timeout_ms, c.client_frame_timeout_ms, c.watch_slow_reader_timeout_ms);
    assert_eq!(set, (500, 120_000, 250), "flags win over the environment");
    for (flag, value) in [
        ("client-hello-timeout", "99"),
        ("client-hello-timeout", "60001"),
        ("client-frame-timeout", "0"),
        ("client-frame-timeout", "600001"),
        ("watch-slow-reader-timeout", "5s"),
        ("watch-slow-reader-timeout", "600001"),
    ] {
        let arg = format!("--{flag}");
        assert_eq!(flag_of(config(&[&arg, value])), flag, "{flag} {value}");
    }
}

#[test]
fn corrupt_repair_is_on_unless_turned_off_by_flag_or_environment() {
    assert!(config(&[]).unwrap().corrupt_repair);
    assert!(config(&["--corrupt-repair"]).unwrap().corrupt_repair);
    assert!(!config(&["--corrupt-repair=false"]).unwrap().corrupt_repair);
    assert!(!config_with_env(&[], &[("EMBER_CORRUPT_REPAIR", "false")]).unwrap().corrupt_repair);
    assert!(config_with_env(&[], &[("EMBER_CORRUPT_REPAIR", "maybe")]).is_err());
}

#[test]
fn max_learners_defaults_to_etcds_one_and_reads_both_names_and_the_environment() {
    assert_eq!(config(&[]).unwrap().max_learners, 1);
    assert_eq!(config(&["--max-learners", "2"]).unwrap().max_learners, 2);
    assert_eq!(config(&["--experimental-max-learners", "3"]).unwrap().max_learners, 3);
    let env = [("EMBER_MAX_LEARNERS", "4")];
    assert_eq!(config_with_env(&[], &env).unwrap().max_learners, 4);
    assert_eq!(config_with_env(&["--max-learners", "5"], &env).unwrap().max_learners, 5);
    let both = ["--max-learners", "2", "--experimental-max-learners", "3"];
    assert_eq!(config(&both).unwrap().max_learners, 2, "Ember's name wins");
    assert_eq!(flag_of(config(&["--max-learners", "0"])), "max-learners");
    assert_eq!(flag_of(config(&["--max-learners", "9"])), "max-learners");
    assert_eq!(flag_of(config(&["--experimental-max-learners", "x"])), "experimental-max-learners");
}

/// What `member add` prints for a member joining a cluster that has an
/// unstarted one: that member unnamed, once per peer URL.
const PRINTED: &str = "a=http://10.0.0.1:7380,=http://10.0.0.5:7380,=http://10.0.0.6:7380,\
                       d=http://10.0.0.4:7380";

fn joining(initial_cluster: &str, state: &str) -> Result<Config, ConfigError> {
    let args = ["--name", "d", "--initial-advertise-peer-urls", "http://10.0.0.4:7380"];
    let rest = ["--initial-cluster", initial_cluster, "--initial-cluster-state", state];
    config(&[&args[..], &rest[..]].concat())
}

#[test]
fn an_unnamed_member_is_taken_when_joining_an_existing_cluster() {
    let c = joining(PRINTED, "existing").unwrap();
    assert_eq!(c.initial_cluster.len(), 4);
    let unnamed: Vec<String> = c
        .initial_cluster
        .iter()
        .filter(|m| m.name.is_empty())
        .map(|m| m.peer_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(unnamed.len(), 2, "one entry per URL: {unnamed:?}");
    assert!(unnamed.contains(&"10.0.0.5:7380".to_string()), "{unnamed:?}");
    assert_eq!(c.initial_peers().count(), 3);
    // The environment form, as `member add` prints it.
    let env = [
        ("EMBER_NAME", "d"),
        ("EMBER_INITIAL_CLUSTER", PRINTED),
        ("EMBER_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.0.4:7380"),
        ("EMBER_INITIAL_CLUSTER_STATE", "existing"),
    ];
    assert_eq!(config_with_env(&[], &env).unwrap(), c);
}

#[test]
fn an_unnamed_member_is_refused_in_a_new_cluster_and_checks_still_hold() {
    let err = joining(PRINTED, "new").unwrap_err();
    assert_eq!(err.flag, "initial-cluster");
    assert!(err.reason.contains("--initial-cluster-state existing"), "{err}");
    // An unnamed URL that a named member has, or that comes twice.
    let shared = "a=http://10.0.0.1:7380,=http://10.0.0.1:7380,d=http://10.0.0.4:7380";
    let err = joining(shared, "existing").unwrap_err();
    assert!(err.reason.contains("given to both"), "{err}");
    let twice = "=http://10.0.0.5:7380,=http://10.0.0.5:7380,d=http://10.0.0.4:7380";
    assert_eq!(joining(twice, "existing").unwrap_err().flag, "initial-cluster");
    // Our own name is never empty, and an unnamed entry still needs a URL.
    assert_eq!(flag_of(config(&["--name", ""])), "name");
    for bad in ["=", "=nowhere", "=http://0.0.0.0:7380", "=10.0.0.5:0"] {
        let text = format!("{bad},d=http://10.0.0.4:7380");
        assert_eq!(joining(&text, "existing").unwrap_err().flag, "initial-cluster", "{bad}");
    }
}
