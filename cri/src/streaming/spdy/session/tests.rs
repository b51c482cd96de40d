//! Sessions against each other, and against a peer written frame by frame.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Wake;
use tokio::io::DuplexStream;

/// The other end, driven by hand: frames in and out, with its own zlib contexts.
struct Peer {
    io: DuplexStream,
    dec: Decoder,
    deflate: Compressor,
    inflate: Decompressor,
}

impl Peer {
    fn new(io: DuplexStream) -> Peer {
        Peer {
            io,
            dec: Decoder::new(frame::MAX_LENGTH),
            deflate: Compressor::new().unwrap(),
            inflate: Decompressor::new(1 << 20),
        }
    }

    async fn send(&mut self, f: Frame) {
        let mut b = BytesMut::new();
        f.encode(&mut b).unwrap();
        self.io.write_all(&b).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return Some(f);
            }
            if self.io.read_buf(self.dec.buffer_mut()).await.unwrap() == 0 {
                return None;
            }
        }
    }

    /// Sends a PING (an id of the server's parity: these tests' sessions are clients when
    /// they need this) and waits for its echo: everything sent before has been applied.
    async fn barrier(&mut self) {
        self.send(Frame::Ping { id: 2 }).await;
        loop {
            match self.recv().await {
                Some(Frame::Ping { id: 2 }) => return,
                Some(_) => {}
                None => panic!("EOF before the PING echo"),
            }
        }
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv_skipping_updates(&mut self) -> Option<Frame> {
        loop {
            match self.recv().await? {
                Frame::WindowUpdate { .. } => {}
                f => return Some(f),
            }
        }
    }

    async fn syn_stream(&mut self, stream_id: u32, headers: &Headers, flags: u8) {
        let block = self.deflate.compress(headers).unwrap();
        self.send(Frame::syn_stream(stream_id, flags, block)).await;
    }

    async fn syn_reply(&mut self, stream_id: u32) {
        let block = self.deflate.compress(&Headers::new()).unwrap();
        self.send(Frame::SynReply {
            stream_id,
            flags: 0,
            block,
        })
        .await;
    }

    /// Reads a SYN_STREAM and returns its id and headers.
    async fn expect_syn(&mut self) -> (u32, Headers) {
        match self.recv().await {
            Some(Frame::SynStream {
                stream_id, block, ..
            }) => (stream_id, self.inflate.decompress(&block).unwrap()),
            f => panic!("expected SYN_STREAM, got {f:?}"),
        }
    }

    /// Reads DATA frames of `stream` until `n` bytes came.
    async fn expect_data(&mut self, stream: u32, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.recv_skipping_updates().await {
                Some(Frame::Data {
                    stream_id, data, ..
                }) if stream_id == stream => got.extend_from_slice(&data),
                f => panic!("expected DATA on {stream}, got {f:?}"),
            }
        }
        assert_eq!(got.len(), n, "exactly {n} bytes");
        got
    }
}

fn pair(role: Role, config: Config) -> (Session, Peer) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Session::new(a, role, config).unwrap(), Peer::new(b))
}

