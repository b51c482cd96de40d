//! capsa-cri: a Kubernetes CRI v1 server on top of the capsa library.
pub mod cni;
