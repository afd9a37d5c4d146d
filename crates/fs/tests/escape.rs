//! The escape battery: every way out of a prefix we know of, each refused by the kernel's
//! resolution beneath the prefix's directory handle, and never a byte of the secret read.

mod common;

use common::{Fixture, SECRET};
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_audit::Audit;
use strata_fs::{ExportRoots, FsService, HandleLimits};
use strata_proto::methods::fs::{ListParams, StatParams};
use strata_proto::ErrorCode;

/// Lay out a prefix full of traps:
/// ```text
/// data/file.txt            "inside"
/// data/sub/inner.txt       "inner"
/// data/sub/up -> ../file.txt                      stays inside
/// data/link_in -> file.txt                        stays inside
/// data/chain_in1 -> chain_in2 -> sub/inner.txt    stays inside
/// data/link_abs_in -> <data>/file.txt             absolute: refused even though inside
/// data/esc_rel -> ../../outside/secret
/// data/esc_abs -> <tmp>/outside/secret
/// data/esc_dir -> ../../outside
/// data/chain1 -> chain2 -> sub/esc -> ../../../outside/secret
/// data/proc_abs -> /proc/self/root<tmp>/outside/secret
/// data/proc_rel -> ../../../../../../../../proc/self/root/etc/passwd
/// data/loop1 -> loop2 -> loop1
/// ```
fn trap_fixture() -> Fixture {
    let f = Fixture::new();
    let p = f.prefix();
    f.write("file.txt", b"inside");
    f.write("sub/inner.txt", b"inner");
    symlink("../file.txt", p.join("sub/up")).unwrap();
    symlink("file.txt", p.join("link_in")).unwrap();
    symlink("chain_in2", p.join("chain_in1")).unwrap();
    symlink("sub/inner.txt", p.join("chain_in2")).unwrap();
    symlink(p.join("file.txt"), p.join("link_abs_in")).unwrap();
    symlink("../../outside/secret", p.join("esc_rel")).unwrap();
    symlink(f.base.join("outside/secret"), p.join("esc_abs")).unwrap();
    symlink("../../outside", p.join("esc_dir")).unwrap();
    symlink("chain2", p.join("chain1")).unwrap();
    symlink("sub/esc", p.join("chain2")).unwrap();
    symlink("../../../outside/secret", p.join("sub/esc")).unwrap();
    let via_proc = format!("/proc/self/root{}", f.base.join("outside/secret").display());
    symlink(via_proc, p.join("proc_abs")).unwrap();
    symlink(
        "../../../../../../../../proc/self/root/etc/passwd",
        p.join("proc_rel"),
    )
    .unwrap();
    symlink("loop2", p.join("loop1")).unwrap();
    symlink("loop1", p.join("loop2")).unwrap();
    f
}

#[test]
fn symlinks_that_stay_inside_work() {
    let f = trap_fixture();
    let c = f.caller();
    for (path, want) in [
        ("file.txt", &b"inside"[..]),
        ("./file.txt", b"inside"),
        ("sub//inner.txt", b"inner"),
        ("link_in", b"inside"),
        ("sub/up", b"inside"),
        ("chain_in1", b"inner"),
    ] {
        assert_eq!(f.slurp(&c, path).unwrap(), want, "{path}");
    }
}

