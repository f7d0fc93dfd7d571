//! A fault-injecting TCP proxy for peer links, on 127.0.0.1, no root needed.
//!
//! One `Proxy` stands in front of one member's peer port: every member lists
//! the proxy's address as that member's peer URL, so every connection dialed
//! to the member goes through it. On a peer connection the dialer speaks
//! first with a 32-byte hello whose bytes 16..24 name the sending member
//! (`src/transport/wire.rs`); the proxy reads it to learn which directed link
//! (from → this member) the connection carries. Raft messages only flow from
//! dialer to acceptor, so the link A → B is exactly the connections A dials
//! to B's proxy, and each direction of a pair of members is set apart.
//!
//! After the hello the stream is length-prefixed frames (u32 LE length, then
//! that many bytes). The proxy forwards whole frames, so a dropped or
//! blackholed frame leaves the stream well formed, as a lost message would be:
//!
//! - `drop_per_million`: each frame is lost with this probability;
//! - `delay_ms`: each frame is held this long (order is kept);
//! - `blackhole`: every frame is read and thrown away, the connection stays up;
//! - `cut`: the link's open connections are closed (the sender reconnects).
//!
//! The hello is never dropped. One thread per proxy runs a nonblocking loop
//! over its connections; the test changes faults through a shared handle.
//!
//! Under peer TLS the hello and the frames are encrypted, so a proxy made
//! by `start_opaque` reads neither. It learns the sender from the kernel
//! instead: the dialed connection's socket (found by its ports in
//! `/proc/net/tcp`) is an open descriptor of exactly one member process,
//! whose pid the cluster keeps. Nothing on the wire is trusted or needed,
//! and the members run unchanged. The bytes then pass as they come, in
//! chunks, with the same faults where the stream allows them:
//!
//! - `blackhole` swallows every chunk both ways; the connection stays up
//!   until the link is healed, and is closed then (it lost bytes of a TLS
//!   session, which could never be read again);
//! - `drop_per_million`: each chunk, with this probability, resets the
//!   connection: a lost TLS record breaks its session, so the sender must
//!   reconnect, as after a cut;
//! - `delay_ms` and `cut` as above.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::cluster::Pids;
use super::rng::Rng;

/// Bytes of the peer hello (`HELLO_BYTES` of the transport).
const HELLO_BYTES: usize = 32;
/// Where the sender's member id sits in the hello.
const HELLO_FROM: std::ops::Range<usize> = 16..24;
/// A frame longer than this is taken for garbage and the connection closed;
/// well above the transport's largest frame, so real frames always pass.
const FRAME_BYTES_MAX: usize = 64 << 20;
/// The proxy stops reading a connection while this many bytes wait to be
/// sent on, so a delayed or slow link holds at most this much per connection.
const QUEUE_BYTES_MAX: usize = 8 << 20;
/// Open connections per proxy; more are refused (closed at once). A member
/// dials each peer once or twice (messages and snapshot streams).
const CONNECTIONS_MAX: usize = 64;
/// How long the loop sleeps when nothing moved.
const IDLE_SLEEP: Duration = Duration::from_millis(1);
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Faults on one directed link. `Default` is a healthy link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    pub blackhole: bool,
    /// Probability of losing each frame, in parts per million.
    pub drop_per_million: u32,
    pub delay_ms: u64,
}

/// What the test controls, shared with the proxy thread.
#[derive(Debug)]
struct Control {
    /// Faults by sending member index.
    links: Vec<LinkFaults>,
    /// Bumped by `cut`; a connection opened under an older epoch is closed.
    cut_epochs: Vec<u64>,
    /// Member ids by index, to name the sender of a hello.
    member_ids: Vec<u64>,
}

/// How a proxy tells which member dialed a connection.
enum Identify {
    /// From the plaintext hello; frames are forwarded whole.
    Hello,
    /// From the process that owns the dialing socket (`pids[i]` is member
    /// `i`'s); bytes are forwarded as they come.
    SocketOwner(Pids),
}

