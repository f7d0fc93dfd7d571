//! Who a call acts as on the node.
//!
//! etcd's clients log in once (`Authenticate`) and then send the token as
//! `token` metadata on every call; etcd's JSON gateway sends it in the
//! `Authorization` header, which arrives here as `authorization` metadata.
//! A node binds a token to a connection (`UseToken`), not to a request, so
//! a call made as a user must travel on a connection bound to that user's
//! token. The gateway keeps such links in `TokenLinks`: one per token in
//! use, at most a configured number, the least recently used given up
//! first. A call without a token goes on the shared links, which are never
//! bound to anyone, so it acts as an anonymous client and never as another
//! client's user.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::metadata::MetadataMap;

use crate::link::Link;

/// The longest token the gateway passes on. The node's tokens are far
/// shorter (a 256-byte user name in hex and five numbers); a longer one is
/// refused as invalid without a connection being dialed for it.
pub const TOKEN_BYTES_MAX: usize = 1024;

/// The identity a call carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Token(String),
}

impl Caller {
    /// The token of `metadata`: `token` (gRPC clients), else
    /// `authorization` (etcd's JSON gateway); none makes an anonymous call.
    pub fn of(metadata: &MetadataMap) -> Caller {
        for key in ["token", "authorization"] {
            let value = metadata.get(key).and_then(|value| value.to_str().ok());
            if let Some(token) = value.filter(|token| !token.is_empty()) {
                return Caller::Token(token.to_string());
            }
        }
        Caller::Anonymous
    }
}

/// What the gateway learned about a token.
#[derive(Clone)]
pub enum Binding {
    /// A link the node bound to the token.
    Bound(Arc<Link>),
    /// The node answered that auth is off. Such a token can never become
    /// valid (each `AuthEnable` draws a new key), and etcd ignores tokens
    /// while auth is off, so calls carrying it go out anonymously.
    AuthOff,
}

/// Links bound to tokens, least recently used given up first.
pub struct TokenLinks {
    /// Invariant: `entries.len() <= max_links`.
    entries: HashMap<String, Entry>,
    max_links: usize,
    /// Counts uses; an entry's `last_used` orders evictions.
    clock: u64,
}

struct Entry {
    binding: Binding,
    last_used: u64,
}

impl TokenLinks {
    pub fn new(max_links: usize) -> TokenLinks {
        TokenLinks { entries: HashMap::new(), max_links: max_links.max(1), clock: 0 }
    }

    /// The binding of `token`, if one is known and its link still works.
    pub fn get(&mut self, token: &str) -> Option<Binding> {
        self.clock += 1;
        let entry = self.entries.get_mut(token)?;
        if let Binding::Bound(link) = &entry.binding
            && link.is_broken()
        {
            self.entries.remove(token);
            return None;
        }
        entry.last_used = self.clock;
        Some(entry.binding.clone())
    }

    /// Remembers `binding` for `token`, giving up the least recently used
    /// link when full. A given-up link closes once its calls in flight are
    /// answered.
    pub fn insert(&mut self, token: String, binding: Binding) {
        self.clock += 1;
        if !self.entries.contains_key(&token) && self.entries.len() >= self.max_links {
            let oldest = self.entries.iter().min_by_key(|(_, entry)| entry.last_used);
            if let Some(oldest) = oldest.map(|(token, _)| token.clone()) {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(token, Entry { binding, last_used: self.clock });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn the_token_comes_from_token_then_authorization() {
        let mut metadata = MetadataMap::new();
        assert_eq!(Caller::of(&metadata), Caller::Anonymous);
        metadata.insert("authorization", MetadataValue::from_static("b"));
        assert_eq!(Caller::of(&metadata), Caller::Token("b".into()));
        metadata.insert("token", MetadataValue::from_static("a"));
        assert_eq!(Caller::of(&metadata), Caller::Token("a".into()));
        let mut empty = MetadataMap::new();
        empty.insert("token", MetadataValue::from_static(""));
        assert_eq!(Caller::of(&empty), Caller::Anonymous);
    }

    #[test]
    fn the_least_recently_used_token_goes_first() {
        let mut links = TokenLinks::new(2);
        links.insert("a".into(), Binding::AuthOff);
        links.insert("b".into(), Binding::AuthOff);
        assert!(links.get("a").is_some());
        links.insert("c".into(), Binding::AuthOff);
        assert_eq!(links.entries.len(), 2);
        assert!(links.get("b").is_none(), "b was the least recently used");
        assert!(links.get("a").is_some() && links.get("c").is_some());
    }
}
