//! The replicated state machine: everything every member holds alike (the
//! store, the member table, the leases) and the one way it changes,
//! `apply(entry, now_ms, raft_term)`.
//!
//! Owns: what a committed entry does, the answer its client gets, the
//! effects the outside world must carry out (`Effect`), and the snapshot
//! image of all of it (`image.rs`), written and restored here.
//!
//! Must not touch: sockets, files, the clock, DNS, threads, Raft's progress.
//! It is pure like `raft` and `mvcc` (`tests/tidy.rs` holds it to the same
//! words): time comes in as `now_ms` on the caller's millisecond clock, and
//! what must happen outside (peers to dial or drop, Raft's configuration
//! to follow) goes out as values. Every member that applies the same
//! entries in the same order ends in the same state and writes the same
//! image (`tests/state_machine.rs` replays random logs to prove it).
//!
//! Local, not replicated: each lease's deadline on this member's clock
//! (`lease::LeaseTable`). The leader moves deadlines when it renews a lease
//! or takes over; that changes no replicated byte, so those calls are
//! methods of their own (`renew_lease`, `promote_leases`,
//! `take_expired_leases`), never part of `apply`.
//!
//! Layout: `command.rs` (the entry payload, bounded decoding, proto ↔
//! mvcc), `image.rs` (the snapshot payload), `members.rs` (the member
//! table's rules), `leases.rs` (applying lease entries).

pub mod alarms;
pub mod auth;
pub mod command;
pub mod corrupt;
pub mod image;
pub mod leases;
pub mod members;
pub mod quota;
pub mod version;

use crate::auth::AuthState;
use crate::lease::{LeaseError, LeaseTable};
use crate::mvcc::{ImageReader, LiveImage, Store, StoreConfig};
use crate::proto::{self, ErrorBody, Response, ResponseHeader};
use crate::raft::{Entry, EntryKind};

pub use alarms::{AlarmKind, AlarmOp, AlarmRecord, Alarms};
pub use auth::AuthOp;
pub use command::{Caller, Command, DecodeError, Op};
pub use corrupt::{CorruptOp, HashWanted, OpenCheck};
pub use image::{LeaseRecord, MemberRecord, PayloadError, Sections};
pub use members::MemberOp;
pub use quota::Usage;
pub use version::{Feature, Version};

/// Bytes per chunk when a whole image is built at once (bootstrap, tests).
pub const IMAGE_CHUNK_BYTES: usize = 1 << 20;

/// Who this member is: stamped on every answer's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: u64,
}

/// What applying an entry asks of the world outside the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The member table changed: peer connections follow it. `moved` names
    /// a member whose peer URLs changed, whose connection must be dialed
    /// again at the new address.
    MembersChanged { moved: Option<u64> },
    /// A configuration change entry was applied: Raft's voters or learners
    /// changed, and the peers follow them too.
    ConfChanged,
    /// Users, roles or the enabled flag changed: connections bound to a
    /// token and open watches are checked again.
    AuthChanged,
    /// A corruption check opened: this member hashes its store at the
    /// check's revision and reports (`corrupt.rs`).
    HashCheck(HashWanted),
}

/// The answer to the request an entry carried, for the member that
/// proposed it to match with its waiting client by `seq` (and by `origin`
/// when the entry names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub origin: Option<u64>,
    pub seq: u64,
    pub result: Result<Response, ErrorBody>,
}

/// The outcome of applying one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// `None` for entries no client waits for (no-ops, conf changes, and
    /// payloads that do not decode).
    pub answer: Option<Answer>,
    pub effect: Option<Effect>,
}