/// A waker that records being woken.
struct Flag(AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn poll_write_once(s: &mut Stream, flag: &Arc<Flag>, buf: &[u8]) -> Poll<io::Result<usize>> {
    let waker = Waker::from(flag.clone());
    Pin::new(s).poll_write(&mut Context::from_waker(&waker), buf)
}

#[tokio::test]
async fn two_sessions_open_reply_exchange_and_half_close() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = Session::new(a, Role::Client, Config::default()).unwrap();
    let server = Session::new(b, Role::Server, Config::default()).unwrap();
    let mut mine = client
        .open(Headers::new().with("streamType", "stdout"))
        .unwrap();
    assert_eq!(mine.id(), 1);
    let theirs = server.accept().await.unwrap();
    assert_eq!(theirs.headers().get("streamtype"), Some("stdout"));
    theirs
        .send_reply(Headers::new().with("ok", "yes"), false)
        .unwrap();
    assert_eq!(mine.reply().await.unwrap().get("ok"), Some("yes"));

    // A megabyte each way, through 64 KiB windows, then FIN both ways.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let (to_server, to_client) = (big.clone(), big.clone());
    let w = tokio::spawn(async move {
        mine.write_all(&to_server).await.unwrap();
        mine.shutdown().await.unwrap();
        let mut back = Vec::new();
        mine.read_to_end(&mut back).await.unwrap();
        back
    });
    let mut got = Vec::new();
    let (mut r, mut wr) = tokio::io::split(theirs);
    let echo = tokio::spawn(async move {
        wr.write_all(&to_client).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    r.read_to_end(&mut got).await.unwrap();
    assert!(got == big, "the server read what the client wrote");
    let back = w.await.unwrap();
    assert!(back == big, "the client read what the server wrote");
    drop(r.unsplit(echo.await.unwrap()));

    // PING both ways; a server's streams are even.
    client.ping().await.unwrap();
    server.ping().await.unwrap();
    assert_eq!(server.open(Headers::new()).unwrap().id(), 2);
    client.close().await;
    server.closed().await;
    assert!(server.accept().await.is_none());
}

#[tokio::test]
async fn a_writer_blocks_at_window_zero_until_window_updates() {
    let (session, mut peer) = pair(Role::Client, Config::default());
    let mut s = session.open(Headers::new()).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.syn_reply(id).await;
    s.write_all(&[7u8; 64 * 1024]).await.unwrap();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    assert!(
        poll_write_once(&mut s, &flag, b"x").is_pending(),
        "window 0"
    );
    peer.expect_data(id, 64 * 1024).await;

    // The stream's window alone is not enough: the connection's is empty too.
    peer.send(Frame::WindowUpdate {
        stream_id: id,
        delta: 10,
    })
    .await;
    peer.barrier().await; // the update has been applied
    assert!(flag.0.load(Ordering::SeqCst), "the writer was woken");
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    assert!(
        poll_write_once(&mut s, &flag, b"x").is_pending(),
        "connection window 0"
    );
    peer.send(Frame::WindowUpdate {
        stream_id: 0,
        delta: 3,
    })
    .await;
    peer.barrier().await;
    assert!(flag.0.load(Ordering::SeqCst), "the writer was woken");
    // Three bytes of connection window: a write of five takes three.
    assert_eq!(s.write(b"abcde").await.unwrap(), 3);
    assert_eq!(peer.expect_data(id, 3).await, b"abc");
}

#[tokio::test]
async fn settings_initial_window_size_resizes_open_streams() {
    let (session, mut peer) = pair(Role::Client, Config::default());
    let mut s = session.open(Headers::new()).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.send(Frame::Settings {
        flags: 0,
        entries: vec![frame::Setting {
            flags: 0,
            id: settings::INITIAL_WINDOW_SIZE,
            value: 1000,
        }],
    })
    .await;
    peer.barrier().await;
    assert_eq!(s.write(&[1u8; 4000]).await.unwrap(), 1000);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    assert!(poll_write_once(&mut s, &flag, b"x").is_pending());
    peer.expect_data(id, 1000).await;
}

#[tokio::test]
async fn reading_gives_window_back_to_the_peer() {
    let (session, mut peer) = pair(Role::Server, Config::default());
    peer.syn_stream(1, &Headers::new(), 0).await;
    let mut s = session.accept().await.unwrap();
    peer.send(Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::from(vec![1u8; 40 * 1024]),
    })
    .await;
    let mut buf = vec![0u8; 40 * 1024];
    s.read_exact(&mut buf).await.unwrap();
    let mut updates = Vec::new();
    while updates.len() < 2 {
        match peer.recv().await.unwrap() {
            Frame::WindowUpdate { stream_id, delta } => updates.push((stream_id, delta)),
            f => panic!("{f:?}"),
        }
    }
    updates.sort();
    assert_eq!(updates, [(0, 40 * 1024), (1, 40 * 1024)]);
}

#[tokio::test]
async fn a_peer_overrunning_a_window_gets_flow_control_error() {
    let config = Config {
        initial_window: 1024,
        ..Config::default()
    };
    let (session, mut peer) = pair(Role::Server, config);
    // The smaller window is announced first.
    match peer.recv().await.unwrap() {
        Frame::Settings { entries, .. } => assert_eq!(
            entries,
            [frame::Setting {
                flags: 0,
                id: settings::INITIAL_WINDOW_SIZE,
                value: 1024
            }]
        ),
        f => panic!("{f:?}"),
    }
    peer.syn_stream(1, &Headers::new(), 0).await;
    let mut s = session.accept().await.unwrap();
    peer.send(Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::from(vec![0u8; 1025]),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: rst::FLOW_CONTROL_ERROR
        })
    );
    let err = s.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn a_peer_ignoring_windows_is_paced_not_reset_in_kubernetes_mode() {
    let (session, mut peer) = pair(Role::Server, Config::kubernetes());
    peer.syn_stream(1, &Headers::new(), 0).await;
    let mut s = session.accept().await.unwrap();
    // 1 MiB in 32 KiB frames, as spdystream writes io.Copy's buffers, never waiting.
    let writer = tokio::spawn(async move {
        for i in 0..32u8 {
            peer.send(Frame::Data {
                stream_id: 1,
                flags: if i == 31 { FLAG_FIN } else { 0 },
                data: Bytes::from(vec![i; 32 * 1024]),
            })
            .await;
        }
        peer
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(got
        .chunks(32 * 1024)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    let mut peer = writer.await.unwrap();
    // Nothing was reset on the way.
    drop(s);
    loop {
        match peer.recv().await.unwrap() {
            Frame::WindowUpdate { .. } => {}
            f => {
                assert_eq!(
                    f,
                    Frame::RstStream {
                        stream_id: 1,
                        status: rst::CANCEL
                    }
                );
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_sender_ignores_windows_in_kubernetes_mode() {
    let (session, mut peer) = pair(Role::Client, Config::kubernetes());
    let mut s = session.open(Headers::new()).unwrap();
    let (id, _) = peer.expect_syn().await;
    let w = tokio::spawn(async move {
        s.write_all(&vec![3u8; 256 * 1024]).await.unwrap();
        s
    });
    peer.expect_data(id, 256 * 1024).await;
    drop(w.await.unwrap());
}

#[tokio::test]
async fn pings_are_echoed_resets_seen_and_drops_reset() {
    let (session, mut peer) = pair(Role::Server, Config::default());
    peer.send(Frame::Ping { id: 5 }).await;
    assert_eq!(peer.recv().await, Some(Frame::Ping { id: 5 }));

    peer.syn_stream(1, &Headers::new().with("a", "b"), 0).await;
    peer.syn_stream(3, &Headers::new(), 0).await;
    let mut one = session.accept().await.unwrap();
    let three = session.accept().await.unwrap();
    assert!(matches!(
        one.reply().await,
        Err(SessionError::NoReply { stream_id: 1 })
    ));
    peer.send(Frame::RstStream {
        stream_id: 1,
        status: rst::CANCEL,
    })
    .await;
    let err = one.read(&mut [0u8; 4]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let err = one.write(b"x").await.unwrap_err();
    assert!(
        err.to_string().contains("stream 1: reset with status 5"),
        "{err}"
    );
    drop(one); // already reset: nothing sent
    drop(three); // half open: reset
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream {
            stream_id: 3,
            status: rst::CANCEL
        })
    );
}

#[tokio::test]
async fn goaway_from_the_peer_stops_new_streams() {
    let (session, mut peer) = pair(Role::Client, Config::default());
    let s = session.open(Headers::new()).unwrap();
    let later = session.open(Headers::new()).unwrap();
    peer.expect_syn().await;
    peer.expect_syn().await;
    peer.send(Frame::GoAway {
        last_good_stream_id: 1,
        status: goaway::OK,
    })
    .await;
    peer.barrier().await;
    assert!(matches!(
        session.open(Headers::new()),
        Err(SessionError::GoneAway { status: 0 })
    ));
    // Stream 3 came after the last one the peer took.
    assert!(matches!(
        later.reply().await,
        Err(SessionError::Reset { stream_id: 3, .. })
    ));
    peer.syn_reply(1).await;
    s.reply().await.unwrap();
}

/// Reads frames until GOAWAY and returns its status; the session must then be over.
async fn expect_goaway(session: &Session, peer: &mut Peer) -> u32 {
    loop {
        match peer.recv().await {
            Some(Frame::GoAway { status, .. }) => break status_then_closed(session, status).await,
            Some(_) => {}
            None => panic!("EOF before GOAWAY"),
        }
    }
}

async fn status_then_closed(session: &Session, status: u32) -> u32 {
    session.closed().await;
    assert!(session.accept().await.is_none());
    status
}

#[tokio::test]
async fn a_hostile_length_ends_the_connection_with_goaway() {
    let (session, mut peer) = pair(Role::Server, Config::default());
    // A SYN_STREAM announcing 16 MiB - 1 of header block (over the 1 MiB limit).
    peer.send_raw(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff, 0, 0, 0, 1])
        .await;
    assert_eq!(
        expect_goaway(&session, &mut peer).await,
        goaway::PROTOCOL_ERROR
    );
}

#[tokio::test]
async fn a_zlib_bomb_in_a_header_block_ends_the_connection() {
    let (session, mut peer) = pair(Role::Server, Config::default());
    let bomb = Headers::new().with("x", &"a".repeat(16 << 20));
    peer.syn_stream(1, &bomb, 0).await;
    assert_eq!(
        expect_goaway(&session, &mut peer).await,
        goaway::PROTOCOL_ERROR
    );
}

#[tokio::test]
async fn a_peer_opening_a_stream_of_our_parity_is_a_protocol_error() {
    let (session, mut peer) = pair(Role::Server, Config::default());
    peer.syn_stream(2, &Headers::new(), 0).await;
    assert_eq!(
        expect_goaway(&session, &mut peer).await,
        goaway::PROTOCOL_ERROR
    );
}

#[test]
fn a_session_outside_a_runtime_is_an_error_not_a_panic() {
    let (a, _b) = tokio::io::duplex(64);
    let err = Session::new(a, Role::Client, Config::default())
        .err()
        .unwrap();
    assert!(matches!(err, SessionError::NoRuntime), "{err}");
}

#[tokio::test]
async fn a_peer_pinging_without_reading_is_not_queued_for_without_end() {
    let (a, b) = tokio::io::duplex(1024);
    let session = Session::new(a, Role::Server, Config::default()).unwrap();
    let (mut rd, mut wr) = tokio::io::split(b);
    const PINGS: u32 = 5000;
    let pinger = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for i in 0..PINGS {
            Frame::Ping { id: 2 * i + 1 }.encode(&mut out).unwrap();
        }
        wr.write_all(&out).await.unwrap();
        wr
    });
    // The reader stops at the limit while nobody reads the echoes...
    while session.shared.lock().out.len() < OUT_FRAMES_LIMIT {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
        assert!(session.shared.lock().out.len() <= OUT_FRAMES_LIMIT);
    }
    assert!(!pinger.is_finished(), "the session stopped reading");
    // ...and every PING is answered once the peer reads.
    let mut dec = Decoder::new(1024);
    let mut echoes = 0;
    while echoes < PINGS {
        match dec.next_frame().unwrap() {
            Some(Frame::Ping { id }) => {
                assert_eq!(id, 2 * echoes + 1);
                echoes += 1;
            }
            Some(f) => panic!("{f:?}"),
            None => assert!(rd.read_buf(dec.buffer_mut()).await.unwrap() > 0),
        }
    }
    drop(pinger.await.unwrap());
}

#[tokio::test]
async fn several_tasks_accept_at_once() {
    let (session, mut peer) = pair(Role::Server, Config::default());
    let session = Arc::new(session);
    let acceptors: Vec<_> = (0..2)
        .map(|_| {
            let session = session.clone();
            tokio::spawn(async move { session.accept().await.map(|s| s.id()) })
        })
        .collect();
    // Both wait before any stream exists.
    while session.shared.lock().acceptors.len() < 2 {
        tokio::task::yield_now().await;
    }
    peer.syn_stream(1, &Headers::new(), 0).await;
    peer.syn_stream(3, &Headers::new(), 0).await;
    let mut ids = Vec::new();
    for a in acceptors {
        ids.push(a.await.unwrap().unwrap());
    }
    ids.sort();
    assert_eq!(ids, [1, 3]);
}

#[tokio::test]
async fn data_before_a_peers_reset_stays_readable() {
    // kubelet's server writes the exit status, then resets every stream.
    let (session, mut peer) = pair(Role::Client, Config::kubernetes());
    let mut s = session.open(Headers::new()).unwrap();
    peer.send(Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::from_static(b"status"),
    })
    .await;
    peer.send(Frame::RstStream {
        stream_id: 1,
        status: rst::CANCEL,
    })
    .await;
    let mut got = [0u8; 6];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"status");
    let err = s.read(&mut [0u8; 4]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}
