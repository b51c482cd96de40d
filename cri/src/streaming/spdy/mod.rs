//! SPDY/3.1, the multiplexing protocol Kubernetes' streaming clients speak to a runtime
//! after `Upgrade: SPDY/3.1` (exec, attach and port-forward).
//!
//! Layers, bottom up:
//! - [`frame`]: the nine frame types, encoded and decoded (a streaming decoder with a
//!   length limit; unknown control frames skipped);
//! - [`headers`]: name/value blocks, zlib with SPDY/3's dictionary, one context per
//!   direction, a size limit on inflation;
//! - [`session`]: streams over any tokio byte stream, for a client or a server: opening and
//!   accepting streams, flow control, half-close, resets, PING and GOAWAY;
//! - [`upgrade`]: the HTTP/1.1 handshake that turns a request into a SPDY connection, with
//!   Kubernetes' `X-Stream-Protocol-Version` negotiation.

pub mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;
pub mod upgrade;

pub use frame::{Frame, FrameError};
pub use headers::{HeaderError, Headers};
pub use session::{Config, Role, Session, SessionError, Stream};
