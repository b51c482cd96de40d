//! Syscall-level primitives that know nothing of containers, shared by the layers above:
//! path resolution that never leaves a directory ([`resolve`]), the verified procfs handle
//! ([`procfs`]), descriptor flags ([`fds`]), pidfds ([`pidfd`]) and clone3 with its child
//! guard ([`clone`]). Everything here points
//! down to the kernel only (docs/design.md, "Layers").

pub mod clone;
pub mod fds;
pub mod pidfd;
pub mod procfs;
pub mod resolve;
