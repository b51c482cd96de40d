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

    /// Sends GOAWAY, lets the writer flush what is queued, and closes the connection. A
    /// peer that does not read can hold this up: bound it with a timeout, after which
    /// dropping the future drops the session (and closes the connection regardless).
    pub async fn close(mut self) {
        {
            let mut st = self.shared.lock();
            send_goaway(&self.shared, &mut st, goaway::OK);
            self.shared.close(&mut st);
        }
        if let Some(writer) = self.tasks.pop() {
            let _ = writer.await;
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

/// One stream: read what the peer sends on it, write to it; `shutdown` half-closes it
/// (FLAG_FIN). Dropping it before both halves are closed resets it.
pub struct Stream {
    id: u32,
    headers: Headers,
    shared: Arc<Shared>,
}

fn io_error(e: SessionError) -> io::Error {
    let kind = match e {
        SessionError::Reset { .. } => io::ErrorKind::ConnectionReset,
        SessionError::WriteAfterClose { .. } => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Answers a stream the peer opened (SYN_REPLY); `fin` also closes our half.
    pub fn send_reply(&self, headers: Headers, fin: bool) -> Result<(), SessionError> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(SessionError::Closed);
        }
        let flags = if fin { FLAG_FIN } else { 0 };
        if let Some(s) = st.streams.get_mut(&self.id) {
            s.sent_fin |= fin;
        }
        self.shared.queue(
            &mut st,
            Out::Headers {
                syn: false,
                stream_id: self.id,
                flags,
                headers,
            },
        );
        Ok(())
    }

    /// Waits for the peer's SYN_REPLY to a stream this side opened.
    pub async fn reply(&self) -> Result<Headers, SessionError> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            let closed = st.closed;
            let Some(s) = st.streams.get_mut(&self.id) else {
                return Poll::Ready(Err(SessionError::Closed));
            };
            if let Some(h) = &s.reply {
                return Poll::Ready(Ok(h.clone()));
            }
            if !s.local {
                return Poll::Ready(Err(SessionError::NoReply { stream_id: self.id }));
            }
            if let Some(status) = s.reset {
                return Poll::Ready(Err(SessionError::Reset {
                    stream_id: self.id,
                    status,
                }));
            }
            if closed {
                return Poll::Ready(Err(SessionError::Closed));
            }
            s.replied = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resets the stream (RST_STREAM with `status`, e.g. [`rst::CANCEL`]).
    pub fn reset(&self, status: u32) {
        let mut st = self.shared.lock();
        reset_stream(&self.shared, &mut st, self.id, status);
    }
}

/// Marks a stream reset and queues the RST_STREAM (once).
fn reset_stream(shared: &Shared, st: &mut State, id: u32, status: u32) {
    let Some(s) = st.streams.get_mut(&id) else {
        return;
    };
    if s.reset.is_some() {
        return;
    }
    s.reset = Some(status);
    s.recv.clear();
    s.recv_len = 0;
    s.wake_all();
    shared.drained.notify_one();
    if !st.closed {
        shared.queue(
            st,
            Out::Frame(Frame::RstStream {
                stream_id: id,
                status,
            }),
        );
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut guard = shared.lock();
        let st = &mut *guard;
        let closed = st.closed;
        let s = match st.live(self.id) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(io_error(e))),
        };
        if s.recv.is_empty() {
            if s.recv_fin {
                return Poll::Ready(Ok(()));
            }
            if closed {
                return Poll::Ready(Err(io_error(SessionError::Closed)));
            }
            s.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        while buf.remaining() > 0 {
            let Some(chunk) = s.recv.front_mut() else {
                break;
            };
            let take = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk.split_to(take));
            if chunk.is_empty() {
                s.recv.pop_front();
            }
            n += take;
        }
        s.recv_len -= n;
        consumed(shared, st, Some(self.id), n);
        shared.drained.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut guard = shared.lock();
        let st = &mut *guard;
        if st.closed {
            return Poll::Ready(Err(io_error(SessionError::Closed)));
        }
        let flow = st.config.peer_flow_control;
        let (conn_window, queued) = (st.conn_send_window, st.out_bytes);
        let s = match st.live(self.id) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(io_error(e))),
        };
        if s.sent_fin {
            return Poll::Ready(Err(io_error(SessionError::WriteAfterClose {
                stream_id: self.id,
            })));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut n = buf.len().min(MAX_DATA_CHUNK);
        if flow {
            let window = s.send_window.min(conn_window);
            if window <= 0 {
                s.writer = Some(cx.waker().clone());
                if conn_window <= 0 {
                    register(&mut st.blocked, cx);
                }
                return Poll::Pending;
            }
            n = n.min(window as usize);
        }
        if queued >= OUT_LIMIT {
            register(&mut st.blocked, cx);
            return Poll::Pending;
        }
        s.send_window -= n as i64;
        st.conn_send_window -= n as i64;
        let data = Bytes::copy_from_slice(&buf[..n]);
        shared.queue(
            st,
            Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data,
            }),
        );
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is queued for the writer task, which flushes after every batch.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Poll::Ready(Err(io_error(SessionError::Closed)));
        }
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io_error(SessionError::Closed)));
        };
        if s.sent_fin || s.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        s.sent_fin = true;
        self.shared.queue(
            &mut st,
            Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }),
        );
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let done = st
            .streams
            .get(&self.id)
            .is_some_and(|s| s.reset.is_some() || (s.sent_fin && s.recv_fin));
        if !done {
            reset_stream(&self.shared, &mut st, self.id, rst::CANCEL);
        }
        st.streams.remove(&self.id);
        self.shared.drained.notify_one();
    }
}

