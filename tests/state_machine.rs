//! The replicated state machine on its own: `apply` of every kind of
//! entry, the answers and effects it gives, its snapshot image, and a
//! model-based check that replays random committed logs on two machines,
//! one of them restored from the other's image midway, and requires the
//! same answers and the same final image from both.
//!
//! `EMBER_STATE_CASES` sets how many random logs run (default 200);
//! `EMBER_STATE_SEED` replays one.

use ember::auth::{PermKind, Permission};
use ember::mvcc::{self, StoreConfig};
use ember::proto::{ErrorCode, Response};
use ember::raft::{Entry, EntryKind, Rng};
use ember::state::{
    AlarmKind, AlarmOp, Answer, Applied, AuthOp, Caller, Command, CorruptOp, Effect, HashWanted,
    Identity, MemberOp, MemberRecord, Op, Restorer, StateMachine, Version,
};

const IDENTITY: Identity = Identity { cluster_id: 0xc1, member_id: 1 };
const TERM: u64 = 3;

fn member(id: u64, started: bool) -> MemberRecord {
    MemberRecord {
        id,
        name: format!("m{id}"),
        peer_urls: vec![format!("http://10.0.0.{id}:7380")],
        client_urls: if started { vec![format!("http://10.0.0.{id}:7379")] } else { vec![] },
        is_learner: false,
    }
}

fn three_members() -> StateMachine {
    let members = (1..=3).map(|id| member(id, true)).collect();
    StateMachine::bootstrap(IDENTITY, StoreConfig::default(), members)
}

/// Applies `op` as the next entry, proposed by member `origin`.
fn apply(state: &mut StateMachine, origin: u64, op: Op, now_ms: u64) -> Applied {
    apply_as(state, origin, op, now_ms, None)
}

/// Applies `op` as the next entry, recorded as `caller`'s.
fn apply_as(
    state: &mut StateMachine,
    origin: u64,
    op: Op,
    now_ms: u64,
    caller: Option<Caller>,
) -> Applied {
    let index = state.applied_index() + 1;
    let origin = Some(origin);
    let data = Command { origin, seq: index * 10, op, caller, answer_max_bytes: u64::MAX }.encode();
    let entry = Entry { term: TERM, index, kind: EntryKind::Normal, data };
    state.apply(&entry, now_ms, TERM)
}

fn result(applied: Applied) -> Result<Response, ErrorCode> {
    let answer = applied.answer.expect("a command is answered");
    answer.result.map_err(|body| body.code().expect("a known error code"))
}

fn put(key: &str, lease: i64) -> Op {
    Op::Put(mvcc::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    })
}

fn get(state: &StateMachine, key: &str) -> Option<mvcc::KeyValue> {
    let request = mvcc::RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
    state.store().range(&request).unwrap().kvs.into_iter().next()
}

#[test]
fn a_write_is_answered_to_its_origin_with_the_new_revision() {
    let mut state = three_members();
    let applied = apply(&mut state, 2, put("a", 0), 0);
    let Some(Answer { origin: Some(2), seq: 20, result: Ok(Response::Put(r)) }) = applied.answer
    else {
        panic!("{applied:?}");
    };
    assert_eq!((r.header.revision, r.header.raft_term, r.header.member_id), (2, TERM, 1));
    assert_eq!(applied.effect, None);
    assert_eq!(state.applied_index(), 2);
    assert_eq!(get(&state, "a").unwrap().mod_revision, 2);
}

#[test]
fn a_sequence_only_write_is_answered_by_its_number_alone() {
    let mut state = three_members();
    let command =
        Command { origin: None, seq: 77, op: put("a", 0), caller: None, answer_max_bytes: 64 };
    let entry = Entry { term: TERM, index: 2, kind: EntryKind::Normal, data: command.encode() };
    let applied = state.apply(&entry, 0, TERM);
    let Some(Answer { origin: None, seq: 77, result: Ok(Response::Put(r)) }) = applied.answer
    else {
        panic!("{applied:?}");
    };
    assert_eq!(r.header.revision, 2);
    assert_eq!(get(&state, "a").unwrap().mod_revision, 2);
    // The marker followed by bytes that are no command changes nothing.
    let before = state.image();
    let garbage = Entry { term: TERM, index: 3, kind: EntryKind::Normal, data: vec![0, 0xff] };
    assert_eq!(state.apply(&garbage, 0, TERM), Applied::default());
    assert_eq!(state.image(), before);
}

