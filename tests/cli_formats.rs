//! Every client command's output in each format, its flags as they reach
//! the request, and its exit codes, against the scripted fake server of
//! `client_fake` (fast and exact: the fake's headers are fixed).

mod client_fake;
mod support;

use std::process::Command;

use client_fake::*;
use ember::proto::*;
use support::cli::fake::{ember, ember_with_stdin};
use support::cli::{stderr, stdout};

const MEMBER: u64 = 7;

const HEADER_JSON_REV1: &str = r#"{"cluster_id":193,"member_id":7,"revision":1,"raft_term":2}"#;

/// Member answers come from the member table: etcd gives them no revision.
const HEADER_JSON_NO_REV: &str = r#"{"cluster_id":193,"member_id":7,"raft_term":2}"#;

fn fields_header(revision: i64) -> String {
    format!("\"ClusterID\" : 193\n\"MemberID\" : 7\n\"Revision\" : {revision}\n\"RaftTerm\" : 2\n")
}

#[test]
fn put_get_del_in_json_and_fields() {
    let store = FakeStore::default();
    let address = store.serve(MEMBER);
    let output = ember(&address, &["put", "k", "v", "-w", "json"]);
    assert_eq!(
        stdout(&output),
        format!("{{\"header\":{HEADER_JSON_REV1}}}\n"),
        "{}",
        stderr(&output)
    );
    let output = ember(&address, &["get", "k", "-w", "json"]);
    let kv = r#"{"key":"aw==","create_revision":1,"mod_revision":1,"version":1,"value":"dg=="}"#;
    assert_eq!(
        stdout(&output),
        format!("{{\"header\":{HEADER_JSON_REV1},\"kvs\":[{kv}],\"count\":1}}\n")
    );
    let output = ember(&address, &["get", "k", "--write-out=fields"]);
    let kv_fields = "\"Key\" : \"k\"\n\"CreateRevision\" : 1\n\"ModRevision\" : 1\n\"Version\" : 1\n\"Value\" : \"v\"\n\"Lease\" : 0\n";
    assert_eq!(
        stdout(&output),
        format!("{}{kv_fields}\"More\" : false\n\"Count\" : 1\n", fields_header(1))
    );
    let output = ember(&address, &["put", "k", "w", "--prev-kv", "-w", "fields"]);
    let prev = kv_fields
        .replace("\"Key", "\"PrevKey")
        .replace("\"Cr", "\"PrevCr")
        .replace("\"Mo", "\"PrevMo");
    let prev =
        prev.replace("\"Ve", "\"PrevVe").replace("\"Va", "\"PrevVa").replace("\"Le", "\"PrevLe");
    assert_eq!(stdout(&output), format!("{}{prev}", fields_header(2)));
    let output = ember(&address, &["del", "k", "-w", "json"]);
    let header = r#"{"cluster_id":193,"member_id":7,"revision":3,"raft_term":2}"#;
    assert_eq!(stdout(&output), format!("{{\"header\":{header},\"deleted\":1}}\n"));
    let output = ember(&address, &["get", "k", "-w", "json"]);
    assert_eq!(stdout(&output), format!("{{\"header\":{header}}}\n"), "no kvs, no count");
}

#[test]
fn put_reads_the_value_from_stdin_and_get_prints_values_or_counts() {
    let store = FakeStore::default();
    let address = store.serve(MEMBER);
    let output = ember_with_stdin(&address, &["put", "a"], b"line one\nline two\n");
    assert_eq!(stdout(&output), "OK\n", "{}", stderr(&output));
    ember(&address, &["put", "b", "2"]);
    let output = ember(&address, &["get", "a", "--print-value-only"]);
    assert_eq!(stdout(&output), "line one\nline two\n\n");
    let output = ember(&address, &["get", "a", "--from-key", "--print-value-only"]);
    assert_eq!(stdout(&output), "line one\nline two\n\n2\n");
    let output = ember(&address, &["get", "", "--prefix", "--count-only"]);
    assert_eq!(stdout(&output), "2\n");
}