/// The replicated state at `applied_index`.
pub struct StateMachine {
    identity: Identity,
    store: Store,
    /// Ascending by id. Empty only on a member that joined an existing
    /// cluster and has not received its first snapshot.
    members: Vec<MemberRecord>,
    /// Replicated: which leases exist and their granted TTLs. Local: their
    /// deadlines (see the module doc).
    leases: LeaseTable,
    /// Users, roles, the enabled flag and the token key.
    auth: AuthState,
    /// The alarms raised, by member and kind.
    alarms: Alarms,
    /// The store's size as the quota counts it, and the quota.
    usage: Usage,
    /// The corruption check open now, with the reports it has.
    check: Option<OpenCheck>,
    /// The members removed last, oldest first (see
    /// `members::REMOVED_MEMBERS_MAX`).
    removed_members: Vec<u64>,
    /// The version each member published, ascending by id.
    /// Invariant: only ids of `members`.
    member_versions: Vec<(u64, Version)>,
    /// The cluster version, once decided (`version.rs`). Only rises.
    /// Invariant: a release (patch 0).
    cluster_version: Option<Version>,
    /// Invariant: every entry up to it has been applied, and none after it.
    applied_index: u64,
    applied_term: u64,
}

impl StateMachine {
    /// The state before any entry: nothing applied, no members known (a
    /// member joining an existing cluster waits for a snapshot).
    pub fn empty(identity: Identity, config: StoreConfig) -> StateMachine {
        StateMachine {
            identity,
            store: Store::new(config),
            members: Vec::new(),
            leases: LeaseTable::new(),
            auth: AuthState::default(),
            alarms: Alarms::default(),
            usage: Usage::default(),
            check: None,
            removed_members: Vec::new(),
            member_versions: Vec::new(),
            cluster_version: None,
            applied_index: 0,
            applied_term: 0,
        }
    }

    /// The state every member of a new cluster starts from: the initial
    /// members, an empty store, at index 1 of term 1.
    pub fn bootstrap(
        identity: Identity,
        config: StoreConfig,
        mut members: Vec<MemberRecord>,
    ) -> StateMachine {
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        StateMachine {
            members,
            applied_index: 1,
            applied_term: 1,
            ..StateMachine::empty(identity, config)
        }
    }

    /// The state a snapshot payload describes, applied up to
    /// `(index, term)`, from the whole payload at once (see `Restorer` for
    /// one fed in chunks). Every lease gets its full TTL from `now_ms`.
    pub fn restore(
        identity: Identity,
        config: StoreConfig,
        at: (u64, u64),
        payload: &[u8],
        now_ms: u64,
    ) -> Result<StateMachine, String> {
        let mut restorer = Restorer::new(identity, config, at, now_ms);
        restorer.feed(payload)?;
        restorer.finish()
    }

    /// Applies one committed entry. Entries come in log order, each once.
    pub fn apply(&mut self, entry: &Entry, now_ms: u64, raft_term: u64) -> Applied {
        assert!(
            entry.index > self.applied_index,
            "entry {} applied after {}",
            entry.index,
            self.applied_index
        );
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        if entry.kind == EntryKind::ConfChange {
            return Applied { answer: None, effect: Some(Effect::ConfChanged) };
        }
        if entry.data.is_empty() {
            return Applied::default();
        }
        let command = match Command::decode(&entry.data) {
            Ok(command) => command,
            Err(e) => {
                // Every member decodes the same bytes the same way, so
                // every member skips it alike.
                log::error!("entry {} is not a command ({e}); skipped", entry.index);
                return Applied::default();
            }
        };
        if let Err(refused) = self.authorize(command.caller.as_ref(), &command.op) {
            let result = Err(auth::auth_error(refused));
            let answer = Answer { origin: command.origin, seq: command.seq, result };
            return Applied { answer: Some(answer), effect: None };
        }
        if let Err(refused) = self.check_space(&command.op) {
            let answer = Answer { origin: command.origin, seq: command.seq, result: Err(refused) };
            return Applied { answer: Some(answer), effect: None };
        }
        if let Op::Corrupt(CorruptOp::Report { member_id, .. }) = command.op
            && command.origin.is_some_and(|origin| origin != member_id)
        {
            // A member reports its own hash, never another's: checked
            // where the entry names who proposed it.
            let result = Err(ErrorBody::new(proto::ErrorCode::PermissionDenied));
            let answer = Answer { origin: command.origin, seq: command.seq, result };
            return Applied { answer: Some(answer), effect: None };
        }
        if let Err(refused) = self.check_quota(&command.op, entry.index) {
            let answer = Answer { origin: command.origin, seq: command.seq, result: Err(refused) };
            return Applied { answer: Some(answer), effect: None };
        }
        let answer_max_bytes = usize::try_from(command.answer_max_bytes).unwrap_or(usize::MAX);
        let caller = command.caller.as_ref();
        let (result, effect) =
            self.apply_op(command.op, caller, answer_max_bytes, now_ms, raft_term);
        let answer = Answer { origin: command.origin, seq: command.seq, result };
        Applied { answer: Some(answer), effect }
    }

