//! Faults: commands killed at random points and damaged state files, and what `delete
//! --force` must clean up after them: no process, mount, cgroup or state entry left.
//!
//! CAPSA_FAULTS_BIN runs the same scenarios against another build (an older capsa, to
//! measure what it left); CAPSA_FAULTS_SEED replays a run; CAPSA_FAULTS_ROUNDS sets the
//! iterations per command (default 150).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests here reap orphans with waitpid(-1), which must not race another test's wait.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> String {
    std::env::var("CAPSA_FAULTS_BIN").unwrap_or_else(|_| BIN.to_string())
}

fn cmd(w: &World, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--root")
        .arg(&w.root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn capsa(w: &World, args: &[&str]) -> Output {
    let mut c = cmd(w, args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.output().expect("running capsa")
}

/// Runs `args` to completion and returns how long it took; it must succeed.
fn timed(w: &World, args: &[&str]) -> Duration {
    let t = Instant::now();
    let st = cmd(w, args).status().unwrap();
    assert!(st.success(), "capsa {args:?}: {st}");
    t.elapsed()
}

/// Starts `args` and SIGKILLs it after `delay` (if it is still running by then).
fn killed_after(w: &World, args: &[&str], delay: Duration) {
    let mut child = cmd(w, args).spawn().unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `args`, SIGKILLing it if it has not finished within `limit`: whether it finished.
fn finishes_within(w: &World, args: &[&str], limit: Duration) -> bool {
    let mut child = cmd(w, args).spawn().unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn status_of(w: &World, id: &str) -> Option<String> {
    let out = capsa(w, &["state", id]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
}

/// xorshift64*: the delays need to be spread, not unpredictable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    /// A delay within the time `d` the command takes (and a little past it).
    fn within(&mut self, d: Duration) -> Duration {
        Duration::from_micros(self.below(d.as_micros() as u64 * 6 / 5 + 1))
    }
}

/// The cgroup directories container `id` could have (every v1 hierarchy, or v2).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut out = vec![base.join("capsa").join(id)];
    for e in std::fs::read_dir(base).unwrap().flatten() {
        out.push(e.path().join("capsa").join(id));
    }
    out.into_iter().filter(|d| d.exists()).collect()
}

/// Processes in container `id`'s cgroup, by /proc/<pid>/cgroup (zombies included until
/// reaped).
fn processes_of(id: &str) -> Vec<i32> {
    let needle = format!("/capsa/{id}\n");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cg.contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// State entries under the root that belong to `id`: its directory, a temporary one of a
/// create, a cgroup claim naming it.
fn state_entries_of(root: &Path, id: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name == id
                || name.starts_with(&format!("@{id}."))
                || std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == id)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// What container `id` left: processes, cgroups, state entries.
fn leftovers(root: &Path, id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let procs = processes_of(id);
    if !procs.is_empty() {
        left.push(format!("processes {procs:?}"));
    }
    for d in cgroup_dirs(id) {
        left.push(format!("cgroup {}", d.display()));
    }
    for s in state_entries_of(root, id) {
        left.push(format!("state entry {s}"));
    }
    left
}

fn wait_empty(id: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        reap_all();
        if processes_of(id).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Create,
    Start,
    Exec,
    Delete,
}

#[test]
fn commands_killed_at_random_points_leave_nothing_delete_force_cannot_clean() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = World::new();
    let b = w.bundle(&["sleep", "1000"]);
    let bundle = b.dir_str().to_string();
    let rounds: usize = std::env::var("CAPSA_FAULTS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let seed = std::env::var("CAPSA_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!(
        "faults: seed {seed} (CAPSA_FAULTS_SEED replays it), binary {}",
        bin()
    );
    let mut rng = Rng(seed);

    // How long each command takes here (the median of three): the kills land within it.
    let mut probes: [Vec<Duration>; 4] = Default::default();
    for _ in 0..3 {
        let probe = w.id("probe");
        probes[0].push(timed(&w, &["create", "--bundle", &bundle, &probe]));
        probes[1].push(timed(&w, &["start", &probe]));
        probes[2].push(timed(&w, &["exec", &probe, "true"]));
        probes[3].push(timed(&w, &["delete", "--force", &probe]));
    }
    reap_all();
    let [t_create, t_start, t_exec, t_delete] = probes.map(|mut t| {
        t.sort();
        t[1]
    });
    eprintln!(
        "faults: create {t_create:?}, start {t_start:?}, exec {t_exec:?}, delete --force {t_delete:?}"
    );

    let started = Instant::now();
    let mut ids: Vec<(Kind, String)> = Vec::new();
    let mut orphans = Vec::new();
    let mut stuck_starts = Vec::new();
    let mut exec_target: Option<String> = None;
    for round in 0..rounds * 4 {
        let kind = [Kind::Create, Kind::Start, Kind::Exec, Kind::Delete][round % 4];
        match kind {
            Kind::Create => {
                let id = w.id("fc");
                killed_after(
                    &w,
                    &["create", "--bundle", &bundle, &id],
                    rng.within(t_create),
                );
                // Unless create handed init over (the container is created), init must die
                // with it: nothing may run that no state can name.
                let status = status_of(&w, &id);
                if status.as_deref() != Some("created") && !wait_empty(&id, Duration::from_secs(10))
                {
                    orphans.push(format!("{id} ({status:?}): {:?}", processes_of(&id)));
                }
                ids.push((kind, id));
            }
            Kind::Start => {
                let id = w.id("fs");
                timed(&w, &["create", "--bundle", &bundle, &id]);
                killed_after(&w, &["start", &id], rng.within(t_start));
                // Still "created" must mean not started yet: a second start then works.
                if status_of(&w, &id).as_deref() == Some("created")
                    && !finishes_within(&w, &["start", &id], Duration::from_secs(20))
                {
                    stuck_starts.push(id.clone());
                }
                ids.push((kind, id));
            }
            Kind::Exec => {
                // A few containers take the killed execs, each a fresh one now and then.
                if exec_target.is_none() || rng.below(8) == 0 {
                    let id = w.id("fe");
                    timed(&w, &["create", "--bundle", &bundle, &id]);
                    timed(&w, &["start", &id]);
                    ids.push((kind, id.clone()));
                    exec_target = Some(id);
                }
                let id = exec_target.clone().unwrap();
                killed_after(&w, &["exec", &id, "true"], rng.within(t_exec));
            }
            Kind::Delete => {
                let id = w.id("fd");
                timed(&w, &["create", "--bundle", &bundle, &id]);
                timed(&w, &["start", &id]);
                killed_after(&w, &["delete", "--force", &id], rng.within(t_delete));
                ids.push((kind, id));
            }
        }
        reap_all();
    }
    let iterations = started.elapsed();

    // Everything gets `delete --force`; then nothing of any container may be left.
    let mut failed_deletes = Vec::new();
    for (_, id) in &ids {
        let out = capsa(&w, &["delete", "--force", id]);
        if !out.status.success() {
            failed_deletes.push(format!("{id}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    reap_all();
    let mut left = Vec::new();
    let mut by_kind = [0usize; 4];
    for (kind, id) in &ids {
        // A process SIGKILLed by delete may take a moment to leave its cgroup.
        wait_empty(id, Duration::from_secs(10));
        let l = leftovers(&w.root, id);
        if !l.is_empty() {
            by_kind[*kind as usize] += 1;
            left.push(format!("{kind:?} {id}: {l:?}"));
        }
    }
    let root_entries: Vec<String> = std::fs::read_dir(&w.root)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(&bundle) || l.contains(w.root.to_str().unwrap()))
        .collect();
    let stray = processes_mentioning(w.root.to_str().unwrap());
    eprintln!(
        "faults: {} iterations ({rounds} per command) in {iterations:?}; {} containers; \
         inits outliving a killed create: {}; containers reading \"created\" after a killed \
         start whose next start hung: {}; containers left behind after delete --force: \
         {} (create {}, start {}, exec {}, delete {}); failed deletes: {}",
        rounds * 4,
        ids.len(),
        orphans.len(),
        stuck_starts.len(),
        left.len(),
        by_kind[0],
        by_kind[1],
        by_kind[2],
        by_kind[3],
        failed_deletes.len()
    );
    assert!(
        orphans.is_empty(),
        "inits outlived their create: {orphans:#?}"
    );
    assert!(
        stuck_starts.is_empty(),
        "started, yet still \"created\": {stuck_starts:?}"
    );
    assert!(
        failed_deletes.is_empty(),
        "delete --force failed: {failed_deletes:#?}"
    );
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(
        root_entries.is_empty(),
        "state root not empty: {root_entries:?}"
    );
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    assert!(stray.is_empty(), "capsa processes left: {stray:?}");
}

/// A running (or paused) container whose state.json is cut short, garbage, or gone: `list` shows it
/// (status unknown), `state` and a plain `delete` refuse it with a clear error, and
/// `delete --force` removes it, its processes and its cgroup.
#[test]
fn a_damaged_state_file_is_listed_and_deleted_by_force() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = World::new();
    let b = w.bundle(&["sleep", "1000"]);
    type Damage = fn(&Path);
    let cut_short: Damage = |p| {
        let text = std::fs::read(p).unwrap();
        std::fs::write(p, &text[..text.len() / 2]).unwrap();
    };
    let damages: [(&str, Damage, bool); 4] = [
        ("cut short", cut_short, false),
        (
            "garbage",
            |p| std::fs::write(p, b"\x00\xffnot json").unwrap(),
            false,
        ),
        ("gone", |p| std::fs::remove_file(p).unwrap(), false),
        // Frozen: delete --force must thaw what it cannot know is paused.
        ("cut short, paused", cut_short, true),
    ];
    for (what, damage, paused) in damages {
        let id = w.id("dmg");
        let pid = w.create(&id, &b);
        w.ok(&["start", &id]);
        if paused {
            w.ok(&["pause", &id]);
        }
        damage(&w.root.join(&id).join("state.json"));

        let list: Value = serde_json::from_str(&w.ok(&["list", "--format", "json"])).unwrap();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == json!(id))
            .unwrap_or_else(|| panic!("{what}: {id} not listed: {list}"));
        assert_eq!(entry["status"], json!("unknown"), "{what}: {entry}");
        let err = w.fails(&["state", &id]);
        assert!(
            err.contains("state.json") || err.contains("does not exist"),
            "{what}: {err}"
        );
        w.fails(&["delete", &id]);
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{what}: a plain delete killed it"
        );

        w.ok(&["delete", "--force", &id]);
        wait_exit(pid);
        reap(pid);
        assert!(!w.root.join(&id).exists(), "{what}: state left");
        assert!(cgroup_dirs(&id).is_empty(), "{what}: cgroup left");
    }
}
