//! The streaming side of CRI: the protocols behind `Exec`, `Attach` and `PortForward` URLs.
//!
//! kubelet proxies a client's upgraded HTTP connection to the runtime's streaming server;
//! on it the client and the runtime speak SPDY/3.1 (module [`spdy`]).

pub mod spdy;
