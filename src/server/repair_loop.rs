//! The loop's side of a repair (`repair.rs` describes it): following this
//! member's `Corrupt` alarm, asking for an image or handing the leadership
//! on, answering another member's ask as leader, and swapping the repaired
//! state machine in.

use std::time::{Duration, Instant};

use super::ServeError;
use super::node::Node;
use super::repair::{ImageFit, REPAIR_REPLAY_BATCH_BYTES, REPAIR_RETRY, Repair, image_fit};
use super::snapshots::Received;
use crate::proto::CancelReason;
use crate::raft::{Message, MessageKind, Snapshot, SnapshotMeta};
use crate::state::{AlarmKind, CorruptOp, Op, StateMachine};

impl Node {
    /// After the `Ready`s of an iteration: acts on `Corrupt` being raised
    /// or cleared for this member, and takes the next step of a repair.
    pub(super) fn follow_corruption(&mut self, now: Instant) -> Result<(), ServeError> {
        self.follow_startup_gate(now);
        let corrupt = self.is_corrupt();
        match (self.repair.raised_at.is_some(), corrupt) {
            (false, true) => self.corrupt_raised(now),
            (true, false) => self.corrupt_cleared(now),
            _ => {}
        }
        if !corrupt || !self.repair.enabled {
            self.repair.staged = None;
            return Ok(());
        }
        if let Some(received) = self.repair.staged.take() {
            return self.install_repair_image(received, now);
        }
        self.maybe_ask_repair(now);
        Ok(())
    }

    fn corrupt_raised(&mut self, now: Instant) {
        self.repair.raised_at = Some(now);
        self.repair.asks = 0;
        self.clients.cancel_all_watches(self.header(), CancelReason::Corrupt);
        let next = match self.repair.enabled {
            true => "it repairs from the leader once a quorum of sound voters agree",
            false => "--corrupt-repair=false: it waits for the operator",
        };
        log::error!(
            "CORRUPT raised for this member at applied index {}: its watches are cancelled \
             and keyspace requests refused; {next}",
            self.state.applied_index()
        );
    }

    fn corrupt_cleared(&mut self, now: Instant) {
        let took_ms = self.repair.raised_at.map_or(0, |at| now.duration_since(at).as_millis());
        log::info!(
            "CORRUPT cleared for this member at applied index {}, {took_ms} ms after it was \
             raised; serving again",
            self.state.applied_index()
        );
        let enabled = self.repair.enabled;
        self.repair = Repair::new(enabled, now);
    }

    /// Asks the leader for an image, or hands the leadership on first, when
    /// the open check lets this member be repaired.
    fn maybe_ask_repair(&mut self, now: Instant) {
        if now < self.repair.next_try {
            return;
        }
        if self.repair.check_wanted {
            return self.propose_repair_check(now);
        }
        let Some(check) = self.state.open_check() else { return };
        if check.index <= self.repair.swapped_at_index {
            // The check of the repaired store has not decided yet.
            return;
        }
        let voters: Vec<u64> =
            self.state.members().iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
        let sound = check.sound_members(self.config.member_id, &voters);
        if sound.is_empty() {
            return;
        }
        self.repair.next_try = now + REPAIR_RETRY;
        if self.leader_id == self.config.member_id {
            self.hand_off_leadership(&sound, now);
        } else if sound.contains(&self.leader_id) {
            self.ask_repair_image();
        }
    }

    /// An outvoted leader moves the leadership to a sound voter and repairs
    /// as a follower: its image must come from a member the majority backs.
    fn hand_off_leadership(&mut self, sound: &[u64], now: Instant) {
        let target = sound[0];
        match self.raft.transfer_leader(target) {
            Ok(()) => log::info!(
                "repair: this leader is outvoted; handing the leadership to {target:016x} first"
            ),
            Err(e) => log::warn!("repair: leadership not handed to {target:016x}: {e:?}"),
        }
        // Raft abandons a transfer after an election timeout.
        self.repair.next_try = now + Duration::from_millis(self.config.election_timeout_ms);
    }

    fn ask_repair_image(&mut self) {
        let applied = self.state.applied_index();
        let floor = self.raft.storage().wal.first_index().saturating_sub(1);
        let mut ask = Message::new(MessageKind::RepairAsk, self.leader_id);
        (ask.from, ask.term, ask.index, ask.commit) =
            (self.config.member_id, self.term, applied, floor);
        if let Err(e) = self.peers.transport_mut().send(self.leader_id, &ask) {
            return log::debug!("repair: ask to {:016x} not sent: {e:?}", self.leader_id);
        }
        self.repair.asked = Some(self.leader_id);
        self.repair.asks += 1;
        let line = format!(
            "repair: asked leader {:016x} for an image at an index in [{floor}, {applied}]",
            self.leader_id
        );
        match self.repair.asks {
            1 => log::info!("{line}"),
            _ => log::debug!("{line}"),
        }
    }

    fn propose_repair_check(&mut self, now: Instant) {
        let check = vec![Op::Corrupt(CorruptOp::Check { revision: 0 })];
        match self.proposals.propose_unwaited(&mut self.raft, check) {
            Ok(()) => {
                self.repair.check_wanted = false;
                log::info!("repair: proposed a corruption check of the repaired store");
            }
            Err(e) => {
                log::debug!("repair: check not proposed: {e:?}");
                self.repair.next_try = now + REPAIR_RETRY;
            }
        }
    }

