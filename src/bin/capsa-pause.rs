//! capsa-pause: the infra process of a pod (docs/design.md, "Pods").
//!
//! It holds the pod's namespaces open and does nothing else: it blocks SIGINT, SIGTERM and
//! SIGCHLD and waits for them with rt_sigtimedwait. SIGINT/SIGTERM end it with status 0;
//! SIGCHLD makes it reap every exited child, which matters when it is pid 1 of a shared pid
//! namespace and inherits the orphans of the pod's containers.
//!
//! Its first step makes it non-dumpable (execve made it dumpable again): a process of the
//! pod that shares its pid namespace cannot open its /proc/1/exe, fd or mem (the binary it
//! runs is a read-only bind or sealed copy besides, see capsa's pod::infra). It also names
//! itself `capsa-pause`: executed from a descriptor, its name would otherwise be the
//! descriptor's number.
//!
//! No std, no libc, no allocator, no heap: a few hundred bytes of code, statically linked
//! (see build.rs), so its resident set is a handful of pages. Blocked signals are delivered
//! to a pid-namespace init even though it installs no handler (the kernel only drops
//! unhandled signals to an init when they are not blocked).
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
#![no_main]

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const WAIT4: usize = 61;
    pub const PRCTL: usize = 157;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const EXIT_GROUP: usize = 231;

    /// # Safety
    /// A raw system call: the arguments must be valid for syscall `n`.
    pub unsafe fn call4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the x86_64 syscall ABI: number in rax, arguments in rdi rsi rdx r10,
        // rcx and r11 clobbered.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n as isize => ret,
                in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret
    }

    // The kernel enters with rsp 16-byte aligned; a Rust function expects the alignment of
    // a call site, so _start calls into Rust rather than being a Rust function.
    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "xor ebp, ebp",
        "and rsp, -16",
        "call {main}",
        "ud2",
        main = sym super::pause_main,
    );
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const RT_SIGPROCMASK: usize = 135;
    pub const WAIT4: usize = 260;
    pub const PRCTL: usize = 167;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const EXIT_GROUP: usize = 94;

    /// # Safety
    /// A raw system call: the arguments must be valid for syscall `n`.
    pub unsafe fn call4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the aarch64 syscall ABI: number in x8, arguments and result in x0..x3.
        unsafe {
            core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret,
                in("x1") b, in("x2") c, in("x3") d, options(nostack));
        }
        ret
    }

    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "mov x29, xzr",
        "mov x30, xzr",
        "bl {main}",
        "udf #0",
        main = sym super::pause_main,
    );
}

const SIGINT: usize = 2;
const SIGTERM: usize = 15;
const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;
const SIGSET_SIZE: usize = 8;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_NAME: usize = 15;

fn exit(code: usize) -> ! {
    // SAFETY: exit_group takes a status and never returns.
    unsafe { sys::call4(sys::EXIT_GROUP, code, 0, 0, 0) };
    loop {
        core::hint::spin_loop(); // not reached: exit_group does not return
    }
}

extern "C" fn pause_main() -> ! {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes only our own dumpable flag.
    if unsafe { sys::call4(sys::PRCTL, PR_SET_DUMPABLE, 0, 0, 0) } < 0 {
        exit(3);
    }
    let name = b"capsa-pause\0";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { sys::call4(sys::PRCTL, PR_SET_NAME, name.as_ptr() as usize, 0, 0) };
    let set: u64 = (1 << (SIGINT - 1)) | (1 << (SIGTERM - 1)) | (1 << (SIGCHLD - 1));
    let set_ptr = &set as *const u64 as usize;
    // SAFETY: rt_sigprocmask reads one sigset from a valid pointer.
    if unsafe { sys::call4(sys::RT_SIGPROCMASK, SIG_BLOCK, set_ptr, 0, SIGSET_SIZE) } < 0 {
        exit(1);
    }
    loop {
        // SAFETY: rt_sigtimedwait reads the set; no info struct, no timeout (wait forever).
        let sig = unsafe { sys::call4(sys::RT_SIGTIMEDWAIT, set_ptr, 0, 0, SIGSET_SIZE) };
        match sig as usize {
            SIGINT | SIGTERM => exit(0),
            // SAFETY: wait4 for any child, no status or rusage pointers.
            SIGCHLD => while unsafe { sys::call4(sys::WAIT4, usize::MAX, 0, WNOHANG, 0) } > 0 {},
            _ => {}
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(2)
}