/// The writer task: drains the queue in batches, compressing header blocks in wire order.
async fn write_loop<W: AsyncWrite>(
    shared: Arc<Shared>,
    mut w: tokio::io::WriteHalf<W>,
    mut compressor: Compressor,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let notified = shared.write.notified();
        let (batch, closed) = {
            let mut st = shared.lock();
            (st.out.drain(..).collect::<Vec<_>>(), st.closed)
        };
        if batch.is_empty() {
            if closed {
                break;
            }
            notified.await;
            continue;
        }
        let mut data_bytes = 0;
        let mut failed = false;
        for out in batch {
            let frame = match out {
                Out::Frame(f) => f,
                Out::Headers {
                    syn,
                    stream_id,
                    flags,
                    headers,
                } => match compressor.compress(&headers) {
                    Ok(block) if syn => Frame::syn_stream(stream_id, flags, block),
                    Ok(block) => Frame::SynReply {
                        stream_id,
                        flags,
                        block,
                    },
                    Err(e) => {
                        log::warn!("SPDY stream {stream_id}: {e}");
                        failed = true;
                        break;
                    }
                },
            };
            if let Frame::Data { data, .. } = &frame {
                data_bytes += data.len();
            }
            if let Err(e) = frame.encode(&mut buf) {
                log::warn!("SPDY connection: {e}");
                failed = true;
                break;
            }
        }
        let written = if failed {
            Err(io::Error::other("encoding a frame failed"))
        } else {
            match w.write_all(&buf).await {
                Ok(()) => w.flush().await,
                Err(e) => Err(e),
            }
        };
        buf.clear();
        let mut st = shared.lock();
        st.out_bytes = st.out_bytes.saturating_sub(data_bytes);
        for waker in st.blocked.drain(..) {
            waker.wake();
        }
        shared.written.notify_one();
        if let Err(e) = written {
            log::debug!("SPDY connection: writing: {e}");
            shared.close(&mut st);
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// The reader task: decodes frames and applies them until EOF or a protocol error (which
/// is answered with GOAWAY PROTOCOL_ERROR).
async fn read_loop<R: AsyncRead>(
    shared: Arc<Shared>,
    mut r: tokio::io::ReadHalf<R>,
    mut inflate: Decompressor,
) {
    let max_frame = shared.lock().config.max_frame_len;
    let mut dec = Decoder::new(max_frame);
    let result: Result<(), SessionError> = async {
        loop {
            let written = shared.written.notified();
            let (closed, full) = {
                let st = shared.lock();
                (st.closed, st.out.len() >= OUT_FRAMES_LIMIT)
            };
            if closed {
                return Ok(());
            }
            if full {
                written.await;
                continue;
            }
            match dec.next_frame()? {
                Some(frame) => handle(&shared, &mut inflate, frame).await?,
                None => {
                    let buf = dec.buffer_mut();
                    if buf.capacity() - buf.len() < 4096 {
                        buf.reserve(16 * 1024);
                    }
                    let n = r.read_buf(buf).await.map_err(|source| SessionError::Io {
                        op: "reading",
                        source,
                    })?;
                    if n == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    let mut st = shared.lock();
    if let Err(e) = result {
        log::debug!("{e}");
        if !matches!(e, SessionError::Io { .. }) {
            let status = match e {
                SessionError::Header(HeaderError::Deflate(_)) => goaway::INTERNAL_ERROR,
                _ => goaway::PROTOCOL_ERROR,
            };
            send_goaway(&shared, &mut st, status);
        }
    }
    shared.close(&mut st);
}

/// Applies one frame to the state.
async fn handle(
    shared: &Shared,
    inflate: &mut Decompressor,
    frame: Frame,
) -> Result<(), SessionError> {
    let name = frame.name();
    // Inflate every block first, even of a frame then refused: the zlib context must see
    // them all, in order.
    let headers = match &frame {
        Frame::SynStream { block, .. }
        | Frame::SynReply { block, .. }
        | Frame::Headers { block, .. } => inflate.decompress(block)?,
        _ => Headers::new(),
    };
    match frame {
        Frame::SynStream {
            stream_id, flags, ..
        } => {
            let mut st = shared.lock();
            let peer_parity = match st.role {
                Role::Client => 0,
                Role::Server => 1,
            };
            if stream_id % 2 != peer_parity || stream_id <= st.last_peer_id {
                return Err(SessionError::StreamId {
                    frame: name,
                    stream_id,
                });
            }
            st.last_peer_id = stream_id;
            if st.goaway_sent || st.accept.len() >= st.config.max_pending_accept {
                shared.queue(
                    &mut st,
                    Out::Frame(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    }),
                );
                return Ok(());
            }
            let state = StreamState {
                headers,
                recv_fin: flags & FLAG_FIN != 0,
                sent_fin: flags & frame::FLAG_UNIDIRECTIONAL != 0,
                send_window: st.initial_send_window,
                recv_window: i64::from(st.config.initial_window),
                ..StreamState::default()
            };
            st.streams.insert(stream_id, state);
            st.accept.push_back(stream_id);
            for w in st.acceptors.drain(..) {
                w.wake();
            }
        }
        Frame::SynReply {
            stream_id, flags, ..
        }
        | Frame::Headers {
            stream_id, flags, ..
        } => {
            let mut st = shared.lock();
            let Some(s) = st.streams.get_mut(&stream_id) else {
                return Ok(());
            };
            if name == "SYN_REPLY" {
                if s.reply.is_some() || !s.local {
                    reset_stream(shared, &mut st, stream_id, rst::STREAM_IN_USE);
                    return Ok(());
                }
                s.reply = Some(headers);
            }
            if flags & FLAG_FIN != 0 {
                s.recv_fin = true;
            }
            s.wake_all();
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => return on_data(shared, stream_id, flags, data).await,
        Frame::RstStream { stream_id, status } => {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&stream_id) {
                s.reset.get_or_insert(status);
                s.recv.clear();
                s.recv_len = 0;
                s.wake_all();
            }
        }
        Frame::Settings { entries, .. } => {
            let mut st = shared.lock();
            for e in entries {
                match e.id {
                    settings::INITIAL_WINDOW_SIZE => {
                        let new = i64::from(e.value);
                        if new > MAX_WINDOW {
                            return Err(SessionError::WindowOverflow);
                        }
                        let delta = new - st.initial_send_window;
                        st.initial_send_window = new;
                        for s in st.streams.values_mut() {
                            s.send_window += delta;
                            if let Some(w) = s.writer.take() {
                                w.wake();
                            }
                        }
                    }
                    settings::MAX_CONCURRENT_STREAMS => st.peer_max_streams = Some(e.value),
                    _ => {}
                }
            }
        }
        Frame::Ping { id } => {
            let mut st = shared.lock();
            let ours = match st.role {
                Role::Client => 1,
                Role::Server => 0,
            };
            if id % 2 == ours {
                if let Some(tx) = st.pings.remove(&id) {
                    let _ = tx.send(());
                }
            } else {
                shared.queue(&mut st, Out::Frame(Frame::Ping { id }));
            }
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut st = shared.lock();
            st.goaway_received = Some(status);
            // Streams we opened past the last one the peer took will never be processed.
            let lost: Vec<u32> = st
                .streams
                .iter()
                .filter(|(id, s)| s.local && **id > last_good_stream_id)
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                if let Some(s) = st.streams.get_mut(&id) {
                    s.reset.get_or_insert(rst::REFUSED_STREAM);
                    s.wake_all();
                }
            }
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut st = shared.lock();
            if stream_id == 0 {
                st.conn_send_window += i64::from(delta);
                if st.conn_send_window > MAX_WINDOW {
                    return Err(SessionError::WindowOverflow);
                }
                for w in st.blocked.drain(..) {
                    w.wake();
                }
                for s in st.streams.values_mut() {
                    if let Some(w) = s.writer.take() {
                        w.wake();
                    }
                }
            } else if let Some(s) = st.streams.get_mut(&stream_id) {
                s.send_window += i64::from(delta);
                if s.send_window > MAX_WINDOW {
                    reset_stream(shared, &mut st, stream_id, rst::FLOW_CONTROL_ERROR);
                } else if let Some(w) = s.writer.take() {
                    w.wake();
                }
            }
        }
    }
    Ok(())
}

/// A DATA frame: buffered for the stream's reader, within its window.
async fn on_data(
    shared: &Shared,
    stream_id: u32,
    flags: u8,
    data: Bytes,
) -> Result<(), SessionError> {
    let len = data.len();
    loop {
        let drained = shared.drained.notified();
        {
            let mut guard = shared.lock();
            let st = &mut *guard;
            let window = i64::from(st.config.initial_window);
            let strict = st.config.peer_flow_control;
            if strict && st.conn_recv_window < len as i64 {
                return Err(SessionError::FlowControl);
            }
            let Some(s) = st.streams.get_mut(&stream_id) else {
                // A stream already dropped here: its data is given back to the connection.
                st.conn_recv_window -= len as i64;
                consumed(shared, st, None, len);
                return Ok(());
            };
            if s.reset.is_some() {
                st.conn_recv_window -= len as i64;
                consumed(shared, st, None, len);
                return Ok(());
            }
            if s.recv_fin {
                reset_stream(shared, st, stream_id, rst::STREAM_ALREADY_CLOSED);
                return Ok(());
            }
            if strict && s.recv_window < len as i64 {
                reset_stream(shared, st, stream_id, rst::FLOW_CONTROL_ERROR);
                st.conn_recv_window -= len as i64;
                consumed(shared, st, None, len);
                return Ok(());
            }
            if strict || s.recv_len == 0 || (s.recv_len + len) as i64 <= window {
                s.recv_window -= len as i64;
                s.recv_len += len;
                if len > 0 {
                    s.recv.push_back(data);
                }
                if flags & FLAG_FIN != 0 {
                    s.recv_fin = true;
                }
                if let Some(w) = s.reader.take() {
                    w.wake();
                }
                st.conn_recv_window -= len as i64;
                return Ok(());
            }
            // A peer ignoring windows (Config::kubernetes): hold this frame, and with it the
            // connection, until the stream's reader has made room.
            if st.closed {
                return Ok(());
            }
        }
        drained.await;
    }
}

/// Accounts `n` bytes consumed from `stream` (or discarded, `None`) and queues the
/// WINDOW_UPDATEs due: one per half window consumed, per stream and for the connection.
fn consumed(shared: &Shared, st: &mut State, stream: Option<u32>, n: usize) {
    let half = st.config.initial_window / 2;
    let mut updates = Vec::new();
    if let Some(id) = stream {
        if let Some(s) = st.streams.get_mut(&id) {
            s.recv_unacked += n as u32;
            if s.recv_unacked >= half && !s.recv_fin {
                updates.push((id, s.recv_unacked));
                s.recv_window += i64::from(s.recv_unacked);
                s.recv_unacked = 0;
            }
        }
    }
    st.conn_recv_unacked += n as u32;
    if st.conn_recv_unacked >= DEFAULT_WINDOW / 2 {
        updates.push((0, st.conn_recv_unacked));
        st.conn_recv_window += i64::from(st.conn_recv_unacked);
        st.conn_recv_unacked = 0;
    }
    if !st.closed {
        for (stream_id, delta) in updates {
            shared.queue(st, Out::Frame(Frame::WindowUpdate { stream_id, delta }));
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
