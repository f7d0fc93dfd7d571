//! Support for the fault tests (`tests/faults_*.rs`): a linearizability
//! checker, a history recorder, a fault-injecting TCP proxy for peer links
//! and a harness that runs real `ember serve` processes.
//!
//! Each test binary includes this module and uses a different subset of it.

#![allow(dead_code)]

pub mod bounds;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod power;
pub mod proxy;
pub mod rng;
pub mod scenario;
#[path = "../test_ports/mod.rs"]
pub mod test_ports;
