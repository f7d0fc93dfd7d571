//! The slow half of access control, off the loop: a worker thread checks
//! passwords at login and hashes new ones before they are proposed.
//!
//! PBKDF2 costs tens to hundreds of milliseconds by design; run on the
//! loop it would stall every client and peer. The loop hands jobs over a
//! bounded queue (at most `logins_in_flight_max` at once; past that a login
//! is refused with `LoginBackoff`, never queued without bound) and the
//! worker hands outcomes back and wakes the loop through its waker.
//!
//! A login for a name without a stored password (no such user, or a user
//! without one) takes the same path: the same queue, the same backoff, and
//! a derivation of the same cost against a stand-in
//! (`StoredPassword::stand_in`) that always fails, answered with the same
//! error as a wrong password. Neither the answer's words nor its timing say
//! which names exist.
//!
//! Failed logins (past `BACKOFF_FREE_FAILURES` in a row) put their user
//! name in a backoff (doubling from `BACKOFF_BASE_MS` to `BACKOFF_MAX_MS`) during which a login for that name
//! is refused at once, without hashing: a storm of wrong passwords costs
//! one hash per name per backoff, and other users' logins and every write
//! keep flowing. The table of names in backoff is bounded too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;

use mio::Waker;

use super::proposals::Waiter;
use crate::auth::password::{SALT_BYTES, StoredPassword};

/// Logins and hashes waiting for or in the worker at once, by default.
pub const LOGINS_IN_FLIGHT_MAX_DEFAULT: usize = 16;
/// Failed logins in a row a name may have before it backs off: a typo or
/// two costs nothing.
pub const BACKOFF_FREE_FAILURES: u32 = 2;
/// The first backoff, after `BACKOFF_FREE_FAILURES` failures.
pub const BACKOFF_BASE_MS: u64 = 100;
/// The longest backoff: a user whose password was mistyped waits at most
/// this long, and a guesser gets about one try per this many milliseconds.
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// Names kept in backoff at once; past it the one whose backoff ends
/// first is forgotten.
pub const BACKOFF_NAMES_MAX: usize = 4096;

/// What a new password is hashed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashFor {
    UserAdd { name: String },
    ChangePassword { name: String },
}

enum Job {
    /// `stored` is `None` for a name without a stored password.
    Verify {
        waiter: Waiter,
        name: String,
        password: String,
        stored: Option<String>,
    },
    Hash {
        waiter: Waiter,
        password: String,
        salt: [u8; SALT_BYTES],
        then: HashFor,
    },
}

/// What the worker finished.
pub enum Outcome {
    Verified { waiter: Waiter, name: String, ok: bool },
    Hashed { waiter: Waiter, then: HashFor, stored: String },
}

/// Why a job was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The name is in backoff after failed logins.
    Backoff,
    /// `logins_in_flight_max` jobs are waiting.
    Busy,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until_ms: u64,
}

pub struct Logins {
    jobs: SyncSender<Job>,
    outcomes: Receiver<Outcome>,
    /// Invariant: at most `in_flight_max`.
    in_flight: usize,
    in_flight_max: usize,
    /// Invariant: at most `BACKOFF_NAMES_MAX` names.
    backoff: BTreeMap<String, Backoff>,
}

