//! The writer task.

use super::*;

/// The writer task: drains the queue in batches, compressing header blocks in wire order.
pub(super) async fn write_loop<W: AsyncWrite>(
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