    /// Applies `op`, already authorized for `caller`; a delete or txn whose
    /// answer would pass `answer_max_bytes` is refused whole instead.
    fn apply_op(
        &mut self,
        op: Op,
        caller: Option<&Caller>,
        answer_max_bytes: usize,
        now_ms: u64,
        raft_term: u64,
    ) -> (Result<Response, ErrorBody>, Option<Effect>) {
        let owner = self.lease_owner(caller);
        if let Some(result) = self.apply_lease_op(&op, owner, now_ms, raft_term) {
            return (result, None);
        }
        let identity = self.identity;
        let header = |store: &Store| header_of(identity, store, raft_term);
        let store = &mut self.store;
        let usage = &mut self.usage;
        let result = match op {
            Op::Put(r) => store.apply_put(&r).map(|a| {
                usage.record(a.revision, &a.events);
                Response::Put(command::put_response(a.response, header(store)))
            }),
            Op::DeleteRange(r) => store.apply_delete_range_within(&r, answer_max_bytes).map(|a| {
                usage.record(a.revision, &a.events);
                Response::DeleteRange(command::delete_response(a.response, header(store)))
            }),
            Op::Txn(r) => store.apply_txn_within(&r, answer_max_bytes).map(|a| {
                usage.record(a.revision, &a.events);
                Response::Txn(command::txn_response(a.response, header(store)))
            }),
            Op::Compact(revision) => return (self.apply_compact(revision, raft_term), None),
            Op::Quota(quota_bytes) => return (Ok(self.apply_quota(quota_bytes, raft_term)), None),
            Op::Member(change) => return self.apply_member(change, raft_term),
            Op::Alarm(change) => return (self.apply_alarm(change, raft_term), None),
            Op::ClusterVersion(version) => {
                return (self.apply_cluster_version(version, raft_term), None);
            }
            Op::Corrupt(change) => {
                let (result, wanted) = self.apply_corrupt(change, raft_term);
                return (result, wanted.map(Effect::HashCheck));
            }
            Op::Auth(change) => {
                let result = self.apply_auth(change, raft_term);
                let effect = result.is_ok().then_some(Effect::AuthChanged);
                return (result, effect);
            }
            Op::LeaseGrant { .. } | Op::LeaseRevoke(_) | Op::LeaseRenew(_) => {
                unreachable!("lease entries are applied by apply_lease_op")
            }
        };
        (result.map_err(command::store_error), None)
    }

