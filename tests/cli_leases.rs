//! `ember lease ...` and `ember put --lease` through the built binary against
//! a real `ember serve`: the exact simple lines, the JSON numbers, hex ids,
//! keep-alive (once, and ended by Ctrl-C with exit 0), expiry seen through
//! `timetolive`, errors with exit 1 and usage errors with exit 2.

mod support;

use std::time::{Duration, Instant};

use support::cli::Running;
use support::cli::node::{ember, ok, single};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// The hex id out of `lease <hex> granted with TTL(<n>s)`.
fn granted_id(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "lease", "{line}");
    assert_eq!(&words[2..4], ["granted", "with"], "{line}");
    words[1].to_string()
}

#[test]
fn grant_put_timetolive_list_revoke_in_simple_and_json() {
    let (_cluster, e) = single("cli-lease");
    let line = ok(&e, &["lease", "grant", "60"]);
    assert!(line.ends_with(" granted with TTL(60s)\n"), "{line}");
    let id = granted_id(&line);
    assert!(u64::from_str_radix(&id, 16).is_ok(), "hex id: {id}");
    assert_eq!(ok(&e, &["put", "--lease", &id, "lk/1", "v"]), "OK\n");
    assert_eq!(ok(&e, &["put", "--lease", &format!("0x{id}"), "lk/2", "v"]), "OK\n");

    let ttl = ok(&e, &["lease", "timetolive", &id, "--keys"]);
    let prefix = format!("lease {id} granted with TTL(60s), remaining(");
    assert!(ttl.starts_with(&prefix), "{ttl}");
    assert!(ttl.ends_with("s), attached keys([lk/1 lk/2])\n"), "{ttl}");
    let json = ok(&e, &["lease", "timetolive", &id, "-w", "json"]);
    let decimal = u64::from_str_radix(&id, 16).unwrap();
    assert!(json.starts_with("{\"cluster_id\":"), "the header's fields at the top: {json}");
    assert!(json.contains(&format!("\"id\":{decimal},")), "{json}");
    assert!(json.contains("\"granted-ttl\":60,\"keys\":null}"), "{json}");
    assert_eq!(ok(&e, &["lease", "list"]), format!("found 1 leases\n{id}\n"));
    let table = ok(&e, &["lease", "list", "-w", "table"]);
    assert!(table.contains(&id), "{table}");

    assert_eq!(ok(&e, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ok(&e, &["get", "lk/", "--prefix"]), "", "the revoke deleted the keys");
    assert_eq!(ok(&e, &["lease", "timetolive", &id]), format!("lease {id} already expired\n"));
    assert_eq!(ok(&e, &["lease", "list"]), "found 0 leases\n");
}

#[test]
fn errors_exit_1_and_bad_command_lines_exit_2() {
    let (_cluster, e) = single("cli-lease-errors");
    let unknown = ember(&e, &["put", "--lease", "abc123", "k", "v"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("requested lease not found"), "{err}");
    assert_eq!(ember(&e, &["lease", "revoke", "abc123"]).status.code(), Some(1));
    let keep_alive = ember(&e, &["lease", "keep-alive", "--once", "abc123"]);
    assert_eq!(keep_alive.status.code(), Some(1));
    let err = String::from_utf8_lossy(&keep_alive.stderr);
    assert!(err.contains("lease abc123 expired or revoked"), "{err}");
    assert_eq!(
        ok(&e, &["lease", "grant", "30", "--id", "abc123"]).trim(),
        "lease abc123 granted with TTL(30s)"
    );
    let again = ember(&e, &["lease", "grant", "30", "--id", "abc123"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("lease already exists"));
    for bad in [
        &["lease"][..],
        &["lease", "grant"],
        &["lease", "grant", "ten"],
        &["lease", "revoke", "not-hex"],
        &["lease", "frobnicate"],
        &["put", "--lease", "zz", "k", "v"],
    ] {
        assert_eq!(ember(&e, bad).status.code(), Some(2), "{bad:?}");
    }
    let help = ok(&e, &["help", "lease"]);
    assert!(help.contains("keep-alive") && help.contains("timetolive"), "{help}");
    let completion = ok(&e, &["completion", "bash"]);
    assert!(completion.contains("grant revoke timetolive list keep-alive"), "{completion}");
}

#[test]
fn keep_alive_holds_a_lease_until_ctrl_c_and_then_it_expires() {
    let (_cluster, e) = single("cli-lease-keep");
    // The minimum TTL with the harness's 1 s election timeout is 2 s.
    let id = granted_id(&ok(&e, &["lease", "grant", "2"]));
    ok(&e, &["put", "--lease", &id, "held", "v"]);
    let once = ok(&e, &["lease", "keep-alive", "--once", &id]);
    assert_eq!(once, format!("lease {id} keepalived with TTL(2)\n"));
    let mut keeper = Running::start(&e, &["lease", "keep-alive", &id]);
    let started = Instant::now();
    // Four seconds, twice the TTL, of renewals every ~0.67 s.
    while started.elapsed() < Duration::from_secs(4) {
        let line = keeper.lines.recv_timeout(WAIT).expect("a renewal line");
        assert_eq!(line, format!("lease {id} keepalived with TTL(2)"));
    }
    assert_eq!(ok(&e, &["get", "held", "--print-value-only"]), "v\n");
    let status = keeper.interrupt(WAIT).expect("keep-alive still running after Ctrl-C");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends keep-alive cleanly");
    // Unrenewed, the lease goes within its TTL and a few election timeouts.
    let deadline = Instant::now() + Duration::from_secs(6);
    while ok(&e, &["lease", "timetolive", &id]) != format!("lease {id} already expired\n") {
        assert!(Instant::now() < deadline, "the lease outlived its keep-alive");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ok(&e, &["get", "held"]), "");
}
