//! A snapshot's payload: the node's replicated state besides the keyspace
//! (the member table, the leases, users and roles, the alarms), then the
//! store's image.
//!
//! ```text
//! payload  = "EMBRNODE" format:u8(=6) len:u32le sections  mvcc-image
//! sections = postcard(Sections), `len` bytes
//! ```
//!
//! Older formats are still read: format 1, written before access control
//! existed, has sections without the auth state (read as auth off and no
//! users); format 2 has no alarms and no size counters (read as none
//! raised, and an empty history: see `quota.rs`); format 3 has no open
//! corruption check and no removed member ids (read as none open and none
//! removed); format 4 has no lease owners (read as leases nobody owns:
//! revoking one needs root or WRITE on its keys, as before owners);
//! format 5 has no member versions and no cluster version (read as none
//! published and not decided yet).
//!
//! The sections are small (a handful of members, one record per lease) and
//! are encoded whole when a snapshot starts; the store's image after them
//! is written in bounded chunks (see `mvcc::image`). Everything in the
//! payload is replicated state, so two members at the same applied index
//! write the same bytes. A payload comes from a peer or a file: `split`
//! bounds and checks it and answers a typed error, never a panic.

use serde::{Deserialize, Serialize};

use super::alarms::AlarmRecord;
use super::corrupt::OpenCheck;
use super::quota::Usage;
use super::version::Version;
use crate::auth::AuthState;

const MAGIC: &[u8; 8] = b"EMBRNODE";
const FORMAT: u8 = 6;
/// The format before the auth state joined the sections.
const FORMAT_WITHOUT_AUTH: u8 = 1;
/// The format before the alarms joined the sections.
const FORMAT_WITHOUT_ALARMS: u8 = 2;
/// The format before the open corruption check and the removed member ids
/// joined the sections.
const FORMAT_WITHOUT_CHECK: u8 = 3;
/// The format before leases recorded their owner.
const FORMAT_WITHOUT_OWNERS: u8 = 4;
/// The format before members' versions and the cluster version joined
/// the sections.
const FORMAT_WITHOUT_VERSIONS: u8 = 5;
/// Magic, format, sections length.
pub const HEADER_BYTES: usize = 8 + 1 + 4;
/// The largest sections a payload may carry: room for about half a million
/// leases, far more than a board keeps, and a bound on what a bad length
/// can make the reader allocate.
pub const SECTIONS_MAX_BYTES: usize = 16 << 20;

/// A member as the cluster knows it, replicated through the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: u64,
    /// Empty until the member has published its attributes.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has published its attributes.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A lease as replicated: its id, granted time to live and owner. The
/// time left is not replicated; a new leader gives every lease its full
/// TTL again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: i64,
    pub ttl_secs: i64,
    /// The user that granted it while auth was on; `None` otherwise.
    pub owner: Option<String>,
}

/// A lease as formats 1 to 4 record it: no owner.
#[derive(Deserialize)]
struct LeaseRecordWithoutOwner {
    id: i64,
    ttl_secs: i64,
}

impl From<LeaseRecordWithoutOwner> for LeaseRecord {
    fn from(old: LeaseRecordWithoutOwner) -> LeaseRecord {
        LeaseRecord { id: old.id, ttl_secs: old.ttl_secs, owner: None }
    }
}

fn without_owners(old: Vec<LeaseRecordWithoutOwner>) -> Vec<LeaseRecord> {
    old.into_iter().map(LeaseRecord::from).collect()
}

/// Replicated state outside the keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sections {
    /// Ascending by id.
    pub members: Vec<MemberRecord>,
    /// Ascending by id.
    pub leases: Vec<LeaseRecord>,
    pub auth: AuthState,
    /// Ascending by member, then kind.
    pub alarms: Vec<AlarmRecord>,
    /// The store's size counters and the quota.
    pub usage: Usage,
    /// The corruption check open, with its reports.
    pub check: Option<OpenCheck>,
    /// The ids of the members removed last, oldest first.
    /// Invariant: at most `members::REMOVED_MEMBERS_MAX`, no duplicates.
    pub removed_members: Vec<u64>,
    /// The version each member published, ascending by id.
    /// Invariant: only ids of `members`.
    pub member_versions: Vec<(u64, Version)>,
    /// The cluster version, once decided. Invariant: a release (patch 0).
    pub cluster_version: Option<Version>,
}

