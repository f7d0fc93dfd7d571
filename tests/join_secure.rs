//! A member joining with `--initial-cluster-state existing` asks a peer
//! for the member table over the peer port, under the same rules as any
//! peer: with real `ember serve` processes, a joiner learns its id from a
//! cluster with peer TLS and from one with a peer secret, and a joiner
//! whose certificate the cluster does not trust, or whose secret is not
//! the cluster's, is refused and stops, saying why.

mod support;

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::proto::RangeRequest;
use support::certs::Certs;
use support::cli::{env_lines, run};
use support::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(15);
/// How long a joiner asks before it gives up (`JOIN_ASK_WAIT`), with room
/// for a loaded machine.
const GIVE_UP_WAIT: Duration = Duration::from_secs(50);

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Peer TLS flags of member `name`: its certificate `cert`, trusting `ca`.
fn peer_tls(certs: &Certs, cert: &str, ca: &str) -> Vec<String> {
    let args = [
        "--peer-cert-file",
        &path(&certs.pem(cert)),
        "--peer-key-file",
        &path(&certs.key(cert)),
        "--peer-trusted-ca-file",
        &path(&certs.pem(ca)),
    ]
    .map(String::from);
    args.to_vec()
}

fn secret(c: &Cluster, file: &str, byte: u8) -> Vec<String> {
    let at = c.dir.join(file);
    std::fs::write(&at, [byte; 32]).unwrap();
    vec!["--peer-secret-file".to_string(), path(&at)]
}

/// `ember member add` of member `n` through member 0, with `extra`
/// flags: the id printed and the `EMBER_*` settings to start it with.
fn add_member(c: &Cluster, n: usize, extra: &[&str]) -> (u64, Vec<(String, String)>) {
    let peer_url = format!("{}://127.0.0.1:{}", c.peer_scheme, c.members[n].peer_port);
    let name = c.members[n].name.clone();
    let endpoint = c.members[0].endpoint();
    let args = ["member", "add", &name, "--peer-urls", &peer_url, "--endpoints", &endpoint];
    let out = run(&[&args[..], extra].concat());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let id = text.split_whitespace().nth(1).and_then(|hex| u64::from_str_radix(hex, 16).ok());
    let env = env_lines(&text);
    (id.unwrap_or_else(|| panic!("no id in {text}")), env)
}

fn wait_key(c: &Cluster, i: usize, key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let request = RangeRequest { key: key.into(), ..RangeRequest::default() };
        let found = c.client(i).range(request).map(|r| r.kvs.len()).unwrap_or(0);
        if found == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "member {i} never served {key}:\n{}", c.log_of(i));
        sleep(Duration::from_millis(50));
    }
}

/// One member running with `args`, a key written, and two members added
/// to its table: the good joiner (index 1) and the bad one (index 2).
fn one_member_and_two_joiners(c: &mut Cluster) -> [(u64, Vec<(String, String)>); 2] {
    c.spawn(0);
    c.wait_leader(WAIT);
    c.client(0).put(b"before", b"join").unwrap();
    let good = c.push_member("n2");
    let bad = c.push_member("n3");
    // A second voter may join a single member; the third, added while
    // the second has not started, joins as a learner.
    [add_member(c, good, &[]), add_member(c, bad, &["--learner"])]
}

/// Starts both joiners at once (the bad one keeps asking until it gives
/// up); the good one learns its id and serves the key written before; the
/// bad one exits, its log saying `refusal`.
fn both_join(c: &mut Cluster, joiners: [(u64, Vec<(String, String)>); 2], refusal: &str) {
    let [(good_id, good_env), (_, bad_env)] = joiners;
    c.spawn_with_env(2, &bad_env);
    c.spawn_with_env(1, &good_env);
    wait_key(c, 1, "before");
    assert!(c.log_of(1).contains(&format!("this member is {good_id:016x}")), "{}", c.log_of(1));
    assert_eq!(c.status(1).unwrap().header.member_id, good_id);

    let status = c.wait_exit(2, GIVE_UP_WAIT);
    let log = c.log_of(2);
    assert!(!status.success(), "{log}");
    assert!(log.contains("no member gave its member table"), "{log}");
    assert!(log.contains(refusal), "the log does not say {refusal:?}:\n{log}");
    assert!(!log.contains("this member is"), "{log}");
    assert!(c.panics().is_empty(), "{}", c.logs());
}

#[test]
fn a_joiner_learns_its_id_under_peer_tls_and_an_untrusted_one_is_refused() {
    let mut c = Cluster::prepare("join-tls", 1, &[]);
    let certs = Certs::new(&c.dir.join("certs"));
    certs.ca("ca");
    certs.ca("other-ca");
    for name in ["n1", "n2"] {
        certs.leaf("ca", name, "IP:127.0.0.1,DNS:localhost");
    }
    certs.leaf("other-ca", "n3", "IP:127.0.0.1,DNS:localhost");
    c.peer_scheme = "https";
    // n3 trusts the cluster's CA, but its own certificate is another CA's.
    c.member_args = vec![
        peer_tls(&certs, "n1", "ca"),
        peer_tls(&certs, "n2", "ca"),
        peer_tls(&certs, "n3", "ca"),
    ];
    let joiners = one_member_and_two_joiners(&mut c);
    both_join(&mut c, joiners, "TLS: ");
}

#[test]
fn a_joiner_learns_its_id_under_the_peer_secret_and_a_wrong_secret_is_refused() {
    let mut c = Cluster::prepare("join-secret", 1, &[]);
    let right = secret(&c, "peer.secret", 7);
    let wrong = secret(&c, "wrong.secret", 9);
    c.member_args = vec![right.clone(), right, wrong];
    let joiners = one_member_and_two_joiners(&mut c);
    both_join(&mut c, joiners, "the hello does not prove the peer secret");
}