/// A proxy for the peer port of one member.
pub struct Proxy {
    pub listen_addr: SocketAddr,
    control: Arc<Mutex<Control>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards to `target`, for a
    /// cluster of `members`. Every hello is refused until `set_member_ids`.
    pub fn start(target: SocketAddr, members: usize, seed: u64) -> Proxy {
        Proxy::start_with(target, members, seed, Identify::Hello)
    }

    /// Like `start`, for encrypted peer links: the sender of a connection is
    /// the member whose process (by `pids`) owns the dialing socket.
    pub fn start_opaque(target: SocketAddr, members: usize, seed: u64, pids: Pids) -> Proxy {
        Proxy::start_with(target, members, seed, Identify::SocketOwner(pids))
    }

    fn start_with(target: SocketAddr, members: usize, seed: u64, identify: Identify) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        listener.set_nonblocking(true).unwrap();
        let listen_addr = listener.local_addr().unwrap();
        let control = Arc::new(Mutex::new(Control {
            links: vec![LinkFaults::default(); members],
            cut_epochs: vec![0; members],
            member_ids: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = Forwarder {
            listener,
            target,
            control: control.clone(),
            connections: Vec::new(),
            rng: Rng::new(seed),
            identify,
        };
        let stop_flag = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("proxy-{}", listen_addr.port()))
            .spawn(move || state.run(&stop_flag))
            .unwrap();
        Proxy { listen_addr, control, stop, thread: Some(thread) }
    }

    /// `ids[i]` is the id member `i` puts in its hellos. Invariant: one id
    /// per member of the cluster.
    pub fn set_member_ids(&self, ids: Vec<u64>) {
        let mut control = self.control.lock().unwrap();
        assert_eq!(ids.len(), control.links.len());
        control.member_ids = ids;
    }

    /// Sets the faults of the link from member `from` to this proxy's member.
    pub fn set(&self, from: usize, faults: LinkFaults) {
        self.control.lock().unwrap().links[from] = faults;
    }

    pub fn faults(&self, from: usize) -> LinkFaults {
        self.control.lock().unwrap().links[from]
    }

    /// Closes the open connections of the link from `from`.
    pub fn cut(&self, from: usize) {
        self.control.lock().unwrap().cut_epochs[from] += 1;
    }

    /// Heals every link into this member.
    pub fn heal_all(&self) {
        let mut control = self.control.lock().unwrap();
        control.links.iter_mut().for_each(|l| *l = LinkFaults::default());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One proxied connection. Invariant: `queued_bytes` is the sum of the
/// lengths of `queue`'s units.
struct Connection {
    down: TcpStream,
    up: TcpStream,
    /// Sending member index, once its hello has been read (or, opaque, at
    /// once).
    from: Option<usize>,
    epoch: u64,
    /// Bytes pass as chunks, not frames (under TLS).
    opaque: bool,
    /// Opaque only: bytes were swallowed, so the stream cannot go on.
    tainted: bool,
    /// Bytes read from the dialer, not yet a whole unit (hello or frame).
    partial: Vec<u8>,
    /// Whole units with the instant they may be sent on.
    queue: VecDeque<(Instant, Vec<u8>)>,
    queued_bytes: usize,
    /// Bytes of the queue's head already written upstream.
    head_written: usize,
    /// Bytes from the acceptor (its hello), waiting to go back.
    back: Vec<u8>,
}

struct Forwarder {
    listener: TcpListener,
    target: SocketAddr,
    control: Arc<Mutex<Control>>,
    connections: Vec<Connection>,
    rng: Rng,
    identify: Identify,
}

/// Why a connection ends.
struct Closed;

impl Forwarder {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut moved = self.accept();
            let control = self.control.lock().unwrap();
            let (links, epochs, ids) =
                (control.links.clone(), control.cut_epochs.clone(), control.member_ids.clone());
            drop(control);
            let now = Instant::now();
            let mut i = 0;
            while i < self.connections.len() {
                let conn = &mut self.connections[i];
                let link = LinkView { links: &links, epochs: &epochs, ids: &ids };
                match pump(conn, &link, &mut self.rng, now) {
                    Ok(progress) => {
                        moved |= progress;
                        i += 1;
                    }
                    Err(Closed) => {
                        self.connections.swap_remove(i);
                        moved = true;
                    }
                }
            }
            if !moved {
                thread::sleep(IDLE_SLEEP);
            }
        }
    }

    fn accept(&mut self) -> bool {
        let Ok((down, _)) = self.listener.accept() else { return false };
        if self.connections.len() >= CONNECTIONS_MAX {
            return true;
        }
        let from = match &self.identify {
            Identify::Hello => None,
            Identify::SocketOwner(pids) => match dialing_member(&down, pids) {
                Some(from) => Some(from),
                None => return true, // not a member's connection: closed
            },
        };
        let epoch = from.map_or(0, |from| self.control.lock().unwrap().cut_epochs[from]);
        let Ok(up) = TcpStream::connect_timeout(&self.target, Duration::from_millis(200)) else {
            return true; // the member is down: the dialer sees a closed connection
        };
        for stream in [&down, &up] {
            stream.set_nonblocking(true).unwrap();
            let _ = stream.set_nodelay(true);
        }
        self.connections.push(Connection {
            down,
            up,
            from,
            epoch,
            opaque: from.is_some(),
            tainted: false,
            partial: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            head_written: 0,
            back: Vec::new(),
        });
        true
    }
}

/// The test's settings, copied once per loop turn.
struct LinkView<'a> {
    links: &'a [LinkFaults],
    epochs: &'a [u64],
    ids: &'a [u64],
}

