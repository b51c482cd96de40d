//! Loading a cgroup device program and attaching it to a v2 cgroup (bpf(2)).

use super::devices::Insn;
use super::CgroupError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-initialised union bpf_attr image of the size we pass; the
    // kernel reads (and for some commands writes) within it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn put_u32(attr: &mut [u8; 128], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads `program` and attaches it to the cgroup directory `dir`.
pub fn attach_device_filter(dir: &Path, program: &[Insn]) -> Result<(), CgroupError> {
    let err = |what: &'static str| {
        move |source: std::io::Error| CgroupError::Bpf {
            what,
            path: dir.to_path_buf(),
            source,
        }
    };
    let license = c"Apache-2.0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
    put_u32(&mut attr, 4, program.len() as u32);
    put_u64(&mut attr, 8, program.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(err("loading the device filter for"))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that only we own.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cgroup = std::fs::File::open(dir).map_err(err("opening"))?;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(err("attaching the device filter to"))?;
    Ok(())
}
