//! Versions and the cluster version: the pure decisions of a rolling
//! upgrade.
//!
//! Every member publishes its own version (`MemberOp::PublishVersion`).
//! The cluster version is the lowest major.minor among all members, voters
//! and learners, decided only once every member has published one; it is
//! replicated (`Op::ClusterVersion`), kept in the snapshot image, and only
//! rises. A member whose own major.minor is below it cannot read what the
//! cluster may now write, and refuses to run.
//!
//! An entry layout or peer message that older members cannot read is a
//! `Feature`: written only when `supports(cluster_version, feature)`.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

/// A member's version, major.minor.patch. Ordered field by field, so a
/// cluster version (patch 0) compares with a member's by major.minor
/// through `release`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version { major, minor, patch }
    }

    /// The release line: major.minor, the patch dropped. Patches of one
    /// release read and write the same layouts.
    pub const fn release(self) -> Version {
        Version { major: self.major, minor: self.minor, patch: 0 }
    }

    /// `major.minor.patch`, each a decimal number of at most 9 digits (so
    /// none overflows a u32); `None` for anything else.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.');
        let mut next = || {
            let part = parts.next()?;
            let digits = part.bytes().all(|b| b.is_ascii_digit());
            if part.is_empty() || part.len() > 9 || !digits {
                return None;
            }
            part.parse().ok()
        };
        let version = Version::new(next()?, next()?, next()?);
        parts.next().is_none().then_some(version)
    }

    /// `major.minor`, as etcd prints a cluster version.
    pub fn release_text(self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Records `version` as member `id`'s in `published` (ascending by id).
pub fn record(published: &mut Vec<(u64, Version)>, id: u64, version: Version) {
    match published.binary_search_by_key(&id, |(member, _)| *member) {
        Ok(at) => published[at].1 = version,
        Err(at) => published.insert(at, (id, version)),
    }
}

/// The cluster version `members` call for: the lowest release among them,
/// once every one of them has published a version (`published`, by id);
/// `None` while any has not, or for an empty table.
pub fn lowest_release<I>(members: I, published: &[(u64, Version)]) -> Option<Version>
where
    I: IntoIterator,
    I::Item: Borrow<u64>,
{
    let version_of = |id: u64| published.iter().find(|(m, _)| *m == id).map(|(_, v)| *v);
    let mut lowest: Option<Version> = None;
    for id in members {
        let release = version_of(*id.borrow())?.release();
        lowest = Some(lowest.map_or(release, |l| l.min(release)));
    }
    lowest
}

/// The cluster version to propose, if any: the lowest release of all
/// members when it is known and above `current` (the cluster version only
/// rises; a lower lowest means a member too old to run, which refuses by
/// itself).
pub fn next_cluster_version<I>(
    current: Option<Version>,
    members: I,
    published: &[(u64, Version)],
) -> Option<Version>
where
    I: IntoIterator,
    I::Item: Borrow<u64>,
{
    let lowest = lowest_release(members, published)?;
    current.is_none_or(|c| lowest > c).then_some(lowest)
}

/// True when the cluster version may become `proposed`: it rises above
/// `current`, is a release, and every member has published a version
/// whose release is at least it. Checked where it is applied, so a
/// leader that decided on a table that has changed since is refused.
pub fn accepts(
    current: Option<Version>,
    proposed: Version,
    members: &[u64],
    published: &[(u64, Version)],
) -> bool {
    let rises = current.is_none_or(|c| proposed > c);
    let called_for = lowest_release(members, published).is_some_and(|l| proposed <= l);
    rises && called_for && proposed == proposed.release()
}

/// True when a member of version `own` can run in a cluster at `cluster`:
/// its release is at least the cluster version.
pub fn can_run(own: Version, cluster: Option<Version>) -> bool {
    cluster.is_none_or(|c| own.release() >= c)
}

/// What a member too old for the cluster logs and answers before it stops.
pub fn too_old_message(own: Version, cluster: Version) -> String {
    format!(
        "cluster cannot be downgraded: this member runs {own} and the cluster version is {}; \
         start a binary of at least {}.0",
        cluster.release_text(),
        cluster.release_text()
    )
}

/// An entry layout or peer message that members before some release
/// cannot read: the code that would write it asks `supports` first
/// (ARCHITECTURE.md, "Upgrades and the cluster version").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Commands without their origin, matched by sequence number alone
    /// (`state::command`, FORMAT.md).
    SequenceOnlyCommand,
}

