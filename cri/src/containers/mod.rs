mod checkpoint;
pub mod record;
pub mod seccomp_default;
pub mod service;
pub mod spec;
pub mod streams;
