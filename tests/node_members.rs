//! Membership end to end with real `ember serve` processes: the replicated
//! member table, a member joining with the settings `ember member add`
//! prints (by snapshot), removal (of a running member and of one that was
//! down), promotion of a learner, the changes that are refused, and a data
//! directory that refuses another identity.

mod support;

use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, ClientError, Config};
use ember::proto::{ErrorCode, Member, RangeRequest};
use support::cli::{env_lines, run};
use support::cluster::Cluster;
use support::ports::free_port;
use support::process::wait_exit;

const WAIT: Duration = Duration::from_secs(15);
/// `ember serve`'s exit code for a member removed from the cluster.
const EXIT_MEMBER_REMOVED: i32 = 4;

fn put(client: &mut Client, key: &str, value: &str) {
    client.put(key.as_bytes(), value.as_bytes()).expect("put");
}

fn get(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    let request = RangeRequest { key: key.into(), ..RangeRequest::default() };
    client.range(request).ok()?.kvs.into_iter().next().map(|kv| kv.value)
}

/// Waits until member `i` lists `count` members, each started (a name and
/// client URLs); the list.
fn wait_members(c: &Cluster, i: usize, count: usize) -> Vec<Member> {
    let deadline = Instant::now() + WAIT;
    loop {
        let members = c.client(i).member_list(false).map(|r| r.members).unwrap_or_default();
        let started = members.iter().all(|m| !m.name.is_empty() && !m.client_urls.is_empty());
        if members.len() == count && started {
            return members;
        }
        assert!(Instant::now() < deadline, "member {i} lists {members:?}");
        sleep(Duration::from_millis(50));
    }
}

fn all_endpoints(c: &Cluster, skip: &[usize]) -> Client {
    let endpoints: Vec<String> = (0..c.members.len())
        .filter(|i| !skip.contains(i) && c.members[*i].is_running())
        .map(|i| c.members[i].endpoint())
        .collect();
    Client::connect(Config::new(endpoints)).expect("a member answers")
}

fn code(error: &ClientError) -> Option<ErrorCode> {
    error.code()
}

#[test]
fn a_fourth_member_joins_by_snapshot_and_a_removed_member_stops() {
    let mut c = Cluster::start("members-join", 3, &["--snapshot-count", "20"]);
    let leader = c.wait_leader(WAIT);
    for i in 0..3 {
        let members = wait_members(&c, i, 3);
        for (m, harness) in members.iter().zip(sorted_by_id(&c, &members)) {
            assert_eq!(m.client_urls, [format!("http://{}", c.members[harness].endpoint())]);
            assert_eq!(m.name, c.members[harness].name);
        }
    }
    let mut client = c.client(leader);
    for k in 0..60 {
        put(&mut client, &format!("k{k}"), &format!("v{k}"));
    }
    let n4 = c.push_member("n4");
    let peer_url = format!("http://127.0.0.1:{}", c.members[n4].peer_port);
    let endpoint = c.members[leader].endpoint();
    let out = run(&["member", "add", "n4", "--peer-urls", &peer_url, "--endpoints", &endpoint]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().next().unwrap().contains(" added to cluster "), "{text}");
    let env = env_lines(&text);
    assert_eq!(env.len(), 4, "{text}");
    c.spawn_with_env(n4, &env);
    let mut joined = c.client(n4);
    let deadline = Instant::now() + WAIT;
    while get(&mut joined, "k59").as_deref() != Some(b"v59".as_slice()) {
        assert!(Instant::now() < deadline, "n4 did not catch up");
        sleep(Duration::from_millis(50));
    }
    assert!(c.log_of(n4).contains("received a snapshot"), "n4 caught up without a snapshot");
    wait_members(&c, n4, 4);

    let follower = (0..3).find(|&i| i != leader).unwrap();
    let id = c.status(follower).unwrap().header.member_id;
    let removed = client.member_remove(id).expect("remove a follower");
    assert_eq!(removed.members.len(), 3);
    assert_eq!(c.wait_exit(follower, WAIT).code(), Some(EXIT_MEMBER_REMOVED));
    assert!(c.log_of(follower).contains("permanently removed from the cluster"));
    let mut rest = all_endpoints(&c, &[follower]);
    put(&mut rest, "after", "removal");
    assert_eq!(get(&mut joined, "after").as_deref(), Some(b"removal".as_slice()));
    assert_eq!(wait_members(&c, n4, 3).len(), 3);
}