/// Moves what can move on one connection; `Ok(true)` if any byte moved.
fn pump(
    conn: &mut Connection,
    link: &LinkView,
    rng: &mut Rng,
    now: Instant,
) -> Result<bool, Closed> {
    if conn.from.is_some_and(|from| link.epochs[from] != conn.epoch) {
        return Err(Closed);
    }
    let faults = conn.from.map(|from| link.links[from]).unwrap_or_default();
    if conn.tainted && !faults.blackhole {
        return Err(Closed);
    }
    let mut moved = false;
    if conn.queued_bytes < QUEUE_BYTES_MAX {
        moved |= read_some(&mut conn.down, &mut conn.partial)?;
    }
    moved |= match conn.opaque {
        true => pass_chunk(conn, faults, rng, now)?,
        false => split_units(conn, link, faults, rng, now)?,
    };
    moved |= write_released(conn, now)?;
    let before = conn.back.len();
    read_some(&mut conn.up, &mut conn.back)?;
    if faults.blackhole {
        conn.tainted |= conn.opaque && !conn.back.is_empty();
        conn.back.clear();
    }
    moved |= conn.back.len() != before;
    moved |= write_buffer(&mut conn.down, &mut conn.back)?;
    Ok(moved)
}

/// Reads what is available into `buffer`; `Err` on end of stream or error.
fn read_some(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<bool, Closed> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    match stream.read(&mut chunk) {
        Ok(0) => Err(Closed),
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
            Ok(false)
        }
        Err(_) => Err(Closed),
    }
}

/// Cuts whole units off `partial` and queues, delays or drops each.
fn split_units(
    conn: &mut Connection,
    link: &LinkView,
    mut faults: LinkFaults,
    rng: &mut Rng,
    now: Instant,
) -> Result<bool, Closed> {
    let mut moved = false;
    loop {
        let unit_bytes = match conn.from {
            None if conn.partial.len() >= HELLO_BYTES => HELLO_BYTES,
            None => return Ok(moved),
            Some(_) => match frame_length(&conn.partial)? {
                Some(n) => n,
                None => return Ok(moved),
            },
        };
        let unit: Vec<u8> = conn.partial.drain(..unit_bytes).collect();
        moved = true;
        if conn.from.is_none() {
            let from = sender(&unit, link.ids).ok_or(Closed)?;
            conn.from = Some(from);
            conn.epoch = link.epochs[from];
            faults = link.links[from];
            push(conn, now, unit); // the hello always passes
            continue;
        }
        let dropped = faults.drop_per_million > 0
            && rng.below(1_000_000) < u64::from(faults.drop_per_million);
        if faults.blackhole || dropped {
            continue;
        }
        push(conn, now + Duration::from_millis(faults.delay_ms), unit);
    }
}

