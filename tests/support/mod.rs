//! What the integration tests share: real `ember serve` clusters with
//! optional fault-injecting peer proxies (`cluster`, `proxy`), the `ember`
//! binary as a CLI test runs it (`cli`), child processes (`process`), test
//! ports (`ports`), the seeded generator (`rng`) and test certificates
//! made with openssl (`certs`).
//!
//! Each test binary includes this module with `mod support;` and uses a
//! different part of it; tests that need only the generator include
//! `support/rng.rs` alone with `#[path]`.

#![allow(dead_code)]

pub mod certs;
pub mod cli;
pub mod cluster;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod rng;
