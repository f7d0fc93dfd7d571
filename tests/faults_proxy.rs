//! The peer-link proxy alone, with plain sockets standing in for members:
//! a "dialer" sends a hello naming its member and then length-prefixed
//! frames; a listener behind the proxy is the member. The opaque proxy of
//! TLS links knows the dialer by its process: this test's own.

mod faults;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::proxy::{LinkFaults, Proxy};

const IDS: [u64; 3] = [0x11, 0x22, 0x33];

struct Link {
    dialer: TcpStream,
    member: TcpStream,
}

/// Member `to` listens behind a proxy; member `from` dials through it.
fn setup(seed: u64) -> (Proxy, TcpListener) {
    let member = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(member.local_addr().unwrap(), IDS.len(), seed);
    proxy.set_member_ids(IDS.to_vec());
    (proxy, member)
}

fn dial(proxy: &Proxy, member: &TcpListener, from: usize) -> Link {
    let mut dialer = TcpStream::connect(proxy.listen_addr).unwrap();
    let mut hello = [0u8; 32];
    hello[..4].copy_from_slice(b"EMBP");
    hello[16..24].copy_from_slice(&IDS[from].to_le_bytes());
    dialer.write_all(&hello).unwrap();
    let (mut accepted, _) = member.accept().unwrap();
    accepted.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 32];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(got, hello, "the hello passes unchanged");
    accepted.write_all(b"reply-hello").unwrap();
    dialer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = [0u8; 11];
    dialer.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"reply-hello");
    Link { dialer, member: accepted }
}

fn frame(n: u32) -> Vec<u8> {
    let mut out = 5u32.to_le_bytes().to_vec();
    out.push(1);
    out.extend_from_slice(&n.to_le_bytes());
    out
}

fn send_frames(link: &mut Link, numbers: std::ops::Range<u32>) {
    for n in numbers {
        link.dialer.write_all(&frame(n)).unwrap();
    }
}

/// Frame numbers that arrive within `wait`.
fn received(link: &mut Link, wait: Duration) -> Vec<u32> {
    link.member.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let deadline = Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match link.member.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    bytes.chunks(9).map(|f| u32::from_le_bytes(f[5..9].try_into().unwrap())).collect()
}

#[test]
fn a_healthy_link_forwards_every_frame_in_order() {
    let (proxy, member) = setup(1);
    let mut link = dial(&proxy, &member, 0);
    send_frames(&mut link, 0..500);
    assert_eq!(received(&mut link, Duration::from_millis(500)), (0..500).collect::<Vec<_>>());
}

#[test]
fn a_blackholed_link_loses_frames_until_healed_and_other_links_are_untouched() {
    let (proxy, member) = setup(2);
    let mut cut_off = dial(&proxy, &member, 0);
    let mut other = dial(&proxy, &member, 1);
    proxy.set(0, LinkFaults { blackhole: true, ..LinkFaults::default() });
    send_frames(&mut cut_off, 0..10);
    send_frames(&mut other, 0..10);
    assert_eq!(received(&mut other, Duration::from_millis(300)), (0..10).collect::<Vec<_>>());
    assert_eq!(received(&mut cut_off, Duration::from_millis(300)), Vec::<u32>::new());
    proxy.heal_all();
    send_frames(&mut cut_off, 10..20);
    assert_eq!(received(&mut cut_off, Duration::from_millis(300)), (10..20).collect::<Vec<_>>());
}

#[test]
fn a_lossy_link_drops_some_frames_and_keeps_the_order_of_the_rest() {
    let (proxy, member) = setup(3);
    let mut link = dial(&proxy, &member, 2);
    proxy.set(2, LinkFaults { drop_per_million: 300_000, ..LinkFaults::default() });
    send_frames(&mut link, 0..1000);
    let got = received(&mut link, Duration::from_millis(500));
    assert!(got.len() > 500 && got.len() < 900, "{} of 1000 arrived", got.len());
    assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept");
}

