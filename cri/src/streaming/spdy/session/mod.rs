//! A SPDY/3.1 session over any tokio byte stream, for either end.
//!
//! ```text
//!   Session::new(io) ──┬── reader task: bytes → Decoder → frames → State (+ inflate headers)
//!                      └── writer task: State.out → deflate headers → frames → bytes
//!   Session::open / accept ─→ Stream (AsyncRead + AsyncWrite) ←→ State.streams[id]
//! ```
//!
//! All shared state sits behind one mutex; the tasks and the stream handles never hold it
//! across an await. Header compression happens in the writer task, so the zlib context sees
//! blocks in wire order. A client opens odd stream ids and pings with odd ids, a server even
//! ones (SPDY/3 draft, sections 2.3.2 and 2.6.5).
//!
//! Flow control (SPDY/3.1): each stream and the connection start with a 64 KiB window in
//! each direction; a reader's consumption is acknowledged with WINDOW_UPDATE once half a
//! window is consumed, and SETTINGS_INITIAL_WINDOW_SIZE from the peer resizes the send
//! windows of every stream. [`Config::kubernetes`] describes the one deliberate exception.
//!
//! What a peer can make this side hold is bounded: a frame's length and a header block's
//! inflated size ([`Config`]), streams not yet accepted, a window of data per stream, 256 KiB
//! of outgoing data and 1024 outgoing frames (past which the reader stops reading).
//!
//! Dropping the [`Session`] ends the connection (its tasks are aborted, the byte stream
//! closed); dropping a [`Stream`] that is not closed both ways resets it (RST_STREAM CANCEL).

use super::frame::{self, goaway, rst, settings, Decoder, Frame, FrameError, FLAG_FIN};
use super::headers::{Compressor, Decompressor, HeaderError, Headers};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

mod reader;
mod stream;
mod writer;

use reader::{consumed, read_loop};
use stream::reset_stream;
pub use stream::Stream;
use writer::write_loop;

/// The window every stream and the connection start with (SPDY/3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// The largest DATA frame this session sends.
const MAX_DATA_CHUNK: usize = 16 * 1024;
/// Bytes queued for the writer task beyond which stream writes wait.
const OUT_LIMIT: usize = 256 * 1024;
/// Frames queued for the writer task beyond which the reader task stops reading: a peer
/// that sends PINGs (or streams to refuse) without reading the answers must not grow the
/// queue without end.
const OUT_FRAMES_LIMIT: usize = 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;

/// Which end of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids (the side that sent the HTTP upgrade request).
    Client,
    /// Opens even stream ids.
    Server,
}

/// Limits and behaviour of a session.
#[derive(Debug, Clone)]
pub struct Config {
    /// The receive window of each stream; announced with SETTINGS when not the default.
    pub initial_window: u32,
    /// Frames with a longer payload end the connection (GOAWAY PROTOCOL_ERROR).
    pub max_frame_len: usize,
    /// Header blocks inflating to more end the connection.
    pub max_header_block: usize,
    /// Streams the peer opened that were not accepted yet; more are refused.
    pub max_pending_accept: usize,
    /// Whether the peer keeps to flow control (see [`Config::kubernetes`]).
    pub peer_flow_control: bool,
}

impl Default for Config {
    /// SPDY/3.1 as the draft writes it: send windows are honoured, a peer overrunning a
    /// receive window gets RST_STREAM FLOW_CONTROL_ERROR.
    fn default() -> Config {
        Config {
            initial_window: DEFAULT_WINDOW,
            max_frame_len: 1024 * 1024,
            max_header_block: 256 * 1024,
            max_pending_accept: 128,
            peer_flow_control: true,
        }
    }
}

impl Config {
    /// For a peer built on Go's spdystream, which kubelet, containerd and Kubernetes'
    /// client tools use: it neither sends WINDOW_UPDATE nor reads ours (nor SETTINGS), so
    /// a sender honouring windows would stall after 64 KiB. With this config the session
    /// sends without waiting for windows (TCP paces it, as between two spdystream ends),
    /// and when the peer overruns a stream's receive window the session stops reading the
    /// connection until that stream's reader catches up, instead of resetting the stream:
    /// memory stays bounded by the window, at the cost of head-of-line blocking, which is
    /// what spdystream itself does. So every stream that may receive data must be read
    /// concurrently (as Kubernetes' clients do): one left unread stalls the others.
    pub fn kubernetes() -> Config {
        Config {
            peer_flow_control: false,
            ..Config::default()
        }
    }
}

