//! Tokens any member can check: an HMAC-SHA256 over who, which epoch of
//! that user, when issued and until when, under the cluster's token key.
//!
//! The key is made at `auth enable` (random bytes drawn by the member that
//! proposed it) and replicated through the log and snapshots, so a token
//! outlives the member that issued it, a leader change and a restart. A
//! user's epoch changes when its password changes, when it is deleted or
//! loses a role: tokens of the old epoch stop working, and nobody else's.
//! A new `auth enable` makes a new key, ending every token of the old one.
//!
//! Text form, printable and free of spaces so it can travel as etcd's
//! token string:
//!
//! ```text
//! <user name, hex>.<epoch>.<issued_unix_ms>.<expires_unix_ms>.<mac, hex>
//! ```
//!
//! Times are wall-clock milliseconds since the Unix epoch, passed in by
//! the caller; members' clocks may differ by a little, which moves an
//! expiry by as much.

use ring::hmac;

use super::{USER_NAME_BYTES_MAX, hex, unhex};

/// Bytes of the token key.
pub const KEY_BYTES: usize = 32;
/// The longest token text: a name at its bound in hex, four numbers and the
/// MAC in hex. Longer input is refused before it is parsed.
pub const TOKEN_BYTES_MAX: usize = 2 * USER_NAME_BYTES_MAX + 4 * 21 + 2 * 32;
/// etcd's default `--auth-token-ttl`: five minutes.
pub const TOKEN_TTL_SECS_DEFAULT: u64 = 300;

/// What a token says, once its MAC checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub epoch: u64,
    pub issued_unix_ms: u64,
    pub expires_unix_ms: u64,
}

/// Why a token was refused. The client sees one error for all of them
/// (`InvalidAuthToken`); the reasons are for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadMac,
    Expired,
    /// The user is gone or its epoch moved on.
    Revoked,
    /// Auth is off or was enabled again with a new key.
    NoKey,
}

impl Claims {
    fn signed_text(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            hex(self.user.as_bytes()),
            self.epoch,
            self.issued_unix_ms,
            self.expires_unix_ms
        )
    }

    /// The token text for these claims under `key`.
    pub fn sign(&self, key: &[u8]) -> String {
        let body = self.signed_text();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body.as_bytes());
        format!("{body}.{}", hex(tag.as_ref()))
    }

    /// The claims of a token whose MAC checks out under `key` (compared in
    /// constant time). Expiry and epoch are the caller's to check.
    pub fn verify(token: &str, key: &[u8]) -> Result<Claims, TokenError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = unhex(tag).ok_or(TokenError::Malformed)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        hmac::verify(&key, body.as_bytes(), &tag).map_err(|_| TokenError::BadMac)?;
        parse_body(body).ok_or(TokenError::Malformed)
    }

    pub fn expired(&self, now_unix_ms: u64) -> bool {
        now_unix_ms >= self.expires_unix_ms
    }
}

fn parse_body(body: &str) -> Option<Claims> {
    let mut parts = body.split('.');
    let user = String::from_utf8(unhex(parts.next()?)?).ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let issued_unix_ms = parts.next()?.parse().ok()?;
    let expires_unix_ms = parts.next()?.parse().ok()?;
    if parts.next().is_some() || user.is_empty() || user.len() > USER_NAME_BYTES_MAX {
        return None;
    }
    Some(Claims { user, epoch, issued_unix_ms, expires_unix_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims { user: "alice.b".into(), epoch: 4, issued_unix_ms: 1_000, expires_unix_ms: 2_000 }
    }

    #[test]
    fn a_signed_token_verifies_under_its_key_only() {
        let token = claims().sign(&[1; KEY_BYTES]);
        assert_eq!(Claims::verify(&token, &[1; KEY_BYTES]), Ok(claims()));
        assert_eq!(Claims::verify(&token, &[2; KEY_BYTES]), Err(TokenError::BadMac));
        assert!(!token.contains(' '));
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let token = claims().sign(&[1; KEY_BYTES]);
        for at in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(Claims::verify(&changed, &[1; KEY_BYTES]).is_err(), "byte {at}");
        }
        assert_eq!(Claims::verify("", &[1; KEY_BYTES]), Err(TokenError::Malformed));
        let long = "a".repeat(TOKEN_BYTES_MAX + 1);
        assert_eq!(Claims::verify(&long, &[1; KEY_BYTES]), Err(TokenError::Malformed));
    }

    #[test]
    fn expiry_is_the_end_of_the_window() {
        assert!(!claims().expired(1_999));
        assert!(claims().expired(2_000));
    }
}
