//! The library called from a multithreaded program, as capsa-cri and every tokio daemon
//! call it: a clone copies only the calling thread, so without care a lock another thread
//! held at that instant (malloc's above all) deadlocks the container's setup. Here 8 tokio
//! worker threads allocate without pause while 200 containers are created, started and
//! deleted 8 at a time through the library; the whole run is bounded, so a hang fails.

mod common;
use capsa::{CreateOptions, Runtime, Status};
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTAINERS: usize = 200;
const AT_A_TIME: usize = 8;

/// Create, start, wait for `true` to end, delete: one container's life through the API.
fn one_container(runtime: &Runtime, id: &str, bundle: &std::path::Path) -> capsa::Result<()> {
    let c = runtime.create(id, &CreateOptions::new(bundle))?;
    c.start()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while runtime.load(id)?.status() != Status::Stopped {
        if Instant::now() > deadline {
            panic!("container {id} did not stop");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    runtime.load(id)?.delete(true)
}

/// Reaps the inits re-parented to this process (a child subreaper, see common::setup).
fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

#[test]
fn containers_from_a_busy_tokio_runtime_never_hang() {
    // One malloc arena for every thread (as a program under MALLOC_ARENA_MAX=1 has): with
    // per-thread arenas the creating thread rarely meets a lock held elsewhere, and a test
    // that could not fail would prove nothing. M_ARENA_MAX is -8 in glibc's malloc.h.
    // SAFETY: mallopt before any other thread exists.
    assert_eq!(
        unsafe { libc::mallopt(-8, 1) },
        1,
        "mallopt(M_ARENA_MAX, 1)"
    );
    let mut w = World::new();
    // One read-only bundle serves every container.
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["root"]["readonly"] = json!(true));
    let ids: Vec<String> = (0..CONTAINERS).map(|_| w.id("mt")).collect();
    let runtime = Arc::new(Runtime::new(&w.root));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let result = rt.block_on(async {
        // 8 workers allocating and freeing without pause: malloc's locks are always held by
        // someone when a clone happens.
        let mut allocators = Vec::new();
        for seed in 0..8usize {
            let stop = stop.clone();
            allocators.push(tokio::spawn(async move {
                let mut n = seed;
                let mut kept: Vec<Vec<u8>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        n = n
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        kept.push(vec![n as u8; (n >> 40) % 65536 + 1]);
                        if kept.len() > 64 {
                            kept.swap_remove((n >> 20) % kept.len());
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        let work = async {
            for chunk in ids.chunks(AT_A_TIME) {
                let mut tasks = Vec::new();
                for id in chunk {
                    let (runtime, id, bundle, done) =
                        (runtime.clone(), id.clone(), b.dir.clone(), done.clone());
                    tasks.push(tokio::task::spawn_blocking(move || {
                        one_container(&runtime, &id, &bundle)
                            .map(|()| done.fetch_add(1, Ordering::SeqCst))
                            .map_err(|e| format!("{id}: {e:#}"))
                    }));
                }
                for t in tasks {
                    t.await.unwrap()?;
                }
                reap_orphans();
            }
            Ok::<(), String>(())
        };
        let outcome = tokio::time::timeout(Duration::from_secs(300), work).await;
        stop.store(true, Ordering::Relaxed);
        for a in allocators {
            let _ = a.await;
        }
        outcome
    });
    reap_orphans();
    match result {
        Err(_) => panic!(
            "hung: {} of {CONTAINERS} containers done in 300 s",
            done.load(Ordering::SeqCst)
        ),
        Ok(Err(e)) => panic!("{e}"),
        Ok(Ok(())) => {}
    }
    assert_eq!(done.load(Ordering::SeqCst), CONTAINERS);
}