    fn apply_member(
        &mut self,
        op: MemberOp,
        raft_term: u64,
    ) -> (Result<Response, ErrorBody>, Option<Effect>) {
        let (cluster_id, index) = (self.identity.cluster_id, self.applied_index);
        let resolved = members::admit_learner(&self.members, op)
            .and_then(|op| members::resolve_join(op, cluster_id, index, &self.removed_members));
        let op = match resolved {
            Ok(op) => op,
            Err(code) => return (Err(ErrorBody::new(code)), None),
        };
        let id = match members::apply_change(&mut self.members, &op) {
            Ok(id) => id,
            Err(code) => return (Err(ErrorBody::new(code)), None),
        };
        log::info!("member table: applied {} of {id:016x}", members::op_name(&op));
        members::remember_removal(&mut self.removed_members, &op);
        self.record_version(&op);
        let table = &self.members;
        self.alarms.retain_members(|member| table.iter().any(|m| m.id == member));
        self.member_versions.retain(|(member, _)| table.iter().any(|m| m.id == *member));
        let moved = matches!(op, MemberOp::Update { .. }).then_some(id);
        let header = self.header(raft_term);
        let table: Vec<proto::Member> = self.members.iter().map(members::member_of).collect();
        let changed = proto::MemberChangeResponse { header, members: table.clone() };
        let response = match op {
            MemberOp::Add(record) => Response::MemberAdd(proto::MemberAddResponse {
                header,
                member: members::member_of(&record),
                members: table,
            }),
            MemberOp::Remove(_) => Response::MemberRemove(changed),
            MemberOp::Update { .. } => Response::MemberUpdate(changed),
            MemberOp::Promote(_) | MemberOp::Publish { .. } | MemberOp::PublishVersion { .. } => {
                Response::MemberPromote(changed)
            }
            MemberOp::Join { .. } | MemberOp::JoinLearner { .. } => {
                unreachable!("apply_change refuses an unresolved join")
            }
        };
        (Ok(response), Some(Effect::MembersChanged { moved }))
    }

    /// Records the version a member published with its attributes.
    fn record_version(&mut self, op: &MemberOp) {
        if let MemberOp::PublishVersion { id, version, .. } = op {
            version::record(&mut self.member_versions, *id, *version);
        }
    }

    /// Sets the cluster version a leader decided, if the table still calls
    /// for it: every member has published a version, the lowest release is
    /// at least `proposed`, and `proposed` is above the current one. A
    /// leader that decided before a member was added, or before an older
    /// member published, is refused here alike on every member.
    fn apply_cluster_version(
        &mut self,
        proposed: Version,
        raft_term: u64,
    ) -> Result<Response, ErrorBody> {
        let ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        if !version::accepts(self.cluster_version, proposed, &ids, &self.member_versions) {
            return Err(ErrorBody::new(proto::ErrorCode::NotCapable));
        }
        log::info!(
            "cluster version set to {} (was {})",
            proposed.release_text(),
            self.cluster_version.map_or_else(|| "not decided".to_string(), Version::release_text)
        );
        self.cluster_version = Some(proposed);
        // A leader's own entry: no client waits for its answer.
        let header = self.header(raft_term);
        Ok(Response::Alarm(proto::AlarmResponse { header, alarms: Vec::new() }))
    }

    /// The cluster version, once decided.
    pub fn cluster_version(&self) -> Option<Version> {
        self.cluster_version
    }

    /// The version each member published, ascending by id.
    pub fn member_versions(&self) -> &[(u64, Version)] {
        &self.member_versions
    }

    /// The member table and versions as they stand, for a replay of the
    /// entries after the applied index that decides the cluster version
    /// alone (`VersionReplay`).
    pub fn version_replay(&self) -> VersionReplay {
        VersionReplay {
            cluster_id: self.identity.cluster_id,
            members: self.members.clone(),
            removed_members: self.removed_members.clone(),
            member_versions: self.member_versions.clone(),
            cluster_version: self.cluster_version,
        }
    }