#[test]
fn a_member_removed_while_down_stops_when_it_comes_back_and_stays_stopped() {
    let mut c = Cluster::start("members-removed-down", 3, &[]);
    let leader = c.wait_leader(WAIT);
    for i in 0..3 {
        wait_members(&c, i, 3);
    }
    let gone = (0..3).find(|&i| i != leader).unwrap();
    let id = c.status(gone).unwrap().header.member_id;
    c.kill(gone);
    let mut client = all_endpoints(&c, &[gone]);
    let removed = client.member_remove(id).expect("remove a member that is down");
    assert_eq!(removed.members.len(), 2);
    put(&mut client, "while", "away");

    c.spawn(gone);
    let status = c.wait_exit(gone, WAIT);
    let log = c.log_of(gone);
    assert_eq!(status.code(), Some(EXIT_MEMBER_REMOVED), "{log}");
    assert!(log.contains("permanently removed from the cluster"), "{log}");
    assert!(log.contains("refused it as removed"), "{log}");
    let told = c.logs();
    assert!(told.contains(&format!("member {id:016x} was removed from the cluster")), "{told}");

    // The data directory remembers: the next start is refused at once.
    let before = log.len();
    let started = Instant::now();
    c.spawn(gone);
    let status = c.wait_exit(gone, WAIT);
    let again = c.log_of(gone)[before..].to_string();
    assert_eq!(status.code(), Some(EXIT_MEMBER_REMOVED), "{again}");
    assert!(again.contains("--initial-cluster-state existing"), "{again}");
    assert!(!again.contains("serving clients"), "{again}");
    assert!(started.elapsed() < WAIT);

    let mut rest = all_endpoints(&c, &[gone]);
    put(&mut rest, "after", "return");
    assert_eq!(get(&mut rest, "while").as_deref(), Some(b"away".as_slice()));
    let survivors = (0..3).filter(|&i| i != gone);
    for i in survivors {
        assert_eq!(wait_members(&c, i, 2).len(), 2);
    }
    assert!(c.panics().is_empty(), "{}", c.logs());
}

/// `ember member add NAME` through member `via` with `n`'s peer URL: the
/// id printed and the settings to start it with.
fn add_member(c: &Cluster, via: usize, n: usize) -> (u64, Vec<(String, String)>) {
    let peer_url = format!("http://127.0.0.1:{}", c.members[n].peer_port);
    let endpoint = c.members[via].endpoint();
    let name = c.members[n].name.clone();
    let out = run(&["member", "add", &name, "--peer-urls", &peer_url, "--endpoints", &endpoint]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let id = text.split_whitespace().nth(1).and_then(|hex| u64::from_str_radix(hex, 16).ok());
    (id.unwrap_or_else(|| panic!("no id in {text}")), env_lines(&text))
}

fn wait_key(c: &Cluster, i: usize, key: &str) {
    let deadline = Instant::now() + WAIT;
    let mut client = c.client(i);
    while get(&mut client, key).is_none() {
        assert!(Instant::now() < deadline, "member {i} never served {key}:\n{}", c.log_of(i));
        sleep(Duration::from_millis(50));
        client = c.client(i);
    }
}

#[test]
fn a_member_added_again_gets_a_fresh_id_and_learns_it_from_the_cluster() {
    let mut c = Cluster::start("members-fresh-id", 3, &[]);
    let leader = c.wait_leader(WAIT);
    for i in 0..3 {
        wait_members(&c, i, 3);
    }
    let n4 = c.push_member("n4");
    let (first, env) = add_member(&c, leader, n4);
    c.spawn_with_env(n4, &env);
    let mut client = all_endpoints(&c, &[n4]);
    put(&mut client, "first", "1");
    wait_key(&c, n4, "first");
    assert_eq!(c.status(n4).unwrap().header.member_id, first);
    assert!(c.log_of(n4).contains(&format!("this member is {first:016x}")));

    client.member_remove(first).expect("remove n4");
    assert_eq!(c.wait_exit(n4, WAIT).code(), Some(EXIT_MEMBER_REMOVED));
    // The same name and peer URL, added again with an empty data directory.
    std::fs::remove_dir_all(c.data_dir(n4)).unwrap();
    let (second, env) = add_member(&c, leader, n4);
    assert_ne!(second, first, "a re-added member got the removed member's id");
    c.spawn_with_env(n4, &env);
    put(&mut client, "second", "2");
    wait_key(&c, n4, "second");
    assert_eq!(c.status(n4).unwrap().header.member_id, second);
    assert_eq!(wait_members(&c, leader, 4).iter().filter(|m| m.id == second).count(), 1);

    // A member the cluster was never told about is refused, saying so.
    let n5 = c.push_member("n5");
    let url = format!("http://127.0.0.1:{}", c.members[n5].peer_port);
    let stranger: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "EMBER_NAME" => (k.clone(), "n5".to_string()),
            "EMBER_INITIAL_ADVERTISE_PEER_URLS" => (k.clone(), url.clone()),
            "EMBER_INITIAL_CLUSTER" => (k.clone(), format!("{v},n5={url}")),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    c.spawn_with_env(n5, &stranger);
    let status = c.wait_exit(n5, WAIT);
    let log = c.log_of(n5);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("are not in the cluster's member table"), "{log}");
    assert!(c.panics().is_empty(), "{}", c.logs());
}