/// The sections of format 5.
#[derive(Deserialize)]
struct SectionsWithoutVersions {
    members: Vec<MemberRecord>,
    leases: Vec<LeaseRecord>,
    auth: AuthState,
    alarms: Vec<AlarmRecord>,
    usage: Usage,
    check: Option<OpenCheck>,
    removed_members: Vec<u64>,
}

/// The sections of format 4.
#[derive(Deserialize)]
struct SectionsWithoutOwners {
    members: Vec<MemberRecord>,
    leases: Vec<LeaseRecordWithoutOwner>,
    auth: AuthState,
    alarms: Vec<AlarmRecord>,
    usage: Usage,
    check: Option<OpenCheck>,
    removed_members: Vec<u64>,
}

/// The sections of format 3.
#[derive(Deserialize)]
struct SectionsWithoutCheck {
    members: Vec<MemberRecord>,
    leases: Vec<LeaseRecordWithoutOwner>,
    auth: AuthState,
    alarms: Vec<AlarmRecord>,
    usage: Usage,
}

/// The sections of format 2.
#[derive(Deserialize)]
struct SectionsWithoutAlarms {
    members: Vec<MemberRecord>,
    leases: Vec<LeaseRecordWithoutOwner>,
    auth: AuthState,
}

/// The sections of format 1.
#[derive(Deserialize)]
struct SectionsWithoutAuth {
    members: Vec<MemberRecord>,
    leases: Vec<LeaseRecordWithoutOwner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    BadMagic,
    UnsupportedFormat(u8),
    Truncated,
    SectionsTooLarge(usize),
    Malformed(&'static str),
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::BadMagic => write!(f, "not a snapshot payload"),
            PayloadError::UnsupportedFormat(v) => write!(f, "payload format {v} is not supported"),
            PayloadError::Truncated => write!(f, "payload is truncated"),
            PayloadError::SectionsTooLarge(n) => {
                write!(f, "payload sections of {n} bytes exceed {SECTIONS_MAX_BYTES}")
            }
            PayloadError::Malformed(why) => write!(f, "payload is malformed: {why}"),
        }
    }
}

impl std::error::Error for PayloadError {}

