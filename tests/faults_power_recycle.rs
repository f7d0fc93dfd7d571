//! Power loss while WAL segments are recycled: the members run with 64 KiB
//! segments, a catch-up margin of 20 entries and a snapshot every 40, so
//! within seconds they rotate, release segments to spares and recycle
//! them. Power is cut on every member at once, again and again, and each
//! member's files are rolled back to what it had made durable
//! (`faults::power`). Every acknowledged write must survive, every member
//! must come back by itself, and some member must have written into a
//! recycled segment, or the test proved nothing.
//!
//! A file of its own: the sizes reach the members through the environment,
//! which is set once, before any thread of this test binary starts a member.
//! Needs `--features fault-injection`, like `faults_power.rs`.

#![allow(unsafe_code)] // std::env::set_var, before any member starts

mod faults;
mod support;

#[cfg(feature = "fault-injection")]
mod recycled {
    use std::path::Path;
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    use ember::wal::record::decode_segment_header;
    use ember::wal::{FAULT_CATCH_UP_MARGIN_ENV, FAULT_SEGMENT_BYTES_ENV};

    use super::faults::power::roll_back;
    use super::faults::scenario::{Options, Run, run_with};
    use super::support::cluster::ELECTION_TIMEOUT_MS;

    /// How long a member rolled back to its durable state must stay up.
    const STAY_UP: Duration = Duration::from_millis(1500);

    /// Whether any segment in `data_dir/wal` is a recycled file.
    fn holds_recycled_segment(data_dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(data_dir.join("wal")) else { return false };
        entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "wal")).any(|e| {
            let header = std::fs::read(e.path()).ok().and_then(|b| decode_segment_header(&b).ok());
            header.is_some_and(|h| h.is_recycled())
        })
    }

    fn cut_power_on_every_member(run: &mut Run) -> bool {
        run.fault_now();
        let mut recycled = false;
        for i in 0..3 {
            run.cluster.kill(i);
        }
        for i in 0..3 {
            let (dir, log) = (run.cluster.data_dir(i), run.cluster.sync_log(i));
            recycled |= holds_recycled_segment(&dir);
            let rolled = roll_back(&dir, &log, &mut run.rng).unwrap_or_else(|e| panic!("{e}"));
            println!(
                "faults power_cut member=n{} files_removed={} bytes_changed={} recycled_so_far={recycled}",
                i + 1,
                rolled.files_removed,
                rolled.bytes_changed
            );
        }
        for i in 0..3 {
            run.cluster.spawn(i);
        }
        let until = Instant::now() + STAY_UP;
        while Instant::now() < until {
            for i in 0..3 {
                let exited = run.cluster.exited(i);
                assert!(exited.is_none(), "member {i} did not survive a power cut: {exited:?}");
            }
            sleep(Duration::from_millis(50));
        }
        recycled
    }

    #[test]
    fn power_loss_on_every_member_while_segments_are_recycled() {
        // SAFETY: no other thread of this binary runs yet: this is its only
        // test, and the members it starts inherit the variables.
        unsafe {
            std::env::set_var(FAULT_SEGMENT_BYTES_ENV, (64 << 10).to_string());
            std::env::set_var(FAULT_CATCH_UP_MARGIN_ENV, "20");
        }
        let options = Options { snapshot_count: 40, ..Options::default() };
        run_with("power_loss_recycled", 3, options, |run| {
            let mut recycled = false;
            loop {
                sleep(Duration::from_millis(2 * ELECTION_TIMEOUT_MS));
                recycled |= cut_power_on_every_member(run);
                if !run.time_left() {
                    break;
                }
            }
            assert!(recycled, "no member wrote into a recycled segment before a power cut");
        });
    }
}