#[test]
fn no_ops_conf_changes_and_garbage_change_nothing_but_the_index() {
    let mut state = three_members();
    let before = state.image();
    let noop = Entry { term: TERM, index: 2, kind: EntryKind::Normal, data: vec![] };
    assert_eq!(state.apply(&noop, 0, TERM), Applied::default());
    let conf = Entry { term: TERM, index: 3, kind: EntryKind::ConfChange, data: vec![1, 2] };
    assert_eq!(state.apply(&conf, 0, TERM).effect, Some(Effect::ConfChanged));
    let garbage = Entry { term: TERM, index: 4, kind: EntryKind::Normal, data: vec![0xff; 9] };
    assert_eq!(state.apply(&garbage, 0, TERM), Applied::default());
    assert_eq!(state.applied_index(), 4);
    assert_eq!(state.image(), before, "the replicated state did not change");
}

#[test]
fn a_deeply_nested_entry_is_skipped_by_every_member_alike() {
    // A txn nested a million levels deep, as a peer could forge it: origin
    // 1, seq 1, Op::Txn, then one success op RequestOp::Txn per level.
    let levels = 1_000_000;
    let mut data = vec![1, 1, 2];
    for _ in 1..levels {
        data.extend_from_slice(&[0, 1, 3]);
    }
    data.extend_from_slice(&[0, 0, 0]);
    data.resize(data.len() + levels - 1, 0);
    let mut state = three_members();
    let entry = Entry { term: TERM, index: 2, kind: EntryKind::Normal, data };
    assert_eq!(state.apply(&entry, 0, TERM), Applied::default());
    assert!(result(apply(&mut state, 1, put("after", 0), 0)).is_ok());
}

