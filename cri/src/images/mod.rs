//! Images: references, registry I/O, and the content-addressed store of blobs, unpacked
//! layers, image records and container roots.

pub mod reference;
pub mod registry;
pub mod service;
pub mod store;