/// Every case: (path, expected code). None of them may open anything.
const ESCAPES: &[(&str, ErrorCode)] = &[
    // Lexical: refused before the kernel is asked.
    ("/etc/passwd", ErrorCode::PermissionDenied),
    ("/", ErrorCode::PermissionDenied),
    ("..", ErrorCode::PermissionDenied),
    ("../outside/secret", ErrorCode::PermissionDenied),
    ("../../outside/secret", ErrorCode::PermissionDenied),
    ("sub/../../outside/secret", ErrorCode::PermissionDenied),
    ("sub/..", ErrorCode::PermissionDenied),
    // Symlinks out: refused by RESOLVE_BENEATH.
    ("esc_rel", ErrorCode::PermissionDenied),
    ("esc_abs", ErrorCode::PermissionDenied),
    ("esc_dir/secret", ErrorCode::PermissionDenied),
    ("chain1", ErrorCode::PermissionDenied),
    ("chain2", ErrorCode::PermissionDenied),
    ("sub/esc", ErrorCode::PermissionDenied),
    ("proc_abs", ErrorCode::PermissionDenied),
    ("proc_rel", ErrorCode::PermissionDenied),
    // Absolute symlinks are refused even when they point inside: the kernel resolves
    // beneath the directory handle and cannot know where "/" would lead.
    ("link_abs_in", ErrorCode::PermissionDenied),
    ("loop1", ErrorCode::PermissionDenied),
    // Malformed.
    ("file.txt\0", ErrorCode::InvalidArgument),
    ("", ErrorCode::InvalidArgument),
    // Not a file.
    ("sub", ErrorCode::InvalidArgument),
    (".", ErrorCode::InvalidArgument),
    ("missing", ErrorCode::NotFound),
    ("file.txt/x", ErrorCode::NotFound),
];

#[test]
fn every_escape_is_refused_by_open() {
    let f = trap_fixture();
    let c = f.caller();
    for (path, want) in ESCAPES {
        assert_eq!(f.open(&c, path), Err(*want), "open {path:?}");
    }
    assert!(f.fs.handles().is_empty());
}

#[test]
fn every_escape_is_refused_by_stat_and_list() {
    let f = trap_fixture();
    let c = f.caller();
    for path in [
        "esc_rel", "esc_abs", "esc_dir", "chain1", "proc_abs", "proc_rel", "/etc", "..",
    ] {
        let stat = f.fs.stat(&c, &StatParams { path: path.into() });
        assert_eq!(
            stat.map_err(|e| e.code()).err(),
            Some(ErrorCode::PermissionDenied),
            "stat {path}"
        );
        let list = f.fs.list(&c, &list_params(path), usize::MAX);
        assert_eq!(
            list.map_err(|e| e.code()).err(),
            Some(ErrorCode::PermissionDenied),
            "list {path}"
        );
    }
}

#[test]
fn long_paths_and_long_names_are_invalid() {
    let f = trap_fixture();
    let c = f.caller();
    assert_eq!(
        f.open(&c, &"a/".repeat(3000)),
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        f.open(&c, &"n".repeat(300)),
        Err(ErrorCode::InvalidArgument)
    );
}

#[test]
fn listing_shows_links_without_following_them() {
    let f = trap_fixture();
    let c = f.caller();
    let page = f.fs.list(&c, &list_params(""), usize::MAX).unwrap();
    let esc = page.entries.iter().find(|e| e.name == "esc_dir").unwrap();
    // The link itself: not a directory, its size the length of its target text.
    assert!(!esc.is_dir);
    assert_eq!(esc.size, "../../outside".len() as u64);
    assert!(page.entries.iter().all(|e| e.name != "secret"));
}

#[test]
fn prefixes_outside_the_roots_or_missing_are_refused() {
    let f = trap_fixture();
    // A prefix outside every export root.
    let outside = f.caller_for(Some(&f.base.join("outside")));
    assert_eq!(f.open(&outside, "secret"), Err(ErrorCode::PermissionDenied));
    let root_prefix = f.caller_for(Some(std::path::Path::new("/")));
    assert_eq!(
        f.open(&root_prefix, "etc/passwd"),
        Err(ErrorCode::PermissionDenied)
    );
    // A prefix inside a root that is a symlink out of it.
    symlink("../outside", f.base.join("root/evil")).unwrap();
    let evil = f.caller_for(Some(&f.base.join("root/evil")));
    assert_eq!(f.open(&evil, "secret"), Err(ErrorCode::PermissionDenied));
    // A token without any prefix: deny by default.
    let none = f.caller_for(None);
    assert_eq!(f.open(&none, "file.txt"), Err(ErrorCode::PermissionDenied));
    let listed = f.fs.list(&none, &list_params(""), usize::MAX);
    assert_eq!(listed.unwrap_err().code(), ErrorCode::PermissionDenied);
    // A prefix that does not exist (yet).
    let missing = f.caller_for(Some(&f.base.join("root/nothing")));
    assert_eq!(f.open(&missing, "x"), Err(ErrorCode::NotFound));
}