#[test]
fn member_changes_are_checked_at_apply_and_say_what_peers_must_do() {
    let mut state = three_members();
    let added = apply(&mut state, 1, Op::Member(MemberOp::Add(member(4, false))), 0);
    assert_eq!(added.effect, Some(Effect::MembersChanged { moved: None }));
    assert!(matches!(result(added), Ok(Response::MemberAdd(r)) if r.members.len() == 4));
    let again = apply(&mut state, 1, Op::Member(MemberOp::Add(member(4, false))), 0);
    assert_eq!(again.effect, None);
    assert_eq!(result(again).unwrap_err(), ErrorCode::MemberExists);
    let urls = vec!["http://10.0.0.9:7380".to_string()];
    let update = MemberOp::Update { id: 2, peer_urls: urls.clone() };
    let updated = apply(&mut state, 1, Op::Member(update), 0);
    assert_eq!(updated.effect, Some(Effect::MembersChanged { moved: Some(2) }));
    assert_eq!(state.members()[1].peer_urls, urls);
    let removed = apply(&mut state, 1, Op::Member(MemberOp::Remove(4)), 0);
    assert_eq!(removed.effect, Some(Effect::MembersChanged { moved: None }));
    assert_eq!(state.members().iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn leases_grant_renew_and_revoke_with_their_keys() {
    let mut state = three_members();
    let refused = apply(&mut state, 1, put("k", 7), 0);
    assert_eq!(result(refused).unwrap_err(), ErrorCode::LeaseNotFound);
    let granted = apply(&mut state, 1, Op::LeaseGrant { id: 7, ttl_secs: 10 }, 1_000);
    assert!(matches!(result(granted), Ok(Response::LeaseGrant(r)) if r.ttl_secs == 10));
    let twice = apply(&mut state, 1, Op::LeaseGrant { id: 7, ttl_secs: 10 }, 1_000);
    assert_eq!(result(twice).unwrap_err(), ErrorCode::LeaseExists);
    assert!(result(apply(&mut state, 1, put("k", 7), 1_000)).is_ok());
    assert_eq!(state.leases().remaining_secs(7, 5_000), Some(6));
    let renewed = apply(&mut state, 1, Op::LeaseRenew(7), 5_000);
    assert!(matches!(result(renewed), Ok(Response::LeaseKeepAlive(r)) if r.ttl_secs == 10));
    assert_eq!(state.leases().remaining_secs(7, 5_000), Some(10));
    assert!(result(apply(&mut state, 1, Op::LeaseRevoke(7), 6_000)).is_ok());
    assert_eq!(get(&state, "k"), None, "the lease's key went with it");
    let gone = apply(&mut state, 1, Op::LeaseRevoke(7), 6_000);
    assert_eq!(result(gone).unwrap_err(), ErrorCode::LeaseNotFound);
}

#[test]
fn expiry_and_promotion_move_only_local_deadlines() {
    let mut state = three_members();
    apply(&mut state, 1, Op::LeaseGrant { id: 5, ttl_secs: 2 }, 0);
    let image = state.image();
    assert_eq!(state.take_expired_leases(1_999, 10, 500), Vec::<i64>::new());
    assert_eq!(state.take_expired_leases(2_000, 10, 500), vec![5]);
    // Offered again only after the retry grace.
    assert_eq!(state.take_expired_leases(2_400, 10, 500), Vec::<i64>::new());
    state.promote_leases(3_000);
    assert_eq!(state.leases().remaining_secs(5, 3_000), Some(2));
    assert_eq!(state.image(), image, "deadlines are not replicated state");
}

#[test]
fn an_image_restores_the_same_state() {
    let mut state = three_members();
    apply(&mut state, 1, Op::LeaseGrant { id: 9, ttl_secs: 30 }, 0);
    apply(&mut state, 1, put("a", 9), 0);
    apply(&mut state, 2, put("b", 0), 0);
    let at = (state.applied_index(), state.applied_term());
    let image = state.image();
    let restored = StateMachine::restore(IDENTITY, StoreConfig::default(), at, &image, 0).unwrap();
    assert_eq!(restored.image(), image);
    assert_eq!(restored.applied_index(), state.applied_index());
    assert_eq!(restored.members(), state.members());
    assert_eq!(restored.leases().ttl_secs(9), Some(30));
    // Fed in pieces of any size, as it arrives from a leader or a file.
    for piece in [1, 3, 7, 13, 4096] {
        let mut restorer = Restorer::new(IDENTITY, StoreConfig::default(), at, 0);
        for chunk in image.chunks(piece) {
            restorer.feed(chunk).unwrap();
        }
        assert_eq!(restorer.finish().unwrap().image(), image, "pieces of {piece}");
    }
    let mut cut = Restorer::new(IDENTITY, StoreConfig::default(), at, 0);
    cut.feed(&image[..image.len() - 1]).unwrap();
    assert!(cut.finish().is_err(), "a payload cut short is refused");
    for bad in [&image[..image.len() / 2], &image[1..], b"EMBRNODE".as_slice()] {
        assert!(StateMachine::restore(IDENTITY, StoreConfig::default(), at, bad, 0).is_err());
    }
}

/// A random op over a small keyspace and a few lease ids, so that
/// conflicts, missing leases and revocations happen often.
fn random_op(rng: &mut Rng) -> Op {
    let key = |rng: &mut Rng| format!("k{}", rng.below(12)).into_bytes();
    let lease = |rng: &mut Rng| if rng.chance(1, 3) { 1 + rng.below(4) as i64 } else { 0 };
    match rng.below(106) {
        // Corruption checks and reports (`random_log` aims the reports).
        100..=101 => Op::Corrupt(CorruptOp::Check { revision: rng.below(30) }),
        102..=105 => Op::Corrupt(CorruptOp::Report {
            check_index: 0,
            member_id: 0,
            hash: rng.below(2) as u32,
        }),
        0..=44 => Op::Put(mvcc::PutRequest {
            key: key(rng),
            value: rng.next_u64().to_le_bytes().to_vec(),
            lease: lease(rng),
            prev_kv: rng.chance(1, 2),
            ..Default::default()
        }),
        45..=59 => {
            let start = key(rng);
            let range_end = if rng.chance(1, 2) { vec![b'k', b'9'] } else { Vec::new() };
            Op::DeleteRange(mvcc::DeleteRangeRequest { key: start, range_end, prev_kv: true })
        }
        60..=74 => Op::Txn(random_txn(rng)),
        75..=79 => Op::Compact(rng.below(40)),
        80..=87 => {
            Op::LeaseGrant { id: 1 + rng.below(4) as i64, ttl_secs: 1 + rng.below(5) as i64 }
        }
        88..=93 => Op::LeaseRevoke(1 + rng.below(4) as i64),
        94 => Op::LeaseRenew(1 + rng.below(4) as i64),
        // Quotas small enough that puts pass them, alarms for members in
        // the table and not.
        95 => Op::Quota(1_000 + rng.below(4_000)),
        96 => Op::Alarm(AlarmOp {
            member_id: 1 + rng.below(4),
            kind: if rng.chance(1, 2) { AlarmKind::NoSpace } else { AlarmKind::Corrupt },
            raise: rng.chance(2, 3),
        }),
        97..=98 => random_member_op(rng),
        _ => Op::Auth(random_auth_op(rng)),
    }
}

fn random_auth_op(rng: &mut Rng) -> AuthOp {
    let user = ["root", "u1", "u2"][rng.below(3) as usize].to_string();
    let role = ["root", "r1", "r2"][rng.below(3) as usize].to_string();
    let key = format!("k{}", rng.below(12)).into_bytes();
    match rng.below(11) {
        0 => AuthOp::Enable { token_key: vec![rng.below(255) as u8; 32] },
        1 => AuthOp::Disable,
        2 => AuthOp::UserAdd { name: user, password: Some(format!("hash{}", rng.below(9))) },
        3 => AuthOp::UserDelete(user),
        4 => AuthOp::UserChangePassword { name: user, password: "other".into() },
        5 => AuthOp::UserGrantRole { user, role },
        6 => AuthOp::UserRevokeRole { user, role },
        7 => AuthOp::RoleAdd(role),
        8 => AuthOp::RoleDelete(role),
        9 => AuthOp::RoleGrantPermission {
            role,
            permission: Permission { kind: PermKind::ReadWrite, key, range_end: vec![b'k', b'9'] },
        },
        _ => AuthOp::RoleRevokePermission { role, key, range_end: vec![b'k', b'9'] },
    }
}

/// Who a random entry is recorded as: a member, no token, or a user in
/// an epoch that may or may not be current.
fn random_caller(rng: &mut Rng) -> Option<Caller> {
    match rng.below(4) {
        0 => None,
        1 => Some(Caller::Anonymous),
        _ => {
            let name = ["root", "u1", "u2"][rng.below(3) as usize].to_string();
            Some(Caller::User { name, epoch: rng.below(30) })
        }
    }
}

fn random_txn(rng: &mut Rng) -> mvcc::TxnRequest {
    let compare = mvcc::Compare {
        key: format!("k{}", rng.below(12)).into_bytes(),
        range_end: Vec::new(),
        result: mvcc::CompareResult::Equal,
        target: mvcc::CompareTarget::Version(rng.below(3)),
    };
    let branch = |rng: &mut Rng| {
        let key = format!("k{}", rng.below(12)).into_bytes();
        if rng.chance(1, 2) {
            vec![mvcc::RequestOp::Put(mvcc::PutRequest { key, ..Default::default() })]
        } else {
            vec![mvcc::RequestOp::Range(mvcc::RangeRequest { key, ..Default::default() })]
        }
    };
    mvcc::TxnRequest { compare: vec![compare], success: branch(rng), failure: branch(rng) }
}

fn random_member_op(rng: &mut Rng) -> Op {
    let id = 1 + rng.below(6);
    let version = Version::new(0, rng.below(3) as u32, rng.below(2) as u32);
    Op::Member(match rng.below(6) {
        0 => MemberOp::Add(member(id, rng.chance(1, 2))),
        1 => MemberOp::Remove(id),
        2 => MemberOp::JoinLearner {
            name: String::new(),
            peer_urls: vec![format!("http://j{id}:1")],
            learners_max: 1 + rng.below(2) as u32,
        },
        3 => {
            MemberOp::Publish { id, name: format!("m{id}"), client_urls: vec!["http://c:1".into()] }
        }
        4 => publish_version(id, version),
        _ => return Op::ClusterVersion(version.release()),
    })
}

fn publish_version(id: u64, version: Version) -> MemberOp {
    let (name, client_urls) = (format!("m{id}"), vec![format!("http://10.0.0.{id}:7379")]);
    MemberOp::PublishVersion { id, name, client_urls, version }
}

#[test]
fn the_cluster_version_is_set_once_every_member_published_and_only_rises() {
    let mut state = three_members();
    let v = |minor, patch| Version::new(0, minor, patch);
    let set = |state: &mut StateMachine, version| {
        result(apply(state, 1, Op::ClusterVersion(version), 0)).map(|_| ())
    };
    apply(&mut state, 1, Op::Member(publish_version(1, v(2, 1))), 0);
    apply(&mut state, 2, Op::Member(publish_version(2, v(2, 0))), 0);
    assert_eq!(set(&mut state, v(2, 0)), Err(ErrorCode::NotCapable), "member 3 is not known");
    apply(&mut state, 3, Op::Member(publish_version(3, v(1, 4))), 0);
    assert_eq!(set(&mut state, v(2, 0)), Err(ErrorCode::NotCapable), "above the lowest");
    assert_eq!(state.cluster_version(), None);
    assert_eq!(set(&mut state, v(1, 0)), Ok(()));
    assert_eq!(state.cluster_version(), Some(v(1, 0)));
    // Member 3 comes back upgraded: the cluster version may rise.
    apply(&mut state, 3, Op::Member(publish_version(3, v(2, 2))), 0);
    assert_eq!(set(&mut state, v(2, 1)), Err(ErrorCode::NotCapable), "a patch is no release");
    assert_eq!(set(&mut state, v(2, 0)), Ok(()));
    assert_eq!(set(&mut state, v(1, 0)), Err(ErrorCode::NotCapable), "it never falls");
    assert_eq!(set(&mut state, v(2, 0)), Err(ErrorCode::NotCapable), "nor repeats");
    assert_eq!(state.cluster_version(), Some(v(2, 0)));
    // The image carries both; a removed member's version is forgotten.
    let at = (state.applied_index(), state.applied_term());
    let restored =
        StateMachine::restore(IDENTITY, StoreConfig::default(), at, &state.image(), 0).unwrap();
    assert_eq!(restored.cluster_version(), Some(v(2, 0)));
    assert_eq!(restored.member_versions(), state.member_versions());
    assert!(result(apply(&mut state, 1, Op::Member(MemberOp::Remove(3)), 0)).is_ok());
    assert_eq!(state.member_versions().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(state.cluster_version(), Some(v(2, 0)));
}

/// A committed log: commands from three origins, no-ops and conf changes.
fn random_log(rng: &mut Rng, len: u64) -> Vec<Entry> {
    let mut last_check = 0;
    (2..2 + len)
        .map(|index| {
            let (kind, data) = match rng.below(20) {
                0 => (EntryKind::Normal, Vec::new()),
                1 => (EntryKind::ConfChange, vec![0]),
                _ => {
                    let mut op = random_op(rng);
                    let caller = random_caller(rng);
                    let origin = 1 + rng.below(3);
                    aim_report(&mut op, rng, origin, last_check);
                    if matches!(op, Op::Corrupt(CorruptOp::Check { .. })) {
                        last_check = index;
                    }
                    // Both layouts, as in a log that spans an upgrade.
                    let origin = rng.chance(1, 2).then_some(origin);
                    (
                        EntryKind::Normal,
                        Command { origin, seq: index, op, caller, answer_max_bytes: u64::MAX }
                            .encode(),
                    )
                }
            };
            Entry { term: 1 + index / 50, index, kind, data }
        })
        .collect()
}

/// A report mostly for the last check and from its own origin, so that
/// checks get decided; sometimes stale, or claiming another member.
fn aim_report(op: &mut Op, rng: &mut Rng, origin: u64, last_check: u64) {
    if let Op::Corrupt(CorruptOp::Report { check_index, member_id, .. }) = op {
        *check_index = if rng.chance(4, 5) { last_check } else { rng.below(last_check + 1) };
        *member_id = if rng.chance(9, 10) { origin } else { 1 + rng.below(4) };
    }
}

#[test]
fn replicas_that_apply_the_same_log_agree_even_across_a_restore() {
    let cases: u64 =
        std::env::var("EMBER_STATE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let seeds: Vec<u64> = match std::env::var("EMBER_STATE_SEED").ok().and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..cases).map(|case| 0x5eed_0000 + case).collect(),
    };
    for seed in seeds {
        check_one_log(seed);
    }
}

fn check_one_log(seed: u64) {
    let mut rng = Rng::new(seed);
    let len = 40 + rng.below(200);
    let log = random_log(&mut rng, len);
    let cut = rng.below(log.len() as u64) as usize;
    let mut first = three_members();
    let mut second = three_members();
    let mut now_ms = 0;
    for (at, entry) in log.iter().enumerate() {
        if at == cut {
            // The second replica is replaced by a restore of its own image,
            // as a member catching up from a snapshot would be.
            let index = (second.applied_index(), second.applied_term());
            let image = second.image();
            second = StateMachine::restore(IDENTITY, StoreConfig::default(), index, &image, now_ms)
                .unwrap_or_else(|e| panic!("seed {seed}: restore at {}: {e}", index.0));
            assert_eq!(second.image(), image, "seed {seed}: image changed by a restore");
        }
        now_ms += rng.below(300);
        let a = first.apply(entry, now_ms, TERM);
        let b = second.apply(entry, now_ms, TERM);
        assert_eq!(a, b, "seed {seed}: entry {} answered differently", entry.index);
        first.store().check_invariants();
    }
    assert_eq!(first.image(), second.image(), "seed {seed}: replicas diverged");
    assert_eq!(first.auth(), second.auth(), "seed {seed}: auth states diverged");
    assert_eq!(first.applied_index(), second.applied_index());
}

fn auth_op(state: &mut StateMachine, op: AuthOp) {
    let applied = apply(state, 1, Op::Auth(op.clone()), 0);
    assert!(result(applied).is_ok(), "{op:?}");
}

/// Root, and user "u" holding role "r" with `kind` on `[key, end)`; auth on.
fn with_user(kind: PermKind, key: &str, end: &[u8]) -> (StateMachine, Caller) {
    let mut state = three_members();
    for op in [
        AuthOp::UserAdd { name: "root".into(), password: Some("h".into()) },
        AuthOp::UserGrantRole { user: "root".into(), role: "root".into() },
        AuthOp::UserAdd { name: "u".into(), password: Some("h".into()) },
        AuthOp::RoleAdd("r".into()),
        AuthOp::RoleGrantPermission {
            role: "r".into(),
            permission: Permission { kind, key: key.as_bytes().to_vec(), range_end: end.to_vec() },
        },
        AuthOp::UserGrantRole { user: "u".into(), role: "r".into() },
        AuthOp::Enable { token_key: vec![7; 32] },
    ] {
        auth_op(&mut state, op);
    }
    let epoch = state.auth().users["u"].epoch;
    (state, Caller::User { name: "u".into(), epoch })
}

fn put_op(key: &str, prev_kv: bool) -> mvcc::RequestOp {
    mvcc::RequestOp::Put(mvcc::PutRequest {
        key: key.as_bytes().to_vec(),
        prev_kv,
        ..Default::default()
    })
}

#[test]
fn writes_are_checked_at_apply_from_the_recorded_caller() {
    let (mut state, u) = with_user(PermKind::Write, "a", b"c");
    let allowed = apply_as(&mut state, 1, put("b", 0), 0, Some(u.clone()));
    assert!(result(allowed).is_ok());
    let outside = apply_as(&mut state, 1, put("c", 0), 0, Some(u.clone()));
    assert_eq!(result(outside), Err(ErrorCode::PermissionDenied));
    let anonymous = apply_as(&mut state, 1, put("b", 0), 0, Some(Caller::Anonymous));
    assert_eq!(result(anonymous), Err(ErrorCode::InvalidAuthToken));
    let stale = Caller::User { name: "u".into(), epoch: 1 };
    assert_eq!(
        result(apply_as(&mut state, 1, put("b", 0), 0, Some(stale))),
        Err(ErrorCode::InvalidAuthToken)
    );
    let prev_kv =
        Op::Put(mvcc::PutRequest { key: b"b".to_vec(), prev_kv: true, ..Default::default() });
    assert_eq!(
        result(apply_as(&mut state, 1, prev_kv, 0, Some(u.clone()))),
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        result(apply_as(&mut state, 1, Op::Compact(1), 0, Some(u))),
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(get(&state, "c"), None, "a refused write changes nothing");
}

#[test]
fn a_txn_needs_every_branch_at_every_depth_before_anything_applies() {
    let (mut state, u) = with_user(PermKind::ReadWrite, "a", b"c");
    // The compare fails ("a" does not exist at version 5), so only the
    // failure branch would run; its nested txn writes outside the grant.
    let inner =
        mvcc::TxnRequest { compare: vec![], success: vec![], failure: vec![put_op("z", false)] };
    let txn = mvcc::TxnRequest {
        compare: vec![mvcc::Compare {
            key: b"a".to_vec(),
            range_end: Vec::new(),
            result: mvcc::CompareResult::Equal,
            target: mvcc::CompareTarget::Version(5),
        }],
        success: vec![put_op("b", false)],
        failure: vec![put_op("a", false), mvcc::RequestOp::Txn(inner)],
    };
    let refused = apply_as(&mut state, 1, Op::Txn(txn.clone()), 0, Some(u.clone()));
    assert_eq!(result(refused), Err(ErrorCode::PermissionDenied));
    assert_eq!(get(&state, "a"), None, "nothing of the txn applied");
    let mut inside = txn;
    inside.failure.pop();
    assert!(result(apply_as(&mut state, 1, Op::Txn(inside), 0, Some(u))).is_ok());
    assert!(get(&state, "a").is_some());
}

#[test]
fn a_lease_put_and_revoke_need_write_on_the_keys_already_on_the_lease() {
    let (mut state, u) = with_user(PermKind::ReadWrite, "a", b"c");
    assert!(result(apply(&mut state, 1, Op::LeaseGrant { id: 9, ttl_secs: 60 }, 0)).is_ok());
    assert!(result(apply(&mut state, 1, put("secret", 9), 0)).is_ok());
    let put_on = apply_as(&mut state, 1, put("b", 9), 0, Some(u.clone()));
    assert_eq!(result(put_on), Err(ErrorCode::PermissionDenied));
    let revoke = apply_as(&mut state, 1, Op::LeaseRevoke(9), 0, Some(u));
    assert_eq!(result(revoke), Err(ErrorCode::PermissionDenied));
    assert!(get(&state, "secret").is_some());
}

#[test]
fn auth_changes_are_root_only_and_travel_in_the_image() {
    let (mut state, u) = with_user(PermKind::Read, "a", b"");
    let by_u = apply_as(&mut state, 1, Op::Auth(AuthOp::RoleAdd("x".into())), 0, Some(u.clone()));
    assert_eq!(result(by_u), Err(ErrorCode::PermissionDenied));
    let own = AuthOp::UserChangePassword { name: "u".into(), password: "h2".into() };
    let applied = apply_as(&mut state, 1, Op::Auth(own), 0, Some(u));
    assert_eq!(applied.effect, Some(Effect::AuthChanged));
    assert!(result(applied).is_ok(), "a user may change its own password");
    let delete_root = apply(&mut state, 1, Op::Auth(AuthOp::UserDelete("root".into())), 0);
    assert_eq!(result(delete_root), Err(ErrorCode::InvalidAuthMgmt));
    let index = (state.applied_index(), state.applied_term());
    let restored =
        StateMachine::restore(IDENTITY, StoreConfig::default(), index, &state.image(), 0).unwrap();
    assert_eq!(restored.auth(), state.auth());
    assert!(restored.auth().enabled);
}

fn open_check(state: &mut StateMachine, revision: u64) -> u64 {
    let applied = apply(state, 1, Op::Corrupt(CorruptOp::Check { revision }), 0);
    let Some(Effect::HashCheck(HashWanted { check_index, revision: at })) = applied.effect else {
        panic!("no hash asked for: {applied:?}");
    };
    assert_eq!(check_index, state.applied_index());
    assert_eq!(at, if revision == 0 { state.store().current_revision() } else { revision });
    check_index
}

fn report(state: &mut StateMachine, check_index: u64, member_id: u64, hash: u32) -> Applied {
    apply(state, member_id, Op::Corrupt(CorruptOp::Report { check_index, member_id, hash }), 0)
}

fn corrupt_members(state: &StateMachine) -> Vec<u64> {
    let alarms = state.alarms().records().iter();
    alarms.filter(|a| a.kind == AlarmKind::Corrupt).map(|a| a.member_id).collect()
}

#[test]
fn a_member_whose_hash_differs_from_a_majority_is_raised_corrupt_and_cleared_when_it_agrees() {
    let mut state = three_members();
    apply(&mut state, 1, put("a", 0), 0);
    let check = open_check(&mut state, 0);
    report(&mut state, check, 3, 9);
    assert!(corrupt_members(&state).is_empty(), "one report decides nothing");
    report(&mut state, check, 1, 7);
    assert!(corrupt_members(&state).is_empty(), "one against one decides nothing of three");
    report(&mut state, check, 2, 7);
    assert_eq!(corrupt_members(&state), [3]);
    assert_eq!(state.open_check().unwrap().majority_hash, Some(7));
    // A report claiming another member's hash changes nothing.
    let forged = apply(
        &mut state,
        2,
        Op::Corrupt(CorruptOp::Report { check_index: check, member_id: 3, hash: 7 }),
        0,
    );
    assert_eq!(result(forged), Err(ErrorCode::PermissionDenied));
    // A stale report (another check opened since) changes nothing either.
    let next = open_check(&mut state, 2);
    report(&mut state, check, 3, 7);
    assert_eq!(corrupt_members(&state), [3]);
    report(&mut state, next, 3, 5);
    report(&mut state, next, 2, 5);
    assert_eq!(corrupt_members(&state), Vec::<u64>::new(), "cleared once it agrees");
    // The open check travels in the image.
    let image = state.image();
    let at = (state.applied_index(), state.applied_term());
    let restored = StateMachine::restore(IDENTITY, StoreConfig::default(), at, &image, 0).unwrap();
    assert_eq!(restored.open_check(), state.open_check());
}

#[test]
fn with_no_majority_every_member_that_reported_is_raised_and_none_is_repaired() {
    let mut state = three_members();
    let check = open_check(&mut state, 0);
    for (member, hash) in [(1, 1), (2, 2), (3, 3)] {
        report(&mut state, check, member, hash);
    }
    assert_eq!(corrupt_members(&state), [1, 2, 3]);
    let open = state.open_check().unwrap();
    assert!(open.no_majority && open.majority_hash.is_none());
}

#[test]
fn a_check_outside_the_kept_revisions_is_refused_and_opens_nothing() {
    let mut state = three_members();
    apply(&mut state, 1, put("a", 0), 0);
    let future = apply(&mut state, 1, Op::Corrupt(CorruptOp::Check { revision: 99 }), 0);
    assert_eq!(future.effect, None);
    assert_eq!(result(future), Err(ErrorCode::FutureRevision));
    assert!(state.open_check().is_none());
    // A report from a member not in the table is refused.
    let check = open_check(&mut state, 0);
    let stranger = report(&mut state, check, 8, 1);
    assert_eq!(result(stranger), Err(ErrorCode::MemberNotFound));
}

#[test]
fn a_member_that_left_after_reporting_is_neither_counted_nor_alarmed() {
    let mut state = three_members();
    apply(&mut state, 1, Op::Member(MemberOp::Add(member(4, true))), 0);
    let check = open_check(&mut state, 0);
    report(&mut state, check, 4, 9);
    let removed = apply(&mut state, 1, Op::Member(MemberOp::Remove(4)), 0);
    assert!(result(removed).is_ok());
    report(&mut state, check, 1, 7);
    report(&mut state, check, 2, 7);
    assert!(corrupt_members(&state).is_empty(), "{:?}", state.alarms().records());
    assert_eq!(state.open_check().unwrap().majority_hash, Some(7));
}

#[test]
fn a_lease_owner_may_revoke_it_after_losing_its_keys_and_the_owner_travels_in_the_image() {
    let (mut state, u) = with_user(PermKind::ReadWrite, "a", b"c");
    auth_op(&mut state, AuthOp::UserAdd { name: "v".into(), password: Some("h".into()) });
    let v = Caller::User { name: "v".into(), epoch: state.auth().users["v"].epoch };
    let grant = Op::LeaseGrant { id: 9, ttl_secs: 60 };
    assert!(result(apply_as(&mut state, 1, grant, 0, Some(u.clone()))).is_ok());
    assert_eq!(state.leases().owner(9), Some("u"));
    assert!(result(apply_as(&mut state, 1, put("b", 9), 0, Some(u.clone()))).is_ok());
    // A key the owner may not write joins the lease: only the owner, root,
    // or a user with WRITE on both keys may end it now.
    assert!(result(apply(&mut state, 1, put("secret", 9), 0)).is_ok());
    let by_v = apply_as(&mut state, 1, Op::LeaseRevoke(9), 0, Some(v));
    assert_eq!(result(by_v), Err(ErrorCode::PermissionDenied));

    let at = (state.applied_index(), state.applied_term());
    let mut restored =
        StateMachine::restore(IDENTITY, StoreConfig::default(), at, &state.image(), 0).unwrap();
    assert_eq!(restored.leases().owner(9), Some("u"), "the owner is in the image");
    let by_owner = apply_as(&mut restored, 1, Op::LeaseRevoke(9), 0, Some(u.clone()));
    assert!(result(by_owner).is_ok());
    assert_eq!((get(&restored, "b"), get(&restored, "secret")), (None, None));

    // A stale epoch is no owner.
    let stale = Caller::User { name: "u".into(), epoch: 1 };
    let by_stale = apply_as(&mut state, 1, Op::LeaseRevoke(9), 0, Some(stale));
    assert_eq!(result(by_stale), Err(ErrorCode::InvalidAuthToken));
    // A user deleted owns nothing, even once added again under its name.
    auth_op(&mut state, AuthOp::UserDelete("u".into()));
    auth_op(&mut state, AuthOp::UserAdd { name: "u".into(), password: Some("h".into()) });
    assert_eq!(state.leases().owner(9), None);
    let again = Caller::User { name: "u".into(), epoch: state.auth().users["u"].epoch };
    let by_namesake = apply_as(&mut state, 1, Op::LeaseRevoke(9), 0, Some(again));
    assert_eq!(result(by_namesake), Err(ErrorCode::PermissionDenied));
}

#[test]
fn a_lease_granted_while_auth_is_off_has_no_owner() {
    let mut state = three_members();
    let caller = Caller::User { name: "u".into(), epoch: 0 };
    let grant = Op::LeaseGrant { id: 4, ttl_secs: 60 };
    assert!(result(apply_as(&mut state, 1, grant, 0, Some(caller))).is_ok());
    assert_eq!(state.leases().owner(4), None);
}
