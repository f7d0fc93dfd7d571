//! Support for the fault tests (`tests/faults_*.rs`): a linearizability
//! checker, a history recorder, resource bounds, power-loss rollbacks and
//! the scenario driver. The cluster of real `ember serve` processes and the
//! fault-injecting peer proxy it runs behind are the shared ones of
//! `tests/support`, which every fault test includes beside this module.
//!
//! Each test binary includes this module and uses a different subset of it.

#![allow(dead_code)]

pub mod bounds;
pub mod checker;
pub mod history;
pub mod leader;
pub mod power;
pub mod scenario;