/// A session-level failure.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("SPDY connection: {op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("SPDY connection: a bad frame")]
    Frame(#[from] FrameError),
    #[error("SPDY connection: a bad header block")]
    Header(#[from] HeaderError),
    #[error("SPDY connection: {frame} for stream {stream_id}, which the peer may not open")]
    StreamId { frame: &'static str, stream_id: u32 },
    #[error("SPDY connection: the peer sent GOAWAY with status {status}")]
    GoneAway { status: u32 },
    #[error("SPDY connection: closed")]
    Closed,
    #[error("SPDY connection: a session needs a tokio runtime to run its tasks on")]
    NoRuntime,
    #[error("SPDY session config: initial_window {value} is outside 1..=2147483647")]
    BadWindow { value: u32 },
    #[error("SPDY stream {stream_id}: opened by the peer, it gets no SYN_REPLY")]
    NoReply { stream_id: u32 },
    #[error("SPDY connection: stream ids are exhausted")]
    StreamIdsExhausted,
    #[error("SPDY connection: the peer allows at most {max} concurrent streams")]
    TooManyStreams { max: u32 },
    #[error("SPDY connection: the peer sent past the connection's receive window")]
    FlowControl,
    #[error("SPDY connection: a window update takes the window past 2^31-1")]
    WindowOverflow,
    #[error("SPDY stream {stream_id}: reset with status {status}")]
    Reset { stream_id: u32, status: u32 },
    #[error("SPDY stream {stream_id}: written after it was closed")]
    WriteAfterClose { stream_id: u32 },
}

/// A frame waiting for the writer task; header blocks are compressed there.
enum Out {
    Frame(Frame),
    /// SYN_STREAM (`syn`) or SYN_REPLY.
    Headers {
        syn: bool,
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
}

#[derive(Default)]
struct StreamState {
    headers: Headers,
    recv: VecDeque<Bytes>,
    recv_len: usize,
    recv_fin: bool,
    sent_fin: bool,
    reset: Option<u32>,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
    reply: Option<Headers>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    replied: Option<Waker>,
    local: bool,
}

impl StreamState {
    fn wake_all(&mut self) {
        for w in [self.reader.take(), self.writer.take(), self.replied.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

struct State {
    role: Role,
    config: Config,
    next_id: u32,
    next_ping: u32,
    last_peer_id: u32,
    streams: HashMap<u32, StreamState>,
    accept: VecDeque<u32>,
    /// Every task waiting in accept (several may).
    acceptors: Vec<Waker>,
    out: VecDeque<Out>,
    out_bytes: usize,
    blocked: Vec<Waker>,
    conn_send_window: i64,
    conn_recv_window: i64,
    conn_recv_unacked: u32,
    initial_send_window: i64,
    peer_max_streams: Option<u32>,
    pings: HashMap<u32, oneshot::Sender<()>>,
    goaway_sent: bool,
    goaway_received: Option<u32>,
    /// Set when the connection is over: nothing more is read or queued.
    closed: bool,
}

/// Adds the task's waker to `list` unless it is there already (a task polled again and
/// again while it waits must not grow the list).
fn register(list: &mut Vec<Waker>, cx: &Context<'_>) {
    if !list.iter().any(|w| w.will_wake(cx.waker())) {
        list.push(cx.waker().clone());
    }
}

impl State {
    /// Stream `id` while it is known here and not reset.
    fn live(&mut self, id: u32) -> Result<&mut StreamState, SessionError> {
        let s = self.streams.get_mut(&id).ok_or(SessionError::Closed)?;
        match s.reset {
            Some(status) => Err(SessionError::Reset {
                stream_id: id,
                status,
            }),
            None => Ok(s),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task: frames queued, or the connection closed.
    write: Notify,
    /// Wakes the reader task waiting for a stream's reader to drain its buffer.
    drained: Notify,
    /// Wakes the reader task waiting for the writer to shorten the queue.
    written: Notify,
    /// Notified once the connection is over.
    done: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the connection: keep going with what is there.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, st: &mut State, out: Out) {
        if let Out::Frame(Frame::Data { data, .. }) = &out {
            st.out_bytes += data.len();
        }
        st.out.push_back(out);
        self.write.notify_one();
    }

    /// Ends the connection: every waiting party wakes and sees it closed.
    fn close(&self, st: &mut State) {
        if st.closed {
            return;
        }
        st.closed = true;
        for s in st.streams.values_mut() {
            s.wake_all();
        }
        for w in st.blocked.drain(..) {
            w.wake();
        }
        for w in st.acceptors.drain(..) {
            w.wake();
        }
        st.pings.clear();
        self.write.notify_one();
        self.drained.notify_one();
        self.written.notify_one();
        self.done.notify_waiters();
    }
}

/// One SPDY connection. See the module documentation.
pub struct Session {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Starts a session on `io` (a connection after the HTTP upgrade), its two tasks on
    /// the current tokio runtime.
    pub fn new<T>(io: T, role: Role, config: Config) -> Result<Session, SessionError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        if config.initial_window == 0 || i64::from(config.initial_window) > MAX_WINDOW {
            return Err(SessionError::BadWindow {
                value: config.initial_window,
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SessionError::NoRuntime)?;
        let compressor = Compressor::new()?;
        let decompressor = Decompressor::new(config.max_header_block);
        let (first_id, first_ping) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        let mut st = State {
            role,
            next_id: first_id,
            next_ping: first_ping,
            last_peer_id: 0,
            streams: HashMap::new(),
            accept: VecDeque::new(),
            acceptors: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            blocked: Vec::new(),
            conn_send_window: i64::from(DEFAULT_WINDOW),
            conn_recv_window: i64::from(DEFAULT_WINDOW),
            conn_recv_unacked: 0,
            initial_send_window: i64::from(DEFAULT_WINDOW),
            peer_max_streams: None,
            pings: HashMap::new(),
            goaway_sent: false,
            goaway_received: None,
            closed: false,
            config: config.clone(),
        };
        if config.initial_window != DEFAULT_WINDOW {
            st.out.push_back(Out::Frame(Frame::Settings {
                flags: 0,
                entries: vec![frame::Setting {
                    flags: 0,
                    id: settings::INITIAL_WINDOW_SIZE,
                    value: config.initial_window,
                }],
            }));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            write: Notify::new(),
            drained: Notify::new(),
            written: Notify::new(),
            done: Notify::new(),
        });
        let (r, w) = tokio::io::split(io);
        let tasks = vec![
            runtime.spawn(read_loop(shared.clone(), r, decompressor)),
            runtime.spawn(write_loop(shared.clone(), w, compressor)),
        ];
        Ok(Session { shared, tasks })
    }

    /// Opens a stream (SYN_STREAM with `headers`); the peer's SYN_REPLY can be awaited
    /// with [`Stream::reply`].
    pub fn open(&self, headers: Headers) -> Result<Stream, SessionError> {
        let mut st = self.shared.lock();
        if st.closed || st.goaway_sent {
            return Err(SessionError::Closed);
        }
        if let Some(status) = st.goaway_received {
            return Err(SessionError::GoneAway { status });
        }
        if let Some(max) = st.peer_max_streams {
            let open = st.streams.values().filter(|s| s.local).count();
            if open >= max as usize {
                return Err(SessionError::TooManyStreams { max });
            }
        }
        let id = st.next_id;
        if id > 0x7fff_ffff {
            return Err(SessionError::StreamIdsExhausted);
        }
        st.next_id += 2;
        let state = StreamState {
            headers: headers.clone(),
            send_window: st.initial_send_window,
            recv_window: i64::from(st.config.initial_window),
            local: true,
            ..StreamState::default()
        };
        st.streams.insert(id, state);
        self.shared.queue(
            &mut st,
            Out::Headers {
                syn: true,
                stream_id: id,
                flags: 0,
                headers: headers.clone(),
            },
        );
        Ok(Stream {
            id,
            headers,
            shared: self.shared.clone(),
        })
    }

    /// The next stream the peer opened; `None` once the connection is over.
    pub async fn accept(&self) -> Option<Stream> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            while let Some(id) = st.accept.pop_front() {
                if let Some(s) = st.streams.get(&id) {
                    return Poll::Ready(Some(Stream {
                        id,
                        headers: s.headers.clone(),
                        shared: self.shared.clone(),
                    }));
                }
            }
            if st.closed {
                return Poll::Ready(None);
            }
            register(&mut st.acceptors, cx);
            Poll::Pending
        })
        .await
    }

    /// Sends a PING and waits for the peer's echo.
    pub async fn ping(&self) -> Result<(), SessionError> {
        let rx = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(SessionError::Closed);
            }
            let id = st.next_ping;
            st.next_ping = if id >= 0x7fff_fffd { id & 1 } else { id } + 2;
            let (tx, rx) = oneshot::channel();
            st.pings.insert(id, tx);
            self.shared.queue(&mut st, Out::Frame(Frame::Ping { id }));
            rx
        };
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// Sends GOAWAY (status OK): the peer may open no more streams, and neither may we;
    /// streams already open carry on.
    pub fn goaway(&self) {
        let mut st = self.shared.lock();
        send_goaway(&self.shared, &mut st, goaway::OK);
    }

    /// Waits until the connection is over (peer closed, error, or [`Session::close`]).
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.done.notified();
            if self.shared.lock().closed {
                return;
            }
            notified.await;
        }
    }

    /// Sends GOAWAY, lets the writer flush what is queued, closes our half of the
    /// connection, and waits for the peer to close its half (reading what it still sends,
    /// so that the close is not a reset). A peer that does not read, or does not close, can
    /// hold this up: bound it with a timeout, after which dropping the future drops the
    /// session (and closes the connection regardless).
    pub async fn close(mut self) {
        {
            let mut st = self.shared.lock();
            send_goaway(&self.shared, &mut st, goaway::OK);
            self.shared.close(&mut st);
        }
        while let Some(task) = self.tasks.pop() {
            let _ = task.await;
        }
    }
}

fn send_goaway(shared: &Shared, st: &mut State, status: u32) {
    if st.goaway_sent || st.closed {
        return;
    }
    st.goaway_sent = true;
    let last = st.last_peer_id;
    shared.queue(
        st,
        Out::Frame(Frame::GoAway {
            last_good_stream_id: last,
            status,
        }),
    );
}

impl Drop for Session {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            self.shared.close(&mut st);
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests;