#[test]
fn get_and_put_flags_reach_the_request() {
    let store = FakeStore::default();
    let address = store.serve(MEMBER);
    let args = [
        "get",
        "a",
        "z",
        "--sort-by",
        "MODIFY",
        "--order",
        "descend",
        "--keys-only",
        "--consistency",
        "s",
        "--min-mod-revision",
        "2",
        "--max-mod-revision",
        "9",
        "--min-create-revision",
        "1",
        "--max-create-revision",
        "8",
        "--rev",
        "9",
        "--limit",
        "3",
    ];
    assert_eq!(ember(&address, &args).status.code(), Some(0));
    ember(&address, &["get", "k", "--sort-by", "version"]);
    ember(&address, &["put", "k", "--ignore-value", "--lease", "a"]);
    ember(&address, &["put", "k", "v", "--ignore-lease"]);
    let requests = store.requests.lock().unwrap();
    let Request::Range(get) = &requests[0] else { panic!("{requests:?}") };
    let expected = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        limit: 3,
        revision: 9,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        serializable: true,
        keys_only: true,
        count_only: false,
        min_mod_revision: 2,
        max_mod_revision: 9,
        min_create_revision: 1,
        max_create_revision: 8,
    };
    assert_eq!(get, &expected);
    let Request::Range(sorted) = &requests[1] else { panic!() };
    assert_eq!((sorted.sort_order, sorted.sort_target), (SortOrder::Ascend, SortTarget::Version));
    let Request::Put(put) = &requests[2] else { panic!() };
    assert_eq!((put.ignore_value, put.lease, put.value.len()), (true, 10, 0));
    let Request::Put(put) = &requests[3] else { panic!() };
    assert!(put.ignore_lease);
}

/// Answers one request on the first connection with `answer`, then (if
/// asked) each following request with `then`.
fn one_answer(
    answer: impl FnOnce(Request) -> Result<Response, ErrorCode> + Send + 'static,
    then: Vec<Response>,
) -> (String, std::thread::JoinHandle<()>) {
    scripted(move |listener| {
        let mut peer = Peer::accept(&listener, MEMBER);
        let (id, request) = peer.read_request().expect("a request");
        match answer(request) {
            Ok(response) => peer.respond(id, &response),
            Err(code) => peer.fail(id, code),
        }
        for response in then {
            let (id, _) = peer.read_request().expect("a follow-up request");
            peer.respond(id, &response);
        }
    })
}

#[test]
fn txn_reads_every_compare_kind_and_prints_like_etcdctl() {
    let script = "value(\"k\") = \"v\"\nversion(\"k\") > \"1\"\ncreate(\"k\") < \"9\"\n\
                  mod(\"k\") != \"4\"\nlease(\"k\") = \"1f\"\n\nput k \"new value\"\nget k --prefix\n\ndel k\n";
    let (address, server) = one_answer(
        |request| {
            let Request::Txn(txn) = request else { panic!("{request:?}") };
            let targets: Vec<(CompareResult, CompareTarget)> =
                txn.compare.iter().map(|c| (c.result, c.target.clone())).collect();
            assert_eq!(
                targets,
                [
                    (CompareResult::Equal, CompareTarget::Value(b"v".to_vec())),
                    (CompareResult::Greater, CompareTarget::Version(1)),
                    (CompareResult::Less, CompareTarget::Create(9)),
                    (CompareResult::NotEqual, CompareTarget::Mod(4)),
                    (CompareResult::Equal, CompareTarget::Lease(0x1f)),
                ]
            );
            let RequestOp::Put(put) = &txn.success[0] else { panic!() };
            assert_eq!(put.value, b"new value");
            assert!(matches!(&txn.success[1], RequestOp::Range(r) if r.range_end == b"l"));
            assert!(matches!(&txn.failure[0], RequestOp::DeleteRange(d) if d.key == b"k"));
            let kv = KeyValue {
                key: b"k".to_vec(),
                value: b"new value".to_vec(),
                version: 2,
                ..KeyValue::default()
            };
            let range =
                RangeResponse { header: header(MEMBER, 5), kvs: vec![kv], more: false, count: 1 };
            Ok(Response::Txn(TxnResponse {
                header: header(MEMBER, 5),
                succeeded: true,
                responses: vec![
                    ResponseOp::Put(PutResponse { header: header(MEMBER, 5), prev_kv: None }),
                    ResponseOp::Range(range),
                ],
            }))
        },
        vec![],
    );
    let output = ember_with_stdin(&address, &["txn"], script.as_bytes());
    assert_eq!(stdout(&output), "SUCCESS\n\nOK\n\nk\nnew value\n", "{}", stderr(&output));
    server.join().unwrap();
}

