pub mod seccomp_default;
pub mod spec;
