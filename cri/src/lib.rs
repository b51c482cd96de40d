//! capsa-cri: a Kubernetes CRI v1 server on top of the capsa library.
//!
//! kubelet → CRI v1 gRPC on a unix socket → [`daemon::Daemon`] → the capsa library. The
//! binary (`main.rs`) only parses flags, merges them over the configuration file and calls
//! [`daemon::serve`].
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cni;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod events;
pub mod exec;
pub mod images;
pub mod logger;
pub mod metrics;
pub mod monitor;
pub mod pods;
pub mod sandbox;
pub mod service;
pub mod socket;
pub mod stats;
pub mod store;
pub mod streaming;