#[test]
fn txn_json_wraps_each_response_as_etcd_does() {
    let (address, server) = one_answer(
        |_| {
            Ok(Response::Txn(TxnResponse {
                header: header(MEMBER, 1),
                succeeded: false,
                responses: vec![ResponseOp::DeleteRange(DeleteRangeResponse {
                    header: header(MEMBER, 1),
                    deleted: 0,
                    prev_kvs: vec![],
                })],
            }))
        },
        vec![],
    );
    let output =
        ember_with_stdin(&address, &["txn", "-w", "json"], b"mod(\"k\") > \"0\"\n\n\ndel k\n");
    let expected = format!(
        "{{\"header\":{HEADER_JSON_REV1},\"responses\":[{{\"Response\":{{\"ResponseDeleteRange\":{{\"header\":{{\"revision\":1}}}}}}}}]}}\n"
    );
    assert_eq!(stdout(&output), expected, "{}", stderr(&output));
    server.join().unwrap();
}

#[test]
fn txn_interactive_prompts_for_each_part() {
    let (address, server) = one_answer(
        |_| {
            Ok(Response::Txn(TxnResponse {
                header: header(MEMBER, 1),
                succeeded: false,
                responses: vec![],
            }))
        },
        vec![],
    );
    let output = ember_with_stdin(&address, &["txn", "-i"], b"mod(\"k\") > \"0\"\n\n\n");
    assert_eq!(
        stdout(&output),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nFAILURE\n"
    );
    server.join().unwrap();
    let output = ember_with_stdin(&dead_endpoint(), &["txn"], b"size(\"k\") > \"0\"\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("malformed comparison"), "{}", stderr(&output));
}

fn two_members() -> MemberListResponse {
    let member = |id, name: &str, port| Member {
        id,
        name: name.to_string(),
        peer_urls: vec![format!("http://127.0.0.1:{port}")],
        client_urls: vec![format!("http://127.0.0.1:{}", port + 1)],
        is_learner: false,
    };
    MemberListResponse {
        header: header(MEMBER, 1),
        members: vec![
            member(0x8e9e05c52164694d, "n1", 2380),
            member(0x91bc3c398fb3c146, "n2", 3380),
        ],
    }
}

#[test]
fn member_list_in_every_format() {
    let answers = vec![Response::MemberList(two_members()); 3];
    let (address, server) = scripted(move |listener| {
        for response in std::iter::once(Response::MemberList(two_members())).chain(answers) {
            let mut peer = Peer::accept(&listener, MEMBER);
            let (id, request) = peer.read_request().expect("member list");
            assert_eq!(request, Request::MemberList(MemberListRequest { linearizable: true }));
            peer.respond(id, &response);
        }
    });
    let simple = ember(&address, &["member", "list"]);
    assert_eq!(
        stdout(&simple),
        "8e9e05c52164694d, started, n1, http://127.0.0.1:2380, http://127.0.0.1:2381, false\n\
         91bc3c398fb3c146, started, n2, http://127.0.0.1:3380, http://127.0.0.1:3381, false\n"
    );
    let json = ember(&address, &["member", "list", "-w", "json"]);
    assert_eq!(
        stdout(&json),
        format!(
            "{{\"header\":{HEADER_JSON_NO_REV},\"members\":[\
             {{\"ID\":10276657743932975437,\"name\":\"n1\",\"peerURLs\":[\"http://127.0.0.1:2380\"],\"clientURLs\":[\"http://127.0.0.1:2381\"]}},\
             {{\"ID\":10501334649042878790,\"name\":\"n2\",\"peerURLs\":[\"http://127.0.0.1:3380\"],\"clientURLs\":[\"http://127.0.0.1:3381\"]}}]}}\n"
        )
    );
    let fields = ember(&address, &["member", "list", "-w", "fields"]);
    assert!(stdout(&fields).starts_with(&fields_header(1)));
    assert!(stdout(&fields).contains("\"ID\" : 10276657743932975437\n\"Name\" : \"n1\"\n\"PeerURL\" : \"http://127.0.0.1:2380\"\n\"ClientURL\" : \"http://127.0.0.1:2381\"\n\"IsLearner\" : false\n\n"));
    let table = ember(&address, &["member", "list", "-w", "table"]);
    assert_eq!(
        stdout(&table),
        "+------------------+---------+------+-----------------------+-----------------------+------------+\n\
         |        ID        | STATUS  | NAME |      PEER ADDRS       |     CLIENT ADDRS      | IS LEARNER |\n\
         +------------------+---------+------+-----------------------+-----------------------+------------+\n\
         | 8e9e05c52164694d | started | n1   | http://127.0.0.1:2380 | http://127.0.0.1:2381 | false      |\n\
         | 91bc3c398fb3c146 | started | n2   | http://127.0.0.1:3380 | http://127.0.0.1:3381 | false      |\n\
         +------------------+---------+------+-----------------------+-----------------------+------------+\n"
    );
    server.join().unwrap();
}

fn event(kind: EventKind, key: &str, value: &str, revision: i64) -> Event {
    let kv = KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        mod_revision: revision,
        ..KeyValue::default()
    };
    Event { kind, kv, prev_kv: None }
}