/// The payload's header and sections; the store's image follows them.
pub fn encode_prefix(sections: &Sections) -> Vec<u8> {
    let body = postcard::to_allocvec(sections).expect("sections always serialize");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The length of the payload's prefix (header and sections), once its
/// header is there: `None` for fewer than `HEADER_BYTES` bytes.
pub fn prefix_len(payload: &[u8]) -> Result<Option<usize>, PayloadError> {
    if payload.len() < HEADER_BYTES {
        return Ok(None);
    }
    if &payload[..8] != MAGIC {
        return Err(PayloadError::BadMagic);
    }
    let formats = [
        FORMAT,
        FORMAT_WITHOUT_VERSIONS,
        FORMAT_WITHOUT_OWNERS,
        FORMAT_WITHOUT_CHECK,
        FORMAT_WITHOUT_ALARMS,
        FORMAT_WITHOUT_AUTH,
    ];
    if !formats.contains(&payload[8]) {
        return Err(PayloadError::UnsupportedFormat(payload[8]));
    }
    let len = u32::from_le_bytes(payload[9..13].try_into().expect("4 bytes")) as usize;
    if len > SECTIONS_MAX_BYTES {
        return Err(PayloadError::SectionsTooLarge(len));
    }
    Ok(Some(HEADER_BYTES + len))
}

/// The sections of a payload and the store's image after them.
pub fn split(payload: &[u8]) -> Result<(Sections, &[u8]), PayloadError> {
    let prefix = prefix_len(payload)?.ok_or(PayloadError::Truncated)?;
    if payload.len() < prefix {
        return Err(PayloadError::Truncated);
    }
    let (len, rest) = (prefix - HEADER_BYTES, &payload[HEADER_BYTES..]);
    let sections = decode_sections(payload[8], &rest[..len])?;
    check_sorted(&sections)?;
    check_owners(&sections)?;
    check_versions(&sections)?;
    sections.auth.check().map_err(PayloadError::Malformed)?;
    Ok((sections, &rest[len..]))
}

fn decode_sections(format: u8, bytes: &[u8]) -> Result<Sections, PayloadError> {
    let malformed = |_| PayloadError::Malformed("sections do not decode");
    // Each older format carries a prefix of today's sections; the rest
    // read as empty (leases of formats before 5 as owned by nobody).
    if format == FORMAT_WITHOUT_AUTH {
        let old: SectionsWithoutAuth = postcard::from_bytes(bytes).map_err(malformed)?;
        return Ok(Sections {
            members: old.members,
            leases: without_owners(old.leases),
            usage: Usage::unknown(),
            ..Sections::default()
        });
    }
    if format == FORMAT_WITHOUT_ALARMS {
        let old: SectionsWithoutAlarms = postcard::from_bytes(bytes).map_err(malformed)?;
        return Ok(Sections {
            members: old.members,
            leases: without_owners(old.leases),
            auth: old.auth,
            usage: Usage::unknown(),
            ..Sections::default()
        });
    }
    if format == FORMAT_WITHOUT_CHECK {
        let old: SectionsWithoutCheck = postcard::from_bytes(bytes).map_err(malformed)?;
        return Ok(Sections {
            members: old.members,
            leases: without_owners(old.leases),
            auth: old.auth,
            alarms: old.alarms,
            usage: old.usage,
            ..Sections::default()
        });
    }
    if format == FORMAT_WITHOUT_OWNERS {
        let old: SectionsWithoutOwners = postcard::from_bytes(bytes).map_err(malformed)?;
        return Ok(Sections {
            members: old.members,
            leases: without_owners(old.leases),
            auth: old.auth,
            alarms: old.alarms,
            usage: old.usage,
            check: old.check,
            removed_members: old.removed_members,
            ..Sections::default()
        });
    }
    if format == FORMAT_WITHOUT_VERSIONS {
        let old: SectionsWithoutVersions = postcard::from_bytes(bytes).map_err(malformed)?;
        return Ok(Sections {
            members: old.members,
            leases: old.leases,
            auth: old.auth,
            alarms: old.alarms,
            usage: old.usage,
            check: old.check,
            removed_members: old.removed_members,
            ..Sections::default()
        });
    }
    postcard::from_bytes(bytes).map_err(malformed)
}

fn check_sorted(sections: &Sections) -> Result<(), PayloadError> {
    if !sections.members.windows(2).all(|w| w[0].id < w[1].id) {
        return Err(PayloadError::Malformed("members not ascending by id"));
    }
    if !sections.leases.windows(2).all(|w| w[0].id < w[1].id) {
        return Err(PayloadError::Malformed("leases not ascending by id"));
    }
    if !sections.alarms.windows(2).all(|w| w[0] < w[1]) {
        return Err(PayloadError::Malformed("alarms not ascending"));
    }
    let removed = &sections.removed_members;
    let repeated = removed.iter().enumerate().any(|(i, id)| removed[..i].contains(id));
    if removed.len() > super::members::REMOVED_MEMBERS_MAX || repeated {
        return Err(PayloadError::Malformed("removed member ids beyond the bound or repeated"));
    }
    Ok(())
}

/// Versions are recorded once per member of the table, and a cluster
/// version is a release.
fn check_versions(sections: &Sections) -> Result<(), PayloadError> {
    let versions = &sections.member_versions;
    let ascending = versions.windows(2).all(|w| w[0].0 < w[1].0);
    let known = versions.iter().all(|(id, _)| sections.members.iter().any(|m| m.id == *id));
    if !ascending || !known {
        return Err(PayloadError::Malformed("member versions not ascending or of no member"));
    }
    if sections.cluster_version.is_some_and(|v| v != v.release()) {
        return Err(PayloadError::Malformed("cluster version is not a release"));
    }
    Ok(())
}

/// A lease's owner is a user name as `auth` accepts one. The user need not
/// exist any more than a key's lease must: deleting a user forgets its
/// leases, but the check here only bounds what the bytes may hold.
fn check_owners(sections: &Sections) -> Result<(), PayloadError> {
    let sound = |name: &str| !name.is_empty() && name.len() <= crate::auth::USER_NAME_BYTES_MAX;
    if !sections.leases.iter().all(|l| l.owner.as_deref().is_none_or(sound)) {
        return Err(PayloadError::Malformed("lease owner is not a user name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sections {
        Sections {
            members: vec![
                MemberRecord {
                    id: 1,
                    name: "a".into(),
                    peer_urls: vec!["http://10.0.0.1:7380".into()],
                    client_urls: vec!["http://10.0.0.1:7379".into()],
                    is_learner: false,
                },
                MemberRecord { id: 9, ..MemberRecord::default() },
            ],
            leases: vec![
                LeaseRecord { id: 5, ttl_secs: 10, owner: None },
                LeaseRecord { id: 6, ttl_secs: 20, owner: Some("alice".into()) },
            ],
            auth: {
                let mut auth = AuthState::default();
                auth.add_user("root", Some("h".into())).unwrap();
                auth.grant_role("root", "root").unwrap();
                auth.enable(&[3; crate::auth::token::KEY_BYTES]).unwrap();
                auth
            },
            alarms: vec![AlarmRecord { member_id: 9, kind: super::super::AlarmKind::NoSpace }],
            usage: Usage::default(),
            check: Some(OpenCheck {
                index: 12,
                revision: 40,
                compact_revision: 30,
                reports: vec![(1, 0xabcd)],
                ..OpenCheck::default()
            }),
            removed_members: vec![4, 2],
            member_versions: vec![(1, Version::new(0, 2, 1)), (9, Version::new(0, 1, 0))],
            cluster_version: Some(Version::new(0, 1, 0)),
        }
    }

    #[test]
    fn round_trip_keeps_the_image_after_the_sections() {
        let mut payload = encode_prefix(&sample());
        payload.extend_from_slice(b"IMAGE");
        let (sections, image) = split(&payload).unwrap();
        assert_eq!(sections, sample());
        assert_eq!(image, b"IMAGE");
    }

    #[test]
    fn every_truncation_and_bad_header_is_an_error() {
        let payload = encode_prefix(&sample());
        for len in 0..payload.len() {
            assert!(split(&payload[..len]).is_err(), "prefix of {len} bytes accepted");
        }
        let mut bad = payload.clone();
        bad[0] ^= 1;
        assert_eq!(split(&bad), Err(PayloadError::BadMagic));
        let mut bad = payload.clone();
        bad[8] = 7;
        assert_eq!(split(&bad), Err(PayloadError::UnsupportedFormat(7)));
        let mut bad = payload;
        bad[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(split(&bad), Err(PayloadError::SectionsTooLarge(u32::MAX as usize)));
    }

    /// A payload of an older `format` around `body`.
    fn old_payload(format: u8, body: &[u8]) -> Vec<u8> {
        let mut payload = MAGIC.to_vec();
        payload.push(format);
        payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
        payload.extend_from_slice(body);
        payload
    }

    /// The leases as formats 1 to 4 wrote them: (id, TTL), no owner.
    fn ownerless(s: &Sections) -> Vec<(i64, i64)> {
        s.leases.iter().map(|l| (l.id, l.ttl_secs)).collect()
    }

    fn no_owners(s: &Sections) -> Vec<LeaseRecord> {
        let leases = s.leases.iter().map(|l| LeaseRecord { owner: None, ..l.clone() });
        leases.collect()
    }

    #[test]
    fn a_format_1_payload_reads_as_auth_off() {
        let old = sample();
        let body = postcard::to_allocvec(&(&old.members, ownerless(&old))).unwrap();
        let (sections, _) = split(&old_payload(FORMAT_WITHOUT_AUTH, &body)).unwrap();
        assert_eq!(sections.members, old.members);
        assert_eq!(sections.leases, no_owners(&old));
        assert_eq!(sections.auth, AuthState::default());
    }

    #[test]
    fn a_format_2_payload_reads_as_no_alarms() {
        let old = sample();
        let body = postcard::to_allocvec(&(&old.members, ownerless(&old), &old.auth)).unwrap();
        let (sections, _) = split(&old_payload(FORMAT_WITHOUT_ALARMS, &body)).unwrap();
        assert_eq!(sections.auth, old.auth);
        assert_eq!(sections.leases, no_owners(&old));
        assert!(sections.alarms.is_empty());
    }

    #[test]
    fn a_format_3_payload_reads_as_none_removed() {
        let old = sample();
        let body = (&old.members, ownerless(&old), &old.auth, &old.alarms, &old.usage);
        let body = postcard::to_allocvec(&body).unwrap();
        let (sections, _) = split(&old_payload(FORMAT_WITHOUT_CHECK, &body)).unwrap();
        assert_eq!(sections.alarms, old.alarms);
        assert_eq!(sections.leases, no_owners(&old));
        assert!(sections.removed_members.is_empty());
    }

    #[test]
    fn a_format_4_payload_reads_as_leases_nobody_owns() {
        let old = sample();
        let body = (
            &old.members,
            ownerless(&old),
            &old.auth,
            &old.alarms,
            &old.usage,
            &old.check,
            &old.removed_members,
        );
        let body = postcard::to_allocvec(&body).unwrap();
        let (sections, _) = split(&old_payload(FORMAT_WITHOUT_OWNERS, &body)).unwrap();
        let unversioned = Sections { member_versions: Vec::new(), cluster_version: None, ..old };
        assert_eq!(sections, Sections { leases: no_owners(&unversioned), ..unversioned });
    }

    #[test]
    fn a_format_5_payload_reads_as_no_versions_and_no_cluster_version() {
        let old = sample();
        let body = (
            &old.members,
            &old.leases,
            &old.auth,
            &old.alarms,
            &old.usage,
            &old.check,
            &old.removed_members,
        );
        let body = postcard::to_allocvec(&body).unwrap();
        let (sections, _) = split(&old_payload(FORMAT_WITHOUT_VERSIONS, &body)).unwrap();
        assert_eq!(
            sections,
            Sections { member_versions: Vec::new(), cluster_version: None, ..old }
        );
    }

    #[test]
    fn versions_of_no_member_unsorted_or_a_cluster_patch_are_refused() {
        let mut s = sample();
        s.member_versions.push((5, Version::new(0, 1, 0)));
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
        let mut s = sample();
        s.member_versions.reverse();
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
        let mut s = sample();
        s.cluster_version = Some(Version::new(0, 1, 2));
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn repeated_or_too_many_removed_ids_are_refused() {
        let mut s = sample();
        s.removed_members.push(4);
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
        s.removed_members = (0..=super::super::members::REMOVED_MEMBERS_MAX as u64).collect();
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn an_owner_that_is_no_user_name_is_refused() {
        for bad in [String::new(), "x".repeat(crate::auth::USER_NAME_BYTES_MAX + 1)] {
            let mut s = sample();
            s.leases[1].owner = Some(bad);
            assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
        }
    }

    #[test]
    fn unsorted_alarms_are_refused() {
        let mut s = sample();
        s.alarms.push(AlarmRecord { member_id: 1, kind: super::super::AlarmKind::Corrupt });
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn an_unsound_auth_state_is_refused() {
        let mut s = sample();
        s.auth.token_key.clear();
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn unsorted_sections_are_refused() {
        let mut s = sample();
        s.members.reverse();
        assert!(matches!(split(&encode_prefix(&s)), Err(PayloadError::Malformed(_))));
    }
}
