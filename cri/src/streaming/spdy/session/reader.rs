//! The reader task: frames in, applied to the shared state.

use super::*;

/// The reader task: decodes frames and applies them until EOF or a protocol error (which
/// is answered with GOAWAY PROTOCOL_ERROR).
pub(super) async fn read_loop<R: AsyncRead>(
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
                // Closed on this side: read (and drop) what the peer still sends until it
                // closes too. A socket closed with unread bytes is reset, which would
                // discard the last frames we sent before the peer reads them.
                let mut scratch = [0u8; 8192];
                while matches!(r.read(&mut scratch).await, Ok(n) if n > 0) {}
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
                // What came before the reset stays readable, as spdystream delivers it:
                // kubelet's streaming server resets every stream right after writing the
                // exit status (apimachinery's connection.Close).
                s.reset.get_or_insert(status);
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
pub(super) fn consumed(shared: &Shared, st: &mut State, stream: Option<u32>, n: usize) {
    let half = st.config.initial_window / 2;
    let mut updates = Vec::new();
    if let Some(id) = stream {
        if let Some(s) = st.streams.get_mut(&id) {
            s.recv_unacked += n as u32;
            if s.recv_unacked >= half && !s.recv_fin && s.reset.is_none() {
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