/// A watch that gets `events`, then is cancelled as compacted at 3.
fn watch_server(events: Vec<Event>) -> (String, std::thread::JoinHandle<()>) {
    scripted(move |listener| {
        // The command's client connection comes first; the watch has its own.
        let _client = Peer::accept(&listener, MEMBER);
        let mut peer = Peer::accept(&listener, MEMBER);
        let (id, request) = peer.read_request().expect("watch create");
        let Request::WatchCreate(create) = request else { panic!("{request:?}") };
        assert_eq!((create.key.as_slice(), create.range_end.as_slice()), (&b"k"[..], &b"l"[..]));
        assert!(create.prev_kv && create.progress_notify);
        assert_eq!(create.start_revision, 2);
        let created = WatchCreateResponse { header: header(MEMBER, 1), watch_id: 4 };
        peer.respond(id, &Response::WatchCreate(created));
        peer.push(4, &WatchMessage::Events { header: header(MEMBER, 6), events });
        peer.push(4, &WatchMessage::Progress { header: header(MEMBER, 6) });
        let cancelled = WatchMessage::Cancelled {
            header: header(MEMBER, 6),
            reason: CancelReason::Compacted,
            compact_revision: 3,
        };
        peer.push(4, &cancelled);
        let _ = peer.read_request();
    })
}

const WATCH_ARGS: [&str; 6] = ["watch", "k", "--prefix", "--rev", "2", "--prev-kv"];

#[test]
fn watch_prints_events_and_a_compaction_ends_it_with_exit_1() {
    let mut put = event(EventKind::Put, "k1", "v1", 5);
    put.prev_kv =
        Some(KeyValue { key: b"k1".to_vec(), value: b"v0".to_vec(), ..KeyValue::default() });
    let (address, server) = watch_server(vec![put, event(EventKind::Delete, "k2", "", 6)]);
    let mut args = WATCH_ARGS.to_vec();
    args.push("--progress-notify");
    let output = ember(&address, &args);
    assert_eq!(stdout(&output), "PUT\nk1\nv0\nk1\nv1\nDELETE\nk2\n\nprogress notify: 6\n");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "ember: watch was cancelled: required revision has been compacted (compact revision 3)\n"
    );
    server.join().unwrap();
}

