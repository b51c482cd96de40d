//! The streaming side of CRI: the server behind `Exec`, `Attach` and `PortForward` URLs.
//!
//! kubelet proxies a client's upgraded HTTP connection to the runtime's streaming server
//! ([`server`]); on it the client and the runtime speak SPDY/3.1 ([`spdy`]) or a WebSocket
//! channel protocol ([`websocket`]), carrying an exec or attach session
//! ([`remotecommand`]) or port-forwarded connections ([`portforward`]). What the server
//! needs of the runtime is the [`backend::Backend`] trait.

pub mod backend;
pub mod idle;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tokens;
pub mod websocket;

pub use backend::{Backend, BackendError, ExecIo};
pub use server::{StreamingServer, TlsFiles};

/// Why one streaming connection ended early (logged at debug level: a client's problem).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("streaming: {op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("streaming: the client sent no complete HTTP head in time")]
    HeadTimeout,
    #[error("streaming: no such request: {0}")]
    UnknownToken(String),
    #[error("streaming: a port-forward over WebSocket (only SPDY is served)")]
    WebSocketPortForward,
    #[error("streaming: the client did not open its streams in time")]
    StreamTimeout,
    #[error("streaming: the client went away")]
    ClientGone,
    #[error("streaming: nothing moved on the connection for {0:?} (the idle timeout)")]
    Idle(std::time::Duration),
    #[error(transparent)]
    Upgrade(#[from] spdy::upgrade::UpgradeError),
    #[error(transparent)]
    Handshake(#[from] websocket::HandshakeError),
    #[error(transparent)]
    Spdy(#[from] spdy::SessionError),
    #[error("streaming: the runtime")]
    Backend(#[from] BackendError),
}