    /// The leader's answer to a member asking for a repair image.
    pub(super) fn answer_repair_ask(&mut self, from: u64, ask: &Message) {
        if self.leader_id != self.config.member_id || self.is_corrupt() {
            return log::debug!("repair ask from {from:016x} ignored: not a sound leader");
        }
        // Only a member the log found corrupt gets an image: an ask from
        // any other costs no stream.
        if !self.state.alarms().is_raised_for(from, AlarmKind::Corrupt) {
            return log::info!("repair ask from {from:016x} ignored: no CORRUPT raised for it");
        }
        let meta = self.raft.storage().wal.snapshot_meta().clone();
        match image_fit(meta.index, ask.commit, ask.index) {
            ImageFit::Fits => self.send_repair_image(from, meta),
            ImageFit::TooOld => {
                let applied = self.state.applied_index();
                log::info!(
                    "repair: {from:016x} holds entries after {} only; snapshot {} is older: \
                     taking one at {applied}",
                    ask.commit,
                    meta.index
                );
                self.snapshots.want(applied);
            }
            ImageFit::TooNew => log::debug!(
                "repair: snapshot {} is past {from:016x}'s applied index {}; it asks again",
                meta.index,
                ask.index
            ),
        }
    }

    fn send_repair_image(&mut self, to: u64, meta: SnapshotMeta) {
        let mut header = Message::new(MessageKind::RepairImage, to);
        (header.from, header.term) = (self.config.member_id, self.term);
        header.snapshot = Some(Snapshot { meta: meta.clone(), data: Vec::new() });
        let payload = self.raft.storage().snaps.open_payload(meta.index, meta.term);
        let started = payload.map_err(|e| e.to_string()).and_then(|payload| {
            let transport = self.peers.transport_mut();
            transport.start_stream(to, &header, Box::new(payload)).map_err(|e| format!("{e:?}"))
        });
        match started {
            Ok(_) => log::info!("repair: streaming the snapshot at {} to {to:016x}", meta.index),
            Err(e) => log::debug!("repair: image for {to:016x} not started: {e}"),
        }
    }

    /// An image received whole from a peer: kept for `follow_corruption`
    /// when it comes from the leader this member asked.
    pub(super) fn receive_repair_image(&mut self, received: Received) {
        if self.repair.asked != Some(received.from) || !self.is_corrupt() {
            return log::info!("repair: image from {:016x} not asked for; dropped", received.from);
        }
        self.repair.staged = Some(received);
    }

    /// Builds the repaired state machine from the image and this member's
    /// log, swaps it in and starts what clears the alarm.
    fn install_repair_image(&mut self, received: Received, now: Instant) -> Result<(), ServeError> {
        let Some(meta) = received.header.snapshot.as_ref().map(|s| s.meta.clone()) else {
            return Ok(());
        };
        let applied = self.state.applied_index();
        let floor = self.raft.storage().wal.first_index().saturating_sub(1);
        if image_fit(meta.index, floor, applied) != ImageFit::Fits {
            log::info!(
                "repair: image at {} no longer fits [{floor}, {applied}]; asking again",
                meta.index
            );
            return Ok(());
        }
        let started = Instant::now();
        let mut state = received.state;
        if let Err(e) = self.replay_own_log(&mut state, meta.index, applied) {
            log::warn!("repair: re-applying entries after {} failed: {e}", meta.index);
            return Ok(());
        }
        // One writer in the snapshot directory, and no image of the store
        // being replaced.
        self.finish_snapshot(true)?;
        self.state = state;
        self.abort_hashes();
        self.snapshots.store_replaced();
        self.follow_members(None);
        (self.repair.swapped_at_index, self.repair.check_wanted) = (applied, true);
        self.repair.next_try = now;
        log::info!(
            "repair: store replaced by the image at index {} from {:016x} with entries {}..={} \
             of this member's log re-applied, in {} ms; a snapshot of it and a check follow",
            meta.index,
            received.from,
            meta.index + 1,
            applied,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Applies entries (after, through] of this member's log to `state`;
    /// their answers and effects were given when they first applied.
    fn replay_own_log(
        &self,
        state: &mut StateMachine,
        after: u64,
        through: u64,
    ) -> Result<(), String> {
        let now_ms = self.lease_clock.now_ms(Instant::now());
        let wal = &self.raft.storage().wal;
        let mut next = after + 1;
        while next <= through {
            let entries = wal
                .entries_in(next, through + 1, REPAIR_REPLAY_BATCH_BYTES)
                .map_err(|e| format!("{e:?}"))?;
            if entries.first().map(|e| e.index) != Some(next) {
                return Err(format!("entry {next} is not in the log"));
            }
            for entry in &entries {
                state.apply(entry, now_ms, self.term);
            }
            next += entries.len() as u64;
        }
        match state.applied_index() == through {
            true => Ok(()),
            false => Err(format!("ended at {}, not {through}", state.applied_index())),
        }
    }
}