    /// The header of an answer given now, in `raft_term`.
    pub fn header(&self, raft_term: u64) -> ResponseHeader {
        header_of(self.identity, &self.store, raft_term)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// For work that changes no replicated state: physical compaction
    /// steps and the live image of a snapshot.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Replaces the member table: for a backup restored into a new
    /// cluster, whose members are the ones its flags name, never the ones
    /// the backup's cluster had.
    pub fn replace_members(&mut self, mut members: Vec<MemberRecord>) {
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        self.members = members;
        // Ids removed from the backed-up cluster mean nothing in the new one.
        self.removed_members.clear();
        // Nor the versions its members published; the cluster version
        // stays: the backup may hold what that version wrote.
        self.member_versions.clear();
    }

    /// The member table, ascending by id.
    pub fn members(&self) -> &[MemberRecord] {
        &self.members
    }

    /// The members removed last, oldest first.
    pub fn removed_members(&self) -> &[u64] {
        &self.removed_members
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// A keep-alive at the leader: moves the lease's local deadline only.
    pub fn renew_lease(&mut self, id: i64, now_ms: u64) -> Result<i64, LeaseError> {
        self.leases.renew(id, now_ms)
    }

    /// This member just became leader: every lease gets its full TTL.
    pub fn promote_leases(&mut self, now_ms: u64) {
        self.leases.promote(now_ms);
    }

    /// Up to `max` leases past their local deadline, for the leader to
    /// propose their revocation; each gets `retry_ms` of grace.
    pub fn take_expired_leases(&mut self, now_ms: u64, max: usize, retry_ms: u64) -> Vec<i64> {
        self.leases.take_expired(now_ms, max, retry_ms)
    }

    /// The replicated state outside the keyspace.
    pub fn sections(&self) -> Sections {
        let leases = self.leases.records().map(|(id, ttl_secs, owner)| LeaseRecord {
            id,
            ttl_secs,
            owner: owner.map(String::from),
        });
        Sections {
            members: self.members.clone(),
            leases: leases.collect(),
            auth: self.auth.clone(),
            alarms: self.alarms.records().to_vec(),
            usage: self.usage.clone(),
            check: self.check.clone(),
            removed_members: self.removed_members.clone(),
            member_versions: self.member_versions.clone(),
            cluster_version: self.cluster_version,
        }
    }

    /// Starts a snapshot of the state as it is now: the payload's prefix
    /// (header and sections), and the store's live image, which the caller
    /// builds chunk by chunk (`LiveImage::next_chunk`) while later entries
    /// apply, and hands back to `store_mut().end_image`.
    pub fn begin_image(&mut self) -> (Vec<u8>, LiveImage) {
        let prefix = image::encode_prefix(&self.sections());
        (prefix, self.store.begin_image())
    }

    /// The whole snapshot payload at once: for bootstrap and tests, where
    /// the store is small or a pause does not matter.
    pub fn image(&self) -> Vec<u8> {
        let mut payload = image::encode_prefix(&self.sections());
        let mut writer = self.store.image();
        while let Some(chunk) = writer.next_chunk(IMAGE_CHUNK_BYTES) {
            payload.extend_from_slice(&chunk);
        }
        payload
    }
}

/// The cluster version that committed entries lead to, found without
/// applying them: a member checks at start, before it talks to anyone,
/// that it is not too old for the entries its own log already holds. Only
/// what decides the cluster version is replayed (member changes, published
/// versions, the cluster version itself), by the same rules `apply` uses;
/// permission checks are not, so a member change a client lacked the
/// rights for counts as made. That can only refuse a start `apply` would
/// refuse a moment later, or let one through that `apply` then stops.
pub struct VersionReplay {
    cluster_id: u64,
    members: Vec<MemberRecord>,
    removed_members: Vec<u64>,
    member_versions: Vec<(u64, Version)>,
    cluster_version: Option<Version>,
}

impl VersionReplay {
    /// Takes the next committed entry.
    pub fn feed(&mut self, entry: &Entry) {
        if entry.kind != EntryKind::Normal || entry.data.is_empty() {
            return;
        }
        let Ok(command) = Command::decode(&entry.data) else { return };
        match command.op {
            Op::Member(op) => self.member_change(op, entry.index),
            Op::ClusterVersion(proposed) => {
                let ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
                if version::accepts(self.cluster_version, proposed, &ids, &self.member_versions) {
                    self.cluster_version = Some(proposed);
                }
            }
            _ => {}
        }
    }

    fn member_change(&mut self, op: MemberOp, index: u64) {
        let Ok(op) = members::resolve_join(op, self.cluster_id, index, &self.removed_members)
        else {
            return;
        };
        if members::apply_change(&mut self.members, &op).is_err() {
            return;
        }
        members::remember_removal(&mut self.removed_members, &op);
        if let MemberOp::PublishVersion { id, version, .. } = op {
            version::record(&mut self.member_versions, id, version);
        }
        let table = &self.members;
        self.member_versions.retain(|(member, _)| table.iter().any(|m| m.id == *member));
    }

    pub fn cluster_version(&self) -> Option<Version> {
        self.cluster_version
    }
}

/// Builds a state machine from a snapshot payload fed in chunks of any
/// size, as it arrives from the leader or is read from a file: it holds
/// the state being built and at most one partial record of the payload,
/// never the payload itself.
pub struct Restorer {
    identity: Identity,
    /// The index and term the payload describes.
    at: (u64, u64),
    now_ms: u64,
    /// The payload's prefix (header and sections) while it is incomplete.
    /// Invariant: at most `image::HEADER_BYTES + image::SECTIONS_MAX_BYTES`.
    prefix: Vec<u8>,
    /// `Some` once the prefix is complete; the rest feeds `image`.
    sections: Option<Sections>,
    image: ImageReader,
}

impl Restorer {
    pub fn new(identity: Identity, config: StoreConfig, at: (u64, u64), now_ms: u64) -> Restorer {
        Restorer {
            identity,
            at,
            now_ms,
            prefix: Vec::new(),
            sections: None,
            image: ImageReader::new(config),
        }
    }

    /// Takes the payload's next bytes.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), String> {
        while self.sections.is_none() {
            let prefix = image::prefix_len(&self.prefix).map_err(|e| e.to_string())?;
            let want = prefix.unwrap_or(image::HEADER_BYTES);
            let take = (want - self.prefix.len()).min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.prefix.len() < want {
                return Ok(());
            }
            if prefix.is_some() {
                let (sections, _) = image::split(&self.prefix).map_err(|e| e.to_string())?;
                self.sections = Some(sections);
                self.prefix = Vec::new();
            }
        }
        self.image.feed(chunk).map_err(|e| e.to_string())
    }

    /// The state machine, once the whole payload was fed.
    pub fn finish(self) -> Result<StateMachine, String> {
        let sections = self.sections.ok_or_else(|| PayloadError::Truncated.to_string())?;
        let store = self.image.finish().map_err(|e| e.to_string())?;
        let records = sections.leases.iter().map(|r| (r.id, r.ttl_secs, r.owner.as_deref()));
        let alarms = Alarms::from_records(sections.alarms)
            .ok_or_else(|| PayloadError::Malformed("alarms not ascending").to_string())?;
        if !sections.usage.is_sound() {
            return Err(PayloadError::Malformed("size counters break their invariants").to_string());
        }
        if !sections.check.as_ref().is_none_or(OpenCheck::is_sound) {
            return Err(
                PayloadError::Malformed("corruption check reports not ascending").to_string()
            );
        }
        let mut state = StateMachine {
            identity: self.identity,
            store,
            members: sections.members,
            leases: LeaseTable::from_records(records, self.now_ms),
            auth: sections.auth,
            alarms,
            usage: sections.usage,
            check: sections.check,
            removed_members: sections.removed_members,
            member_versions: sections.member_versions,
            cluster_version: sections.cluster_version,
            applied_index: self.at.0,
            applied_term: self.at.1,
        };
        state.seed_usage();
        Ok(state)
    }
}

/// An answer's header: who answers, the store's revision, the term.
fn header_of(identity: Identity, store: &Store, raft_term: u64) -> ResponseHeader {
    ResponseHeader {
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        revision: i64::try_from(store.current_revision()).unwrap_or(i64::MAX),
        raft_term,
    }
}
