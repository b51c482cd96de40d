//! Image layers and overlay roots: `capsa rootfs unpack/mount/umount/diff`, checked on the
//! real kernel (overlayfs) and from inside a container whose root is the merged view.

mod common;
use common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory that the World's leak check covers (mounts, processes).
fn scratch_dir(w: &mut World, name: &str) -> PathBuf {
    let d = scratch().join(unique(name));
    std::fs::create_dir_all(&d).unwrap();
    w.dirs.push(d.clone());
    d
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Tars the content of `src` (GNU tar, sorted, numeric owners, xattrs).
fn tar_dir(src: &Path, out: &Path) {
    sh(&format!(
        "tar --sort=name --xattrs --xattrs-include='*' --numeric-owner -cf {} -C {} .",
        p(out),
        p(src)
    ));
}

fn is_mounted(target: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p(target)))
}

#[test]
fn whiteouts_opaque_dirs_and_recreated_files_in_a_container_root() {
    let mut w = World::new();
    let d = scratch_dir(&mut w, "ovl");
    // Layer 0: the busybox root. Layer 1 adds files; layer 2 deletes one and makes /keep
    // opaque; layer 3 re-creates the deleted file.
    tar_dir(&setup(), &d.join("l0.tar"));
    sh(&format!(
        "cd {0} && mkdir -p s1/data s1/keep && echo one > s1/data/a && echo b > s1/data/b \
         && echo x > s1/keep/x && mkdir -p s2/data s2/keep && : > s2/data/.wh.a \
         && : > s2/keep/.wh..wh..opq && echo y > s2/keep/y && mkdir -p s3/data \
         && echo new > s3/data/a",
        p(&d)
    ));
    tar_dir(&d.join("s1"), &d.join("l1.tar"));
    tar_dir(&d.join("s2"), &d.join("l2.tar"));
    tar_dir(&d.join("s3"), &d.join("l3.tar"));
    // Compression is detected by content: gzip one layer, zstd another.
    sh(&format!("gzip -n {}", p(&d.join("l1.tar"))));
    sh(&format!("zstd -q --rm {}", p(&d.join("l2.tar"))));
    let layers = [
        ("l0.tar", "l0"),
        ("l1.tar.gz", "l1"),
        ("l2.tar.zst", "l2"),
        ("l3.tar", "l3"),
    ];
    for (file, dir) in layers {
        w.ok(&["rootfs", "unpack", p(&d.join(file)), p(&d.join(dir))]);
    }
    // The whiteout is overlay's 0:0 character device; the opaque dir carries the xattr.
    let wh = std::fs::symlink_metadata(d.join("l2/data/a")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr::get(d.join("l2/keep"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );

    // Without layer 3: /data/a is deleted, /keep shows only the upper layer's content.
    let merged = d.join("merged");
    std::fs::create_dir(&merged).unwrap();
    let lower = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| ["--lower".to_string(), p(&d.join(n)).to_string()])
            .collect()
    };
    let mut args = vec!["rootfs".to_string(), "mount".to_string()];
    args.extend(lower(&["l2", "l1", "l0"]));
    args.push(p(&merged).into());
    w.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!merged.join("data/a").exists(), "the whiteout hides data/a");
    assert!(merged.join("data/b").exists());
    assert!(
        !merged.join("keep/x").exists(),
        "the opaque dir hides keep/x"
    );
    assert!(merged.join("keep/y").exists());
    assert!(
        std::fs::write(merged.join("data/c"), "c").is_err(),
        "no upper: read-only"
    );
    w.ok(&["rootfs", "umount", p(&merged)]);

    // With layer 3 on top and a writable upper: a container runs on the merged root.
    let (upper, work) = (d.join("upper"), d.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let mut args = vec!["rootfs".to_string(), "mount".to_string()];
    args.extend(lower(&["l3", "l2", "l1", "l0"]));
    args.extend([
        "--upper".into(),
        p(&upper).into(),
        "--work".into(),
        p(&work).into(),
    ]);
    args.push(p(&merged).into());
    w.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "cat /data/a; ls /keep; rm /data/b; echo made > /data/new",
    ]);
    let root = p(&merged).to_string();
    b.set(|c| c["root"] = serde_json::json!({"path": root, "readonly": false}));
    let out = w.run_ok(&b);
    assert_eq!(out, "new\ny\n");
    // The container's changes are in the upper layer: a whiteout for b and the new file.
    let wh = std::fs::symlink_metadata(upper.join("data/b")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        std::fs::read_to_string(upper.join("data/new")).unwrap(),
        "made\n"
    );
    // ... and `diff` turns them into a layer with a .wh. entry.
    w.ok(&["rootfs", "diff", p(&upper), p(&d.join("diff.tar"))]);
    let listing = Command::new("tar")
        .args(["-tf", p(&d.join("diff.tar"))])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "data/.wh.b"), "{listing}");
    assert!(listing.lines().any(|l| l == "data/new"), "{listing}");
    w.ok(&["rootfs", "umount", p(&merged)]);
    assert!(!is_mounted(&merged));
}