#[test]
fn magic_links_are_refused_even_inside_an_exported_proc() {
    // Export "/" so that a prefix of /proc/self is allowed; its magic links still are not.
    let tmp = tempfile::tempdir().unwrap();
    let fs = FsService::new(
        ExportRoots::open(&["/".into()]).unwrap(),
        HandleLimits::default(),
        Audit::open(tmp.path(), "fs").unwrap(),
        Arc::new(common::Revoked::default()),
    );
    let clock = strata_cap::ManualClock::new(strata_cap::Timestamp::now());
    let caller = strata_fs::Caller::new(
        Arc::new(common::claims(
            Some(std::path::Path::new("/proc/self")),
            &clock,
            &[],
        )),
        None,
    );
    for path in ["root/etc/passwd", "cwd", "exe", "fd/0", "root"] {
        let opened = fs.open(&caller, &common::open_params(path));
        assert_eq!(
            opened.map_err(|e| e.code()).err(),
            Some(ErrorCode::PermissionDenied),
            "{path}"
        );
    }
}

#[test]
fn fifos_sockets_and_devices_are_refused_without_blocking() {
    let f = trap_fixture();
    let c = f.caller();
    let p = f.prefix();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(p.join("sock")).unwrap();
    let mut special = vec!["fifo", "sock"];
    if strata_testkit::is_root() {
        // /dev/null's numbers: character device 1:3.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o644),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        special.push("null");
    }
    for path in special {
        let started = Instant::now();
        assert_eq!(f.open(&c, path), Err(ErrorCode::PermissionDenied), "{path}");
        assert!(started.elapsed() < Duration::from_secs(1), "{path} blocked");
        // stat describes it without opening it.
        let stat = f.fs.stat(&c, &StatParams { path: path.into() }).unwrap();
        assert!(!stat.is_dir);
    }
}

/// A directory inside the prefix is swapped, atomically and as fast as possible, with a
/// symlink to a directory outside holding a file of the same name. Opens run all along;
/// every one must either fail or read the inside file.
#[test]
fn a_directory_swapped_for_an_outward_symlink_never_leaks() {
    const ATTEMPTS: usize = 10_000;
    let f = Fixture::new();
    let p = f.prefix();
    f.write("race/f", b"inside");
    std::fs::write(f.base.join("outside/f"), SECRET).unwrap();
    symlink("../../outside", p.join("swap")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, p) = (stop.clone(), p.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    p.join("race"),
                    rustix::fs::CWD,
                    p.join("swap"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let c = f.caller();
    let (mut inside, mut refused, mut escapes) = (0, 0, 0);
    for _ in 0..ATTEMPTS {
        match f.slurp(&c, "race/f") {
            Ok(bytes) if bytes == b"inside" => inside += 1,
            Ok(_) => escapes += 1,
            Err(ErrorCode::PermissionDenied | ErrorCode::NotFound | ErrorCode::Unavailable) => {
                refused += 1
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{ATTEMPTS} opens during {swaps} swaps: {inside} inside, {refused} refused");
    assert_eq!(escapes, 0);
    assert!(swaps > 1000, "the swapper barely ran ({swaps} swaps)");
    assert!(inside > 0 && refused > 0, "the race was not exercised");
}

#[test]
fn denied_requests_leave_no_handle_and_opens_are_audited() {
    let f = trap_fixture();
    let c = f.caller();
    f.slurp(&c, "file.txt").unwrap();
    f.open(&c, "esc_rel").unwrap_err();
    let lines = f.audit_lines();
    let opens: Vec<_> = lines.iter().filter(|l| l["event"] == "fs.open").collect();
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0]["path"], "file.txt");
    assert_eq!(opens[0]["cap_id"], c.claims.jti.to_string());
    assert!(f.fs.handles().is_empty());
}

fn list_params(path: &str) -> ListParams {
    ListParams {
        path: path.into(),
        limit: None,
        cursor: None,
    }
}