/// The harness index of each listed member.
fn sorted_by_id(c: &Cluster, members: &[Member]) -> Vec<usize> {
    members
        .iter()
        .map(|m| (0..c.members.len()).find(|&i| c.status(i).unwrap().header.member_id == m.id))
        .map(|i| i.expect("every listed member runs"))
        .collect()
}

#[test]
fn unsafe_changes_are_refused_and_a_caught_up_learner_is_promoted() {
    let mut c = Cluster::start("members-rules", 3, &[]);
    let leader = c.wait_leader(WAIT);
    wait_members(&c, leader, 3);
    let mut l = c.client(leader);
    let n4 = c.push_member("n4");
    let url4 = format!("http://127.0.0.1:{}", c.members[n4].peer_port);
    let added = l.member_add("n4", vec![url4.clone()], true).expect("add a learner");
    assert!(added.member.is_learner);
    let learner = added.member.id;
    assert_eq!(added.members.len(), 4);

    let own = c.status(leader).unwrap().header.member_id;
    assert_eq!(code(&l.member_promote(learner).unwrap_err()), Some(ErrorCode::LearnerNotReady));
    assert_eq!(code(&l.member_promote(own).unwrap_err()), Some(ErrorCode::MemberNotLearner));
    let same_url = l.member_add("n9", vec![url4.clone()], false).unwrap_err();
    assert_eq!(code(&same_url), Some(ErrorCode::PeerUrlExists));
    assert_eq!(code(&l.member_remove(0x1234).unwrap_err()), Some(ErrorCode::MemberNotFound));
    let bad = l.member_add("n9", vec!["nope".into()], false).unwrap_err();
    assert_eq!(code(&bad), Some(ErrorCode::MemberBadUrls));

    // Two voters that never start: five voters, three started, still a
    // quorum. A sixth would need four started; removing a started one
    // would leave two started of four.
    let mut ghosts = Vec::new();
    for name in ["g1", "g2"] {
        let url = format!("http://127.0.0.1:{}", free_port());
        ghosts.push(l.member_add(name, vec![url], false).expect("add a voter").member.id);
    }
    let url = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(
        code(&l.member_add("g3", vec![url], false).unwrap_err()),
        Some(ErrorCode::NotEnoughStartedMembers)
    );
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let started = c.status(follower).unwrap().header.member_id;
    let refused = l.member_remove(started).unwrap_err();
    assert_eq!(code(&refused), Some(ErrorCode::NotEnoughStartedMembers));
    for ghost in ghosts {
        l.member_remove(ghost).expect("remove an unstarted voter");
    }

    let cluster: Vec<String> = (0..4)
        .map(|i| format!("{}=http://127.0.0.1:{}", c.members[i].name, c.members[i].peer_port))
        .collect();
    let env = [
        ("EMBER_NAME", "n4".to_string()),
        ("EMBER_INITIAL_CLUSTER", cluster.join(",")),
        ("EMBER_INITIAL_ADVERTISE_PEER_URLS", url4),
        ("EMBER_INITIAL_CLUSTER_STATE", "existing".to_string()),
    ];
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    c.spawn_with_env(n4, &env);
    assert!(c.status(n4).is_none_or(|s| s.is_learner || s.raft_applied_index == 0));
    let deadline = Instant::now() + WAIT;
    loop {
        match l.member_promote(learner) {
            Ok(r) => {
                assert!(r.members.iter().all(|m| !m.is_learner));
                break;
            }
            Err(e) if code(&e) == Some(ErrorCode::LearnerNotReady) => {}
            Err(e) => panic!("promote: {e}"),
        }
        assert!(Instant::now() < deadline, "the learner never caught up");
        sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + WAIT;
    while c.status(n4).is_none_or(|s| s.is_learner) {
        assert!(Instant::now() < deadline, "n4 is still a learner in Raft");
        sleep(Duration::from_millis(50));
    }
    put(&mut l, "promoted", "yes");
}

/// Runs `ember serve` with `args`; its output once it exits (killed after
/// ten seconds, which fails the caller's assertions).
fn serve_until_exit(args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ember serve starts");
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn a_data_directory_refuses_another_name_or_token() {
    let mut c = Cluster::start("members-identity", 1, &[]);
    let leader = c.wait_leader(WAIT);
    put(&mut c.client(leader), "kept", "1");
    assert!(c.terminate(0).success());
    let m = &c.members[0];
    let peer = format!("127.0.0.1:{}", m.peer_port);
    let data_dir = c.dir.join(&m.name).display().to_string();
    let run = |name: &str, token: &str| {
        let args = [
            "--name",
            name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &m.endpoint(),
            "--listen-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("{name}=http://{peer}"),
            "--initial-cluster-token",
            token,
        ];
        serve_until_exit(&args.map(String::from))
    };
    let out = run("other", "ember-cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("\"n1\"") && stderr.contains("\"other\""), "{stderr}");
    let out = run("n1", "another-token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("\"ember-cluster\"") && stderr.contains("\"another-token\""));
    c.spawn(0);
    let leader = c.wait_leader(WAIT);
    assert_eq!(get(&mut c.client(leader), "kept").as_deref(), Some(b"1".as_slice()));
}