#[test]
fn a_slow_link_delays_each_frame() {
    let (proxy, member) = setup(4);
    let mut link = dial(&proxy, &member, 0);
    proxy.set(0, LinkFaults { delay_ms: 400, ..LinkFaults::default() });
    send_frames(&mut link, 0..5);
    // Nothing yet well before the delay passes; everything soon after.
    assert_eq!(received(&mut link, Duration::from_millis(150)), Vec::<u32>::new());
    assert_eq!(received(&mut link, Duration::from_millis(1000)), (0..5).collect::<Vec<_>>());
}

#[test]
fn a_cut_closes_the_link_and_a_new_connection_works() {
    let (proxy, member) = setup(5);
    let mut link = dial(&proxy, &member, 1);
    proxy.cut(1);
    link.member.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(link.member.read(&mut byte).unwrap(), 0, "the member sees the connection end");
    let mut again = dial(&proxy, &member, 1);
    send_frames(&mut again, 0..3);
    assert_eq!(received(&mut again, Duration::from_millis(300)), vec![0, 1, 2]);
}

#[test]
fn an_unknown_sender_or_garbage_length_is_closed() {
    let (proxy, member) = setup(6);
    let mut stranger = TcpStream::connect(proxy.listen_addr).unwrap();
    stranger.write_all(&[0xff; 32]).unwrap();
    let (mut accepted, _) = member.accept().unwrap();
    accepted.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = Vec::new();
    let _ = accepted.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing from an unknown member is forwarded");
    let mut link = dial(&proxy, &member, 0);
    link.dialer.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut tail = Vec::new();
    let _ = link.member.read_to_end(&mut tail);
    assert!(tail.is_empty());
}

/// What `stream` reads within `wait`: the bytes, and whether it ended.
fn read_for(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let deadline = Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (bytes, true),
        }
    }
    (bytes, false)
}

#[test]
fn an_opaque_proxy_knows_the_dialer_by_its_process_and_closes_a_stream_it_broke() {
    let member = TcpListener::bind("127.0.0.1:0").unwrap();
    // This process is member 1; member 0 is not running.
    let pids = Arc::new(Mutex::new(vec![None, Some(std::process::id())]));
    let proxy = Proxy::start_opaque(member.local_addr().unwrap(), 2, 7, pids.clone());
    let mut dialer = TcpStream::connect(proxy.listen_addr).unwrap();
    let (mut accepted, _) = member.accept().unwrap();
    dialer.write_all(b"no hello, any bytes").unwrap();
    let (got, ended) = read_for(&mut accepted, Duration::from_millis(300));
    assert_eq!((got.as_slice(), ended), (b"no hello, any bytes".as_slice(), false));

    // Blackholed from member 0: nothing changes for member 1's link.
    proxy.set(0, LinkFaults { blackhole: true, ..LinkFaults::default() });
    dialer.write_all(b"still").unwrap();
    assert_eq!(read_for(&mut accepted, Duration::from_millis(300)), (b"still".to_vec(), false));
    // Blackholed from member 1: bytes vanish, and healing closes the
    // connection, whose stream lost bytes.
    proxy.set(1, LinkFaults { blackhole: true, ..LinkFaults::default() });
    std::thread::sleep(Duration::from_millis(50));
    dialer.write_all(b"lost").unwrap();
    assert_eq!(read_for(&mut accepted, Duration::from_millis(300)), (Vec::new(), false));
    proxy.heal_all();
    assert_eq!(read_for(&mut accepted, Duration::from_secs(5)), (Vec::new(), true));

    // A connection no member's process dialed is closed before the member
    // sees it.
    *pids.lock().unwrap() = vec![None, None];
    let mut stranger = TcpStream::connect(proxy.listen_addr).unwrap();
    assert!(read_for(&mut stranger, Duration::from_secs(5)).1, "the stranger is closed");
    member.set_nonblocking(true).unwrap();
    assert!(member.accept().is_err(), "the member never saw the stranger");
}
