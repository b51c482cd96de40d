//! Images: references, registry I/O, and (from the store) content-addressed blobs and
//! unpacked layers.

pub mod reference;
pub mod registry;