/// A member added at runtime records its id at its first start, but until
/// its first snapshot nothing on its disk names its peers: restarted in
/// that window, it asks the cluster for their ids again rather than derive
/// them from their names, and rejoins as the same member. The window is
/// held open by freezing n1, the leader, so that the two voters have none
/// to send n3 a snapshot.
#[test]
fn a_joiner_restarted_before_its_first_snapshot_keeps_the_ids_the_cluster_chose() {
    let mut c = Cluster::start("members-join-restart", 1, &[]);
    c.wait_leader(WAIT);
    put(&mut c.client(0), "before", "join");
    let n2 = c.push_member("n2");
    let (n2_id, env) = add_member(&c, 0, n2);
    assert_ne!(n2_id, c.members[n2].id, "a runtime id is not the one its name gives");
    c.spawn_with_env(n2, &env);
    wait_members(&c, 0, 2);
    wait_key(&c, n2, "before");
    let n3 = c.push_member("n3");
    let (n3_id, env) = add_member(&c, 0, n3);

    // n1 leads (it was alone) and n2 cannot lead without it: with n1
    // frozen, no member can send n3 a snapshot.
    assert_eq!(c.status(n2).unwrap().leader_id, c.members[0].id);
    c.stop(0);
    c.spawn_with_env(n3, &env);
    let deadline = Instant::now() + WAIT;
    while !c.log_of(n3).contains(&format!("this member is {n3_id:016x}")) {
        assert!(Instant::now() < deadline, "n3 did not learn its id:\n{}", c.log_of(n3));
        sleep(Duration::from_millis(50));
    }
    // The identity is written right after the id is learned.
    let identity = c.data_dir(n3).join("member");
    while !identity.exists() {
        assert!(Instant::now() < deadline, "n3 recorded no identity:\n{}", c.log_of(n3));
        sleep(Duration::from_millis(20));
    }
    c.kill(n3);
    let first_start = c.log_of(n3);
    assert!(!first_start.contains("received a snapshot"), "{first_start}");

    c.spawn_with_env(n3, &env);
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let members = c.client(n3).member_list(false).map(|r| r.members).unwrap_or_default();
        if !members.is_empty() {
            break members;
        }
        assert!(Instant::now() < deadline, "n3 did not answer:\n{}", c.log_of(n3));
        sleep(Duration::from_millis(50));
    };
    let ids = |name: &str| -> Vec<u64> {
        listed.iter().filter(|m| m.name == name).map(|m| m.id).collect()
    };
    assert_eq!(ids("n2"), vec![n2_id], "n3 names n2 by the cluster's id: {listed:?}");
    assert_eq!(ids("n3"), vec![n3_id], "{listed:?}");
    assert_eq!(c.status(n3).unwrap().header.member_id, n3_id);

    c.resume(0);
    wait_key(&c, n3, "before");
    assert!(c.log_of(n3).contains("received a snapshot"), "{}", c.log_of(n3));
    let members = wait_members(&c, n3, 3);
    let n3_listed = members.iter().find(|m| m.name == "n3").expect("n3 listed");
    assert_eq!(n3_listed.id, n3_id);
    put(&mut all_endpoints(&c, &[]), "after", "restart");
    wait_key(&c, n3, "after");
    assert!(c.panics().is_empty(), "{}", c.logs());
}
