//! Port-forward scenarios shared by the tests of our streaming server and containerd's: a
//! TCP server in the pod's network namespace, and many requests through one session, each
//! sending and receiving at once, checked by hash both ways.

use super::stream_client::PortForward;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// `len` bytes no two seeds give alike (xorshift, eight bytes a step).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// What the pod's server received: (seed, hash of the bytes) per connection, sorted.
pub type Received = JoinHandle<Vec<(u64, Vec<u8>)>>;

/// The pod's server, listening on 127.0.0.1 in `netns` (here when `None`): on each of
/// `connections` connections it reads an 8-byte seed, then takes `size` bytes while sending
/// `payload(2 * seed, size)`. Returns its port.
pub fn pod_server(netns: Option<&Path>, connections: u64, size: usize) -> (u16, Received) {
    let listener = super::in_netns(netns, || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let task = tokio::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..connections {
            let (conn, _) = listener.accept().await.unwrap();
            handlers.push(tokio::spawn(async move {
                let (mut r, mut w) = conn.into_split();
                let seed = r.read_u64().await.unwrap();
                let send = async move { w.write_all(&payload(2 * seed, size)).await.map(|_| w) };
                let recv = async move {
                    let mut got = vec![0u8; size];
                    r.read_exact(&mut got).await.map(|_| sha(&got))
                };
                let (w, got) = tokio::join!(send, recv);
                drop(w.unwrap());
                (seed, got.unwrap())
            }));
        }
        let mut received = Vec::new();
        for h in handlers {
            received.push(h.await.unwrap());
        }
        received.sort();
        received
    });
    (port, task)
}

/// `connections` requests at once on `pf` to `port`, seeds 1..=connections, each sending
/// `payload(seed, size)` while checking it receives `payload(2 * seed, size)` and an empty
/// error stream; then checks what the server got. Returns the time the transfers took.
pub async fn transfers(
    pf: &PortForward,
    port: u16,
    connections: u64,
    size: usize,
    received: Received,
) -> Duration {
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for seed in 1..=connections {
        let session = pf.session.clone();
        requests.spawn(async move {
            let (error, data) =
                super::stream_client::stream_pair(&session, port, seed as u32).await;
            let (mut rd, mut wr) = tokio::io::split(data);
            let send = async move {
                wr.write_u64(seed).await.unwrap();
                wr.write_all(&payload(seed, size)).await.unwrap();
                wr
            };
            let recv = async move {
                let mut got = Vec::with_capacity(size);
                rd.read_to_end(&mut got).await.unwrap();
                (rd, got)
            };
            let (mut wr, (rd, got)) = tokio::join!(send, recv);
            assert_eq!(got.len(), size, "bytes from the pod on request {seed}");
            assert!(
                got == payload(2 * seed, size),
                "what the pod sent on request {seed}"
            );
            // Half-closed only now: containerd ends a request a second after either
            // direction does.
            wr.shutdown().await.unwrap();
            let message = super::stream_client::error_message(error).await;
            assert_eq!(message, "", "error stream of request {seed}");
            drop(rd.unsplit(wr));
        });
    }
    tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(r) = requests.join_next().await {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    })
    .await
    .expect("the transfers finish");
    let elapsed = started.elapsed();
    let want: Vec<(u64, Vec<u8>)> = (1..=connections)
        .map(|seed| (seed, sha(&payload(seed, size))))
        .collect();
    assert!(received.await.unwrap() == want, "what the pod received");
    elapsed
}