/// Opaque: what was read so far goes on as one chunk, is swallowed, or
/// resets the connection (see the module doc).
fn pass_chunk(
    conn: &mut Connection,
    faults: LinkFaults,
    rng: &mut Rng,
    now: Instant,
) -> Result<bool, Closed> {
    if conn.partial.is_empty() {
        return Ok(false);
    }
    let chunk = std::mem::take(&mut conn.partial);
    if faults.blackhole {
        conn.tainted = true;
        return Ok(true);
    }
    if faults.drop_per_million > 0 && rng.below(1_000_000) < u64::from(faults.drop_per_million) {
        return Err(Closed);
    }
    push(conn, now + Duration::from_millis(faults.delay_ms), chunk);
    Ok(true)
}

/// The index of the member whose process owns the socket that dialed
/// `down`: the socket whose local and remote ends are `down`'s remote and
/// local ones, found in `/proc/net/tcp`, then among each member's open
/// descriptors.
fn dialing_member(down: &TcpStream, pids: &Pids) -> Option<usize> {
    let (dialer, proxy) = (down.peer_addr().ok()?, down.local_addr().ok()?);
    let inode = socket_inode(dialer, proxy)?;
    let wanted = format!("socket:[{inode}]");
    let pids = pids.lock().unwrap().clone();
    pids.iter().position(|pid| {
        let Some(pid) = pid else { return false };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == &*wanted)
        })
    })
}

/// The inode of the IPv4 socket from `local` to `remote`, as the kernel
/// lists it in `/proc/net/tcp` (addresses in hex, the address's bytes as
/// a little-endian u32, the port big-endian).
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => {
            Some(format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()))
        }
        SocketAddr::V6(_) => None,
    };
    let (local, remote) = (hex(local)?, hex(remote)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// Length of the frame at the start of `bytes` with its prefix, once whole.
fn frame_length(bytes: &[u8]) -> Result<Option<usize>, Closed> {
    let Some(prefix) = bytes.get(..4) else { return Ok(None) };
    let length = u32::from_le_bytes(prefix.try_into().unwrap()) as usize;
    if length == 0 || length > FRAME_BYTES_MAX {
        return Err(Closed);
    }
    Ok((bytes.len() >= 4 + length).then_some(4 + length))
}

/// The index of the member whose id the hello carries.
fn sender(hello: &[u8], ids: &[u64]) -> Option<usize> {
    let from = u64::from_le_bytes(hello[HELLO_FROM].try_into().unwrap());
    ids.iter().position(|&id| id == from)
}

fn push(conn: &mut Connection, release: Instant, unit: Vec<u8>) {
    conn.queued_bytes += unit.len();
    conn.queue.push_back((release, unit));
}

/// Writes queued units whose time has come, in order.
fn write_released(conn: &mut Connection, now: Instant) -> Result<bool, Closed> {
    let mut moved = false;
    while let Some((release, unit)) = conn.queue.front() {
        if *release > now {
            break;
        }
        match conn.up.write(&unit[conn.head_written..]) {
            Ok(n) => {
                moved = true;
                conn.head_written += n;
                if conn.head_written == unit.len() {
                    conn.queued_bytes -= unit.len();
                    conn.head_written = 0;
                    conn.queue.pop_front();
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return Err(Closed),
        }
    }
    Ok(moved)
}

fn write_buffer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<bool, Closed> {
    if buffer.is_empty() {
        return Ok(false);
    }
    match stream.write(buffer) {
        Ok(n) => {
            buffer.drain(..n);
            Ok(n > 0)
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(_) => Err(Closed),
    }
}
