//! Stored passwords: PBKDF2-HMAC-SHA256 with a per-user salt, in a text
//! form that names the algorithm and its cost, so the cost can be raised
//! later without breaking the users already stored:
//!
//! ```text
//! pbkdf2-sha256$<iterations>$<salt, hex>$<derived key, hex>
//! ```
//!
//! Hashing is slow on purpose (tens to hundreds of milliseconds on a
//! board): the node runs it on a worker thread, never on the loop and never
//! in apply. The salt comes in as an argument; this module draws no random
//! bytes.

use std::num::NonZeroU32;

use ring::pbkdf2;

use super::{hex, unhex};

const ALGORITHM_NAME: &str = "pbkdf2-sha256";
/// Bytes of salt: 128 bits, as NIST SP 800-132 asks at least.
pub const SALT_BYTES: usize = 16;
/// Bytes of derived key: one SHA-256 output.
pub const HASH_BYTES: usize = 32;
/// The default cost: 21 ms of one core of the x86 server the benchmarks
/// run on (`cargo bench --bench auth`) and, at the usual 4-6x ratio, about
/// 85-125 ms on a Raspberry Pi 4: slow enough that a stolen hash costs an
/// attacker dearly, fast enough that a login on a board stays well under a
/// second.
pub const ITERATIONS_DEFAULT: u32 = 100_000;
/// The highest cost a stored hash may name: a stored form is data from the
/// log or a file, and a made-up count must not stall a worker for hours.
pub const ITERATIONS_MAX: u32 = 10_000_000;
/// The longest stored form: the name, a count, the salt and the key in hex.
pub const STORED_BYTES_MAX: usize = 128;

/// A password as stored: algorithm, cost, salt and derived key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPassword {
    pub iterations: u32,
    pub salt: [u8; SALT_BYTES],
    pub hash: [u8; HASH_BYTES],
}

/// Why a stored form does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadStoredPassword;

impl std::fmt::Display for BadStoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a stored password of the form {ALGORITHM_NAME}$iterations$salt$hash")
    }
}

impl StoredPassword {
    /// Derives the stored form of `password` with `salt` at `iterations`.
    pub fn derive(password: &[u8], salt: [u8; SALT_BYTES], iterations: u32) -> StoredPassword {
        let rounds = NonZeroU32::new(iterations.clamp(1, ITERATIONS_MAX)).expect("at least 1");
        let mut hash = [0u8; HASH_BYTES];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password, &mut hash);
        StoredPassword { iterations: rounds.get(), salt, hash }
    }

    /// What a login for a name without a stored password (no such user,
    /// or a user without one) is checked against: the cost of a password
    /// hashed at `iterations`, and a key no password derives to (all
    /// zeros: 2^-256 for any one guess), so the answer takes as long as a
    /// wrong password's and tells nobody which names exist. Made once.
    pub fn stand_in(iterations: u32) -> StoredPassword {
        let rounds = iterations.clamp(1, ITERATIONS_MAX);
        StoredPassword { iterations: rounds, salt: [0x5a; SALT_BYTES], hash: [0; HASH_BYTES] }
    }

    /// Whether `password` is the one stored, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let Some(rounds) = NonZeroU32::new(self.iterations) else { return false };
        let algorithm = pbkdf2::PBKDF2_HMAC_SHA256;
        pbkdf2::verify(algorithm, rounds, &self.salt, password, &self.hash).is_ok()
    }

    pub fn to_text(&self) -> String {
        format!("{ALGORITHM_NAME}${}${}${}", self.iterations, hex(&self.salt), hex(&self.hash))
    }

    /// Parses a stored form, within its bounds.
    pub fn parse(text: &str) -> Result<StoredPassword, BadStoredPassword> {
        if text.len() > STORED_BYTES_MAX {
            return Err(BadStoredPassword);
        }
        let mut parts = text.split('$');
        let (Some(name), Some(count), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadStoredPassword);
        };
        let iterations: u32 = count.parse().map_err(|_| BadStoredPassword)?;
        if name != ALGORITHM_NAME || iterations == 0 || iterations > ITERATIONS_MAX {
            return Err(BadStoredPassword);
        }
        let salt = unhex(salt).and_then(|s| s.try_into().ok()).ok_or(BadStoredPassword)?;
        let hash = unhex(hash).and_then(|h| h.try_into().ok()).ok_or(BadStoredPassword)?;
        Ok(StoredPassword { iterations, salt, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let stored = StoredPassword::derive(b"secret", [7; SALT_BYTES], 1_000);
        assert!(stored.verify(b"secret"));
        assert!(!stored.verify(b"secreT"));
        assert!(!stored.verify(b""));
        let other_salt = StoredPassword::derive(b"secret", [8; SALT_BYTES], 1_000);
        assert_ne!(stored.hash, other_salt.hash);
    }

    #[test]
    fn the_stand_in_costs_what_a_password_hashed_here_costs_and_takes_no_password() {
        for iterations in [0, 1, 1_000, ITERATIONS_DEFAULT] {
            let real = StoredPassword::derive(b"pw", [3; SALT_BYTES], iterations);
            let stand_in = StoredPassword::stand_in(iterations);
            assert_eq!(stand_in.iterations, real.iterations, "{iterations}");
        }
        // Past the ceiling both are held to it (deriving there takes seconds).
        assert_eq!(StoredPassword::stand_in(u32::MAX).iterations, ITERATIONS_MAX);
        let stand_in = StoredPassword::stand_in(10);
        for guess in [&b""[..], b"pw", b"root", &[0u8; 32]] {
            assert!(!stand_in.verify(guess));
        }
    }

    #[test]
    fn the_text_form_round_trips_and_names_its_cost() {
        let stored = StoredPassword::derive(b"pw", [1; SALT_BYTES], 2_000);
        let text = stored.to_text();
        assert!(text.starts_with("pbkdf2-sha256$2000$"), "{text}");
        assert_eq!(StoredPassword::parse(&text), Ok(stored));
    }

    #[test]
    fn bad_stored_forms_are_refused() {
        let good = StoredPassword::derive(b"pw", [1; SALT_BYTES], 10).to_text();
        for bad in [
            String::new(),
            good.replace("pbkdf2-sha256", "md5"),
            good.replace("$10$", "$0$"),
            good.replace("$10$", "$99999999999$"),
            good.replace("$10$", "$10000001$"),
            format!("{good}$"),
            good[..good.len() - 2].to_string(),
            good.replace('a', "g"),
            "x".repeat(STORED_BYTES_MAX + 1),
        ] {
            assert_eq!(StoredPassword::parse(&bad), Err(BadStoredPassword), "{bad}");
        }
    }
}