#[test]
fn long_layer_stacks_mount() {
    let mut w = World::new();
    let d = scratch_dir(&mut w, "ovl-stack");
    let target = d.join("merged");
    std::fs::create_dir(&target).unwrap();
    // 100 layers of long paths overflow one page of mount options as plain paths;
    // 300 layers overflow it even as /proc/self/fd paths (the fsconfig route).
    for n in [100usize, 300] {
        let mut args = vec!["rootfs".to_string(), "mount".to_string()];
        for i in 0..n {
            let l = d.join(format!(
                "a-rather-long-layer-directory-name-to-fill-the-page-{n}-{i:03}"
            ));
            std::fs::create_dir(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), "").unwrap();
            std::fs::write(l.join("top"), format!("{i}")).unwrap();
            args.extend(["--lower".to_string(), p(&l).to_string()]);
        }
        args.push(p(&target).into());
        let out = w.capsa(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "mounting {n} layers: {err}");
        assert!(target.join("f0").exists() && target.join(format!("f{}", n - 1)).exists());
        assert_eq!(
            std::fs::read_to_string(target.join("top")).unwrap(),
            "0",
            "the first --lower is the top layer"
        );
        w.ok(&["rootfs", "umount", p(&target)]);
    }
}

/// One raw ustar header + data, for entries that well-behaved tar writers refuse to make.
fn raw_entry(name: &str, typeflag: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn raw_tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn layers_that_escape_are_refused_and_write_nothing() {
    let mut w = World::new();
    let d = scratch_dir(&mut w, "ovl-evil");
    let outside = d.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host").unwrap();
    let o = p(&outside).to_string();
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "dotdot",
            vec![raw_entry("../outside/pwned", b'0', "", b"x")],
            "../outside/pwned",
        ),
        (
            "absolute",
            vec![raw_entry(&format!("{o}/pwned"), b'0', "", b"x")],
            "escapes the layer",
        ),
        (
            "through-symlink",
            vec![
                raw_entry("link", b'2', &o, b""),
                raw_entry("link/pwned", b'0', "", b"x"),
            ],
            "symlink",
        ),
        (
            "hardlink-out",
            vec![raw_entry("h", b'1', "../outside/secret", b"")],
            "hard link",
        ),
        (
            "hardlink-abs",
            vec![raw_entry("h", b'1', &format!("{o}/secret"), b"")],
            "hard link",
        ),
    ];
    for (name, entries, expect) in cases {
        let layer = d.join(format!("{name}.tar"));
        std::fs::write(&layer, raw_tar(&entries)).unwrap();
        let dir = d.join(name);
        let err = w.fails(&["rootfs", "unpack", p(&layer), p(&dir)]);
        assert!(
            err.contains(p(&layer)) && err.contains(expect),
            "{name}: {err}"
        );
        assert!(!dir.exists(), "{name}: a refused layer leaves no directory");
        let left: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["secret"], "{name} wrote outside the layer");
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host"
        );
        assert_eq!(
            std::fs::metadata(outside.join("secret")).unwrap().nlink(),
            1
        );
    }
}