impl Logins {
    /// Starts the worker; it ends when `Logins` is dropped.
    pub fn start(waker: Arc<Waker>, in_flight_max: usize, iterations: u32) -> Logins {
        let in_flight_max = in_flight_max.max(1);
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(in_flight_max);
        let (outcome_tx, outcomes) = mpsc::channel();
        let spawned = thread::Builder::new().name("ember-logins".into()).spawn(move || {
            let stand_in = StoredPassword::stand_in(iterations);
            for job in job_rx {
                if outcome_tx.send(run(job, iterations, &stand_in)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot start the login worker ({e}): every login will be refused");
        }
        Logins { jobs, outcomes, in_flight: 0, in_flight_max, backoff: BTreeMap::new() }
    }

    /// Queues a password check for `name` against its stored form; `None`
    /// (no such user, or one without a password) is checked against the
    /// stand-in and fails, at the same cost and with the same answer.
    pub fn verify(
        &mut self,
        waiter: Waiter,
        name: String,
        password: String,
        stored: Option<String>,
        now_ms: u64,
    ) -> Result<(), Refused> {
        if self.backoff.get(&name).is_some_and(|b| now_ms < b.until_ms) {
            return Err(Refused::Backoff);
        }
        self.submit(Job::Verify { waiter, name, password, stored })
    }

    /// Queues the hashing of a new password with a fresh salt.
    pub fn hash(
        &mut self,
        waiter: Waiter,
        password: String,
        salt: [u8; SALT_BYTES],
        then: HashFor,
    ) -> Result<(), Refused> {
        self.submit(Job::Hash { waiter, password, salt, then })
    }

    fn submit(&mut self, job: Job) -> Result<(), Refused> {
        if self.in_flight >= self.in_flight_max {
            return Err(Refused::Busy);
        }
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Refused::Busy),
        }
    }

    /// What the worker finished since the last call; failures and
    /// successes move the backoff of their names.
    pub fn finished(&mut self, now_ms: u64) -> Vec<Outcome> {
        let outcomes: Vec<Outcome> = self.outcomes.try_iter().collect();
        self.in_flight = self.in_flight.saturating_sub(outcomes.len());
        for outcome in &outcomes {
            if let Outcome::Verified { name, ok, .. } = outcome {
                self.record(name, *ok, now_ms);
            }
        }
        outcomes
    }

    /// Records a login's result for `name`: a success ends its backoff, a
    /// failure doubles it.
    pub fn record(&mut self, name: &str, ok: bool, now_ms: u64) {
        if ok {
            self.backoff.remove(name);
            return;
        }
        if !self.backoff.contains_key(name) && self.backoff.len() >= BACKOFF_NAMES_MAX {
            let first = self.backoff.iter().min_by_key(|(_, b)| b.until_ms).map(|(n, _)| n.clone());
            if let Some(first) = first {
                self.backoff.remove(&first);
            }
        }
        let entry =
            self.backoff.entry(name.to_string()).or_insert(Backoff { failures: 0, until_ms: 0 });
        entry.failures = entry.failures.saturating_add(1);
        entry.until_ms = now_ms + backoff_ms(entry.failures);
    }
}

/// The wait after `failures` failed logins in a row.
pub fn backoff_ms(failures: u32) -> u64 {
    if failures <= BACKOFF_FREE_FAILURES {
        return 0;
    }
    let doublings = (failures - BACKOFF_FREE_FAILURES - 1).min(16);
    (BACKOFF_BASE_MS << doublings).min(BACKOFF_MAX_MS)
}

fn run(job: Job, iterations: u32, stand_in: &StoredPassword) -> Outcome {
    match job {
        Job::Verify { waiter, name, password, stored } => {
            let ok = password_matches(stored.as_deref(), stand_in, password.as_bytes());
            Outcome::Verified { waiter, name, ok }
        }
        Job::Hash { waiter, password, salt, then } => {
            let stored = StoredPassword::derive(password.as_bytes(), salt, iterations).to_text();
            Outcome::Hashed { waiter, then, stored }
        }
    }
}

/// Whether `password` is the one `stored`. Without a stored form that
/// parses, the stand-in is derived all the same (and its result kept from
/// the optimiser), so a missing user costs what a wrong password costs.
fn password_matches(stored: Option<&str>, stand_in: &StoredPassword, password: &[u8]) -> bool {
    match stored.map(StoredPassword::parse) {
        Some(Ok(stored)) => stored.verify(password),
        Some(Err(_)) | None => {
            std::hint::black_box(stand_in.verify(password));
            false
        }
    }
}

/// `N` bytes from the operating system's generator, for salts and the
/// token key.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ring::error::Unspecified> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(request_id: u64) -> Waiter {
        Waiter { slot: 0, serial: 0, request_id, cost_bytes: 0 }
    }

    /// A worker and the loop's side of it, with `iterations` for new hashes.
    fn logins(iterations: u32) -> (mio::Poll, Logins) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, Logins::start(waker, 4, iterations))
    }

    /// Waits for the worker's `count` outcomes.
    fn outcomes(logins: &mut Logins, count: usize, now_ms: u64) -> Vec<Outcome> {
        let mut all = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while all.len() < count {
            assert!(std::time::Instant::now() < deadline, "the worker did not answer");
            all.extend(logins.finished(now_ms));
            thread::sleep(std::time::Duration::from_millis(1));
        }
        all
    }

    fn verified(outcome: &Outcome) -> (u64, &str, bool) {
        match outcome {
            Outcome::Verified { waiter, name, ok } => (waiter.request_id, name, *ok),
            Outcome::Hashed { .. } => panic!("a hash where a check was expected"),
        }
    }

    #[test]
    fn an_unknown_name_fails_as_a_wrong_password_does_and_backs_off_alike() {
        let (_poll, mut logins) = logins(1_000);
        let stored = StoredPassword::derive(b"right", [9; SALT_BYTES], 1_000).to_text();
        let now_ms = 1_000;
        // Right, wrong, unknown, and a stored form that does not parse.
        let stored_of = |n: u64| match n {
            1 | 2 => Some(stored.clone()),
            3 => None,
            _ => Some("pbkdf2-sha256$x".to_string()),
        };
        for (n, password) in [(1, "right"), (2, "wrong"), (3, "right"), (4, "right")] {
            let name = format!("user{n}");
            logins.verify(waiter(n), name, password.into(), stored_of(n), now_ms).unwrap();
        }
        let mut got: Vec<(u64, String, bool)> = outcomes(&mut logins, 4, now_ms)
            .iter()
            .map(verified)
            .map(|(id, name, ok)| (id, name.to_string(), ok))
            .collect();
        got.sort();
        let expected = [(1, true), (2, false), (3, false), (4, false)];
        let expected: Vec<_> =
            expected.iter().map(|&(n, ok)| (n, format!("user{n}"), ok)).collect();
        assert_eq!(got, expected);
        // Failures move the backoff of a known and an unknown name alike:
        // one failure each so far, the free ones, then refused.
        for _ in 0..BACKOFF_FREE_FAILURES {
            for (n, stored) in [(2, Some(stored.clone())), (3, None)] {
                let name = format!("user{n}");
                logins.verify(waiter(n), name, "wrong".into(), stored, now_ms).unwrap();
            }
            outcomes(&mut logins, 2, now_ms);
        }
        for (n, stored) in [(2, Some(stored.clone())), (3, None)] {
            let name = format!("user{n}");
            let refused = logins.verify(waiter(n), name, "right".into(), stored, now_ms);
            assert_eq!(refused, Err(Refused::Backoff), "user{n}");
        }
    }

    #[test]
    fn the_worker_checks_unknown_names_at_the_cost_of_the_hashes_it_makes() {
        // The stand-in follows the worker's iterations, which are the ones
        // new passwords are hashed with.
        let iterations = 1_234;
        let hashed = run(
            Job::Hash {
                waiter: waiter(1),
                password: "pw".into(),
                salt: [1; SALT_BYTES],
                then: HashFor::UserAdd { name: "u".into() },
            },
            iterations,
            &StoredPassword::stand_in(iterations),
        );
        let Outcome::Hashed { stored, .. } = hashed else { panic!("not a hash") };
        let stored = StoredPassword::parse(&stored).unwrap();
        assert_eq!(StoredPassword::stand_in(iterations).iterations, stored.iterations);
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff_ms(BACKOFF_FREE_FAILURES), 0);
        assert_eq!(backoff_ms(BACKOFF_FREE_FAILURES + 1), BACKOFF_BASE_MS);
        assert_eq!(backoff_ms(BACKOFF_FREE_FAILURES + 2), 2 * BACKOFF_BASE_MS);
        assert_eq!(backoff_ms(40), BACKOFF_MAX_MS);
    }
}