impl Feature {
    /// The first release whose members read it.
    pub fn since(self) -> Version {
        match self {
            Feature::SequenceOnlyCommand => Version::new(0, 2, 0),
        }
    }
}

/// True when every member can read what `feature` writes: the cluster
/// version is decided and at least the feature's release. Undecided means
/// some member may be older than any release that knows of versions.
pub fn supports(cluster: Option<Version>, feature: Feature) -> bool {
    allows(cluster, feature.since())
}

/// `supports`, for a feature of release `since`.
pub fn allows(cluster: Option<Version>, since: Version) -> bool {
    cluster.is_some_and(|c| c >= since.release())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0_1: Version = Version::new(0, 1, 0);
    const V0_2: Version = Version::new(0, 2, 0);

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(Version::parse("0.1.0"), Some(V0_1));
        assert_eq!(Version::parse("12.34.56"), Some(Version::new(12, 34, 56)));
        for bad in ["", "0.1", "0.1.0.0", "a.b.c", "0.-1.0", "0.1.x", "1.2.9999999999", " 0.1.0"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Version::new(0, 2, 7).to_string(), "0.2.7");
        assert_eq!(Version::new(0, 2, 7).release_text(), "0.2");
    }

    #[test]
    fn the_cluster_version_is_the_lowest_release_of_all_members() {
        let published = [(1, Version::new(0, 2, 3)), (2, Version::new(0, 1, 9)), (3, V0_2)];
        assert_eq!(lowest_release([1, 2, 3], &published), Some(V0_1));
        assert_eq!(lowest_release([1, 3], &published), Some(V0_2));
        assert_eq!(next_cluster_version(None, [1, 2, 3], &published), Some(V0_1));
    }

    #[test]
    fn nothing_is_decided_until_every_member_published() {
        let published = [(1, V0_2), (3, V0_2)];
        assert_eq!(lowest_release([1, 2, 3], &published), None);
        assert_eq!(next_cluster_version(None, [1, 2, 3], &published), None);
        assert_eq!(lowest_release([0_u64; 0], &published), None);
    }

    #[test]
    fn the_cluster_version_only_rises() {
        let published = [(1, V0_2), (2, Version::new(0, 2, 5))];
        assert_eq!(next_cluster_version(Some(V0_1), [1, 2], &published), Some(V0_2));
        assert_eq!(next_cluster_version(Some(V0_2), [1, 2], &published), None);
        let older = [(1, V0_2), (2, V0_1)];
        assert_eq!(next_cluster_version(Some(V0_2), [1, 2], &older), None);
        assert!(accepts(Some(V0_1), V0_2, &[1, 2], &published));
        assert!(!accepts(Some(V0_2), V0_2, &[1, 2], &published), "not rising");
        assert!(!accepts(Some(V0_1), V0_2, &[1, 2, 3], &published), "3 unknown");
        assert!(!accepts(None, Version::new(0, 2, 5), &[1, 2], &published), "no release");
        assert!(!accepts(None, V0_2, &[1, 2], &older), "above the lowest");
    }

    #[test]
    fn a_member_runs_only_at_or_above_the_cluster_version() {
        assert!(can_run(V0_1, None));
        assert!(can_run(Version::new(0, 1, 3), Some(V0_1)));
        assert!(can_run(Version::new(1, 0, 0), Some(V0_2)));
        assert!(!can_run(Version::new(0, 1, 9), Some(V0_2)));
        let message = too_old_message(Version::new(0, 1, 9), V0_2);
        assert!(message.contains("0.1.9") && message.contains("at least 0.2.0"), "{message}");
    }

    #[test]
    fn a_feature_is_allowed_once_the_decided_version_reaches_its_release() {
        assert!(!allows(None, V0_1), "undecided allows nothing new");
        assert!(allows(Some(V0_1), Version::new(0, 1, 4)));
        assert!(!allows(Some(V0_1), V0_2));
        assert!(allows(Some(Version::new(1, 0, 0)), V0_2));
        let compact = Feature::SequenceOnlyCommand;
        assert!(!supports(None, compact) && !supports(Some(V0_1), compact));
        assert!(supports(Some(V0_2), compact));
    }
}