fn listing(tar: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .args(["-tv", "--numeric-owner", "-f", p(tar)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with(" ./"))
        .map(|l| {
            let l = l.replace(" ./", " ").replace(" link to ./", " link to ");
            let l = l.trim_end_matches('/');
            // A .wh. marker has no inode of its own to carry a time: compare it without one
            // (fields: mode, owner, size, date, time, name).
            let fields: Vec<&str> = l.split_whitespace().collect();
            if l.contains(".wh.") && fields.len() == 6 {
                format!("{} {} {} {}", fields[0], fields[1], fields[2], fields[5])
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn unpack_keeps_metadata_and_diff_round_trips() {
    let mut w = World::new();
    let d = scratch_dir(&mut w, "ovl-rt");
    let src = d.join("src");
    sh(&format!(
        "mkdir -p {0}/etc {0}/opq/sub {0}/dev && cd {0} && echo hi > etc/file && ln etc/file etc/hard \
         && ln -s ../etc/file etc/sym && mkfifo etc/fifo && mknod dev/null0 c 1 3 \
         && chown 1000:1001 etc/file && chmod 4750 etc/file && chmod 0700 opq \
         && : > etc/.wh.gone && : > opq/.wh..wh..opq && echo s > opq/sub/s \
         && touch -d 2001-02-03T04:05:06 etc/sym etc/fifo opq/sub/s",
        p(&src)
    ));
    xattr::set(src.join("opq/sub/s"), "user.capsa", b"kept").unwrap();
    let layer = d.join("layer.tar");
    tar_dir(&src, &layer);
    let digest = {
        let out = Command::new("sha256sum").arg(&layer).output().unwrap();
        format!(
            "sha256:{}",
            String::from_utf8_lossy(&out.stdout)
                .split(' ')
                .next()
                .unwrap()
        )
    };
    // A wrong digest is refused before anything is written.
    let bad = format!("sha256:{}", "0".repeat(64));
    let err = w.fails(&[
        "rootfs",
        "unpack",
        p(&layer),
        p(&d.join("bad")),
        "--digest",
        &bad,
    ]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!d.join("bad").exists());

    let out = d.join("out");
    w.ok(&["rootfs", "unpack", p(&layer), p(&out), "--digest", &digest]);
    let f = std::fs::metadata(out.join("etc/file")).unwrap();
    assert_eq!(
        (f.uid(), f.gid(), f.permissions().mode() & 0o7777),
        (1000, 1001, 0o4750)
    );
    assert_eq!(
        f.ino(),
        std::fs::metadata(out.join("etc/hard")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(out.join("etc/sym")).unwrap(),
        Path::new("../etc/file")
    );
    assert!(std::fs::metadata(out.join("etc/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::metadata(out.join("dev/null0")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    let gone = std::fs::symlink_metadata(out.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    assert!(!out.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr::get(out.join("opq"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert_eq!(
        std::fs::metadata(out.join("opq"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(
        xattr::get(out.join("opq/sub/s"), "user.capsa").unwrap(),
        Some(b"kept".to_vec())
    );
    assert_eq!(
        std::fs::metadata(out.join("opq/sub/s")).unwrap().mtime(),
        981173106
    );

    // Back to a tar: the same entries, owners, modes, times and whiteouts.
    let again = d.join("again.tar");
    w.ok(&["rootfs", "diff", p(&out), p(&again)]);
    assert_eq!(listing(&layer), listing(&again));
    let xattrs = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xf", p(&again), "-C"])
        .arg({
            let x = d.join("x");
            std::fs::create_dir(&x).unwrap();
            x
        })
        .status()
        .unwrap();
    assert!(xattrs.success());
    assert_eq!(
        xattr::get(d.join("x/opq/sub/s"), "user.capsa").unwrap(),
        Some(b"kept".to_vec())
    );
}

#[test]
fn unpack_errors_name_the_layer() {
    let mut w = World::new();
    let d = scratch_dir(&mut w, "ovl-err");
    let err = w.fails(&[
        "rootfs",
        "unpack",
        p(&d.join("missing.tar")),
        p(&d.join("x")),
    ]);
    assert!(
        err.contains("missing.tar") && err.contains("No such file"),
        "{err}"
    );
    std::fs::write(d.join("junk.tar.gz"), [0x1f, 0x8b, 0, 0, 1, 2, 3]).unwrap();
    let err = w.fails(&[
        "rootfs",
        "unpack",
        p(&d.join("junk.tar.gz")),
        p(&d.join("y")),
    ]);
    assert!(err.contains("junk.tar.gz"), "{err}");
    assert!(!d.join("y").exists());
    std::fs::create_dir(d.join("full")).unwrap();
    std::fs::write(d.join("full/f"), "").unwrap();
    std::fs::write(d.join("empty.tar"), raw_tar(&[])).unwrap();
    let err = w.fails(&[
        "rootfs",
        "unpack",
        p(&d.join("empty.tar")),
        p(&d.join("full")),
    ]);
    assert!(err.contains("not an empty directory"), "{err}");
    let err = w.fails(&[
        "rootfs",
        "unpack",
        p(&d.join("empty.tar")),
        p(&d.join("z")),
        "--digest",
        "sha256:xyz",
    ]);
    assert!(err.contains("invalid digest"), "{err}");
    let err = w.fails(&["rootfs", "umount", p(&d)]);
    assert!(err.contains(p(&d)), "{err}");
}
