//! A stream's handle: AsyncRead and AsyncWrite over the session's shared state.

use super::*;

/// One stream: read what the peer sends on it, write to it; `shutdown` half-closes it
/// (FLAG_FIN). Dropping it before both halves are closed resets it.
pub struct Stream {
    pub(super) id: u32,
    pub(super) headers: Headers,
    pub(super) shared: Arc<Shared>,
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
pub(super) fn reset_stream(shared: &Shared, st: &mut State, id: u32, status: u32) {
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
        // Data that came before a reset is read first.
        let buffered = st.streams.get(&self.id).is_some_and(|s| !s.recv.is_empty());
        let s = match st.live(self.id) {
            Ok(s) => s,
            Err(_) if buffered => match st.streams.get_mut(&self.id) {
                Some(s) => s,
                None => return Poll::Ready(Err(io_error(SessionError::Closed))),
            },
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
