//! Issue 13, finding 11 (fs part): file work that blocks in the kernel (here: lookups on a
//! FUSE mount whose server never answers, as a hung FUSE or NFS mount does) runs off the
//! async workers, bounded in number, so it never stalls other requests. A FIFO is no
//! substitute: fs opens with `O_NONBLOCK`, so opening one never blocks.
//!
//! Real `strata-identity` and `strata-fs` binaries; needs root (to mount).

// Unsafe: mount(2)/umount2(2) for a FUSE mount, which std does not wrap.
#![allow(unsafe_code)]

use serde_json::{json, Value};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use strata_testkit::{
    healthy, read_frame, skip_unless_root, wait_until, write_frame, Proc, Sandbox, DEADLINE,
};

/// A FUSE file system whose server never answers: every lookup beneath it blocks until
/// [`HungFuse::release`] closes the device, which aborts the connection (the blocked calls
/// then fail with ENOTCONN). Unmounted on drop.
struct HungFuse {
    device: Option<OwnedFd>,
    at: PathBuf,
}

impl HungFuse {
    /// Mount one at `at`; `Err` says why this machine cannot (no FUSE in the kernel or no
    /// /dev/fuse in the container).
    fn mount(at: &Path) -> Result<HungFuse, String> {
        use std::ffi::CString;
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
        let device = OwnedFd::from(device);
        let target = CString::new(at.to_str().unwrap()).unwrap();
        let options = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            device.as_raw_fd()
        ))
        .unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"strata-hung".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "cannot mount FUSE: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(HungFuse {
            device: Some(device),
            at: at.to_owned(),
        })
    }

    /// Abort the connection: every call blocked on the mount returns.
    fn release(&mut self) {
        self.device.take();
    }
}

impl Drop for HungFuse {
    fn drop(&mut self) {
        self.release();
        let target = std::ffi::CString::new(self.at.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// One request on a fresh connection; `None` if no answer came within `within`.
fn call_within(
    socket: &Path,
    method: &str,
    params: Value,
    token: &str,
    within: Duration,
) -> Option<Value> {
    let req = json!({"v": 1, "req_id": "b", "method": method, "params": params,
                     "auth": {"token": token}});
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(within)).ok()?;
    write_frame(&mut stream, &serde_json::to_vec(&req).unwrap()).ok()?;
    let reply = read_frame(&mut stream).ok()?;
    serde_json::from_slice(&reply).ok()
}

#[test]
fn a_hung_mount_does_not_stall_other_requests() {
    if skip_unless_root("a_hung_mount_does_not_stall_other_requests") {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.root().canonicalize().unwrap().join("export");
    std::fs::create_dir_all(root.join("data/hung")).unwrap();
    std::fs::write(root.join("data/hello.txt"), b"hello").unwrap();
    let mut fuse = match HungFuse::mount(&root.join("data/hung")) {
        Ok(fuse) => fuse,
        Err(why) => {
            strata_testkit::skip(
                "a_hung_mount_does_not_stall_other_requests",
                &why.to_string(),
            );
            return;
        }
    };

    let _identity = Proc::spawn(
        "identity",
        sandbox.command("strata-identity").stderr(Stdio::null()),
    );
    wait_until("identity answers", DEADLINE, || {
        healthy(&sandbox.socket("identity"))
    });
    let _fs = Proc::spawn(
        "fs",
        sandbox
            .command("strata-fs")
            .arg("--export-root")
            .arg(&root)
            .args(["--max-blocking-per-caller", "6"])
            .env("STRATA_LOG", "warn"),
    );
    let fs_socket = sandbox.socket("fs");
    wait_until("fs answers", DEADLINE, || healthy(&fs_socket));
    let issued = strata_testkit::call(
        &sandbox.socket("identity"),
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.open", "fs.read", "fs.list", "fs.stat"],
               "path_prefix": root.join("data").to_str().unwrap()}),
        None,
    )
    .unwrap();
    let token = issued["result"]["token"].as_str().unwrap().to_owned();

    // More blocked calls than fs has async workers (two), one of each kind of file work.
    let blocked: Vec<_> = [
        ("fs.open", json!({"path": "hung/a"})),
        ("fs.open", json!({"path": "hung/b"})),
        ("fs.stat", json!({"path": "hung/c"})),
        ("fs.list", json!({"path": "hung/d"})),
    ]
    .into_iter()
    .map(|(method, params)| {
        let (socket, token) = (fs_socket.clone(), token.clone());
        std::thread::spawn(move || call_within(&socket, method, params, &token, DEADLINE * 2))
    })
    .collect();
    // Wait until all four are in the kernel, blocked on the mount (fs's threads in
    // FUSE's request wait), so the checks below run while they are stuck.
    // (Two is enough to hold both of fs's async workers if the work ran on them.)
    wait_until("calls blocked on the mount", DEADLINE, || {
        fuse_waiters(&_fs) >= 2
    });

    let answered = |method: &str, params: Value| {
        let started = Instant::now();
        let reply = call_within(&fs_socket, method, params, &token, Duration::from_secs(3));
        (reply, started.elapsed())
    };
    let (health, took) = answered("sys.health", json!({}));
    assert!(
        health.as_ref().is_some_and(|r| r["ok"] == true),
        "sys.health unanswered with file work blocked ({took:?}): {health:?}"
    );
    let (stat, took) = answered("fs.stat", json!({"path": "hello.txt"}));
    assert!(
        stat.as_ref().is_some_and(|r| r["result"]["size"] == 5),
        "fs.stat of an ordinary file stalled ({took:?}): {stat:?}"
    );
    let (opened, _) = answered("fs.open", json!({"path": "hello.txt"}));
    let opened = opened.expect("fs.open of an ordinary file stalled");
    let handle = opened["result"]["handle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    let (read, _) = answered("fs.read", json!({"handle": handle}));
    assert_eq!(read.expect("fs.read stalled")["result"]["data"], "hello");
    let (closed, _) = answered("fs.close", json!({"handle": handle}));
    assert_eq!(closed.expect("fs.close stalled")["ok"], true);

    // The caller's bound on work in flight (6 here; 4 are stuck): past it, refused at once
    // rather than queued behind the stuck ones.
    let more: Vec<_> = (0..2)
        .map(|i| {
            let (socket, token) = (fs_socket.clone(), token.clone());
            std::thread::spawn(move || {
                call_within(
                    &socket,
                    "fs.open",
                    json!({"path": format!("hung/more{i}")}),
                    &token,
                    DEADLINE * 2,
                )
            })
        })
        .collect();
    wait_until("six calls blocked on the mount", DEADLINE, || {
        fuse_waiters(&_fs) >= 6
    });
    let (over, took) = answered("fs.stat", json!({"path": "hello.txt"}));
    let over = over.unwrap_or_else(|| panic!("no answer past the bound ({took:?})"));
    assert_eq!(over["error"]["code"], 7, "{over}");

    // Release the mount: every blocked call comes back (with an error), and fs serves the
    // caller again.
    fuse.release();
    for t in blocked.into_iter().chain(more) {
        let reply = t.join().unwrap().expect("the blocked call was answered");
        assert_eq!(reply["ok"], false, "{reply}");
    }
    let (stat, _) = answered("fs.stat", json!({"path": "hello.txt"}));
    assert_eq!(stat.expect("answered")["ok"], true);
}

/// How many of `fs`'s threads are blocked in a FUSE request.
fn fuse_waiters(fs: &Proc) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", fs.pid())) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("wchan")).ok())
        .filter(|wchan| wchan.contains("fuse"))
        .count()
}