#[test]
fn watch_runs_the_command_with_the_event_in_its_environment() {
    let (address, server) = watch_server(vec![
        event(EventKind::Put, "k1", "v 1", 5),
        event(EventKind::Delete, "k2", "", 6),
    ]);
    let mut args = WATCH_ARGS.to_vec();
    args.extend(["--progress-notify", "-w", "json", "--", "sh", "-c"]);
    args.push("echo \"$EMBER_WATCH_EVENT_TYPE $EMBER_WATCH_KEY=$EMBER_WATCH_VALUE@$EMBER_WATCH_REVISION\"");
    let output = ember(&address, &args);
    let lines: Vec<&str> = stdout(&output).leak().lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?} {}", stderr(&output));
    assert!(lines[0].starts_with("{\"Header\":{\"cluster_id\":193"), "{}", lines[0]);
    assert!(lines[0].contains(r#""Events":[{"kv":{"key":"azE=","mod_revision":5,"value":"diAx"}},{"type":1,"kv":{"key":"azI=","mod_revision":6}}]"#));
    assert_eq!(lines[1..3], ["PUT k1=v 1@5", "DELETE k2=@6"]);
    assert!(lines[4].contains(r#""CompactRevision":3,"Canceled":true"#), "{}", lines[4]);
    assert_eq!(output.status.code(), Some(1));
    server.join().unwrap();
}

#[test]
fn compaction_prints_the_revision_and_a_compacted_one_names_the_compact_revision() {
    let (address, server) = one_answer(
        |request| {
            assert_eq!(
                request,
                Request::Compact(CompactionRequest { revision: 9, physical: true })
            );
            Ok(Response::Compact(CompactionResponse { header: header(MEMBER, 12) }))
        },
        vec![],
    );
    // etcdctl prints this line whatever the format.
    let output = ember(&address, &["compaction", "9", "--physical", "-w", "json"]);
    assert_eq!(stdout(&output), "compacted revision 9\n", "{}", stderr(&output));
    server.join().unwrap();
    let status = StatusResponse {
        header: header(MEMBER, 12),
        compact_revision: 9,
        ..StatusResponse::default()
    };
    let (address, server) =
        one_answer(|_| Err(ErrorCode::Compacted), vec![Response::Status(status)]);
    let output = ember(&address, &["compaction", "5"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).ends_with("required revision has been compacted (code 100): the oldest revision kept is 10 (compact revision 9)\n"),
        "{}",
        stderr(&output)
    );
    server.join().unwrap();
}

#[test]
fn help_completion_and_table_refusals() {
    let run = |args: &[&str]| ember("127.0.0.1:1", args);
    let overview = run(&["help"]);
    for command in
        ["put", "get", "del", "txn", "watch", "compaction", "member", "endpoint", "completion"]
    {
        assert!(stdout(&overview).contains(&format!("\n  {command} ")), "{command}");
        let help = run(&["help", command]);
        assert!(stdout(&help).contains("examples:\n  ember"), "{command}: {}", stdout(&help));
        assert_eq!(stdout(&run(&[command, "--help"])), stdout(&help));
    }
    let bash = run(&["completion", "bash"]);
    assert!(stdout(&bash).contains("complete -o default -F _ember ember"));
    assert!(stdout(&bash).contains("--print-value-only"));
    let zsh = run(&["completion", "zsh"]);
    assert!(stdout(&zsh).starts_with("#compdef ember\n"));
    let table = run(&["put", "k", "v", "-w", "table"]);
    assert_eq!(table.status.code(), Some(2));
    assert!(
        stderr(&table).starts_with("ember: command \"put\" is not supported in table format\n")
    );
}

#[test]
fn the_bash_completion_script_completes_commands_and_flags() {
    let script = stdout(&ember("127.0.0.1:1", &["completion", "bash"]));
    let probe = format!(
        "{script}\nCOMP_WORDS=(ember get --pre); COMP_CWORD=2; _ember; echo \"${{COMPREPLY[@]}}\"\n\
         COMP_WORDS=(ember memb); COMP_CWORD=1; _ember; echo \"${{COMPREPLY[@]}}\"\n"
    );
    let Ok(output) = Command::new("bash").args(["-c", &probe]).output() else {
        return; // no bash on this machine: nothing to run the script with
    };
    assert_eq!(String::from_utf8_lossy(&output.stdout), "--prefix\nmember\n");
}
