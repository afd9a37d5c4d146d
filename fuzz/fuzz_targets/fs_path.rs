//! Request paths (`strata_fs::path::RequestPath`) and their resolution beneath a token's
//! prefix by the real fs service code (`FsService::open`/`read`/`stat`/`list`), against a
//! temporary tree built to be escaped from.
//!
//! The tree: `<base>/root` is the export root and `<base>/root/prefix` the token's
//! prefix. Inside the prefix are files, directories, and symlinks of every kind that
//! should be refused (absolute, relative climbing out, to a directory outside, chains,
//! loops, `/proc` magic links). Outside it (`<base>/outside`, and `<base>/root/secret-sibling.txt`
//! beside the prefix) every file holds `MARKER` and is `OUTSIDE_SIZE` bytes long, and every
//! outside name contains `secret`. The process's working directory is `<base>/outside`, so
//! resolving against the cwd (the prototype's confused deputy) would find them too.
//!
//! Must hold, for any UTF-8 path: no panic; `RequestPath::parse` accepts exactly the
//! relative, NUL-free, `..`-free paths within `PATH_MAX`; nothing opened, read, stat'd or
//! listed ever shows a byte, size or name from outside the prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use strata_audit::{Audit, Rotation};
use strata_cap::Claims;
use strata_fs::path::{RequestPath, MAX_PATH_LEN};
use strata_fs::{Caller, ExportRoots, FsService, HandleLimits, RevocationCheck};
use strata_proto::methods::fs::{CloseParams, ListParams, OpenParams, ReadParams, StatParams};

const MARKER: &[u8] = b"STRATA-FUZZ-OUTSIDE-THE-PREFIX";
const OUTSIDE_SIZE: u64 = 4099;

struct NothingRevoked;

impl RevocationCheck for NothingRevoked {
    fn is_revoked(&self, _: &Claims) -> bool {
        false
    }
}

struct Fixture {
    fs: FsService,
    caller: Caller,
}

/// The fixture's directory, removed when the fuzzer exits (statics are never dropped).
static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();

extern "C" fn remove_base() {
    if let Some(base) = BASE.get() {
        let _ = std::fs::remove_dir_all(base.path());
    }
}

fn outside_bytes() -> Vec<u8> {
    let mut bytes = MARKER.to_vec();
    bytes.resize(OUTSIDE_SIZE as usize, b'!');
    bytes
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let base_dir = BASE.get_or_init(|| {
            tempfile::Builder::new()
                .prefix("strata-fuzz-fs-")
                .tempdir()
                .unwrap()
        });
        // SAFETY: registering a plain function with no preconditions to run at exit.
        unsafe {
            libc::atexit(remove_base);
        }
        let base = base_dir.path().canonicalize().unwrap();
        let outside = base.join("outside");
        let root = base.join("root");
        let prefix = root.join("prefix");
        for d in [
            &outside,
            &outside.join("secret-dir"),
            &prefix,
            &prefix.join("dir/sub"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("secret.txt"), outside_bytes()).unwrap();
        std::fs::write(outside.join("secret-dir/secret-deep.txt"), outside_bytes()).unwrap();
        std::fs::write(root.join("secret-sibling.txt"), outside_bytes()).unwrap();
        std::fs::write(prefix.join("a.txt"), b"inside a\n").unwrap();
        std::fs::write(prefix.join("dir/b.txt"), b"inside b\n").unwrap();
        std::fs::write(prefix.join("dir/sub/c.bin"), [0u8, 159, 146, 150, 255]).unwrap();
        let links: [(&str, PathBuf); 13] = [
            ("abs-out", outside.join("secret.txt")),
            ("abs-in", prefix.join("a.txt")),
            ("rel-out", "../../outside/secret.txt".into()),
            ("rel-sibling", "../secret-sibling.txt".into()),
            ("dir-out", "../../outside".into()),
            ("rel-in", "a.txt".into()),
            ("dir/up", "..".into()),
            ("dir/up2", "../..".into()),
            ("dir/sub/chain", "../up2/secret-sibling.txt".into()),
            ("loop1", "loop2".into()),
            ("loop2", "loop1".into()),
            ("proc-root", "/proc/self/root".into()),
            ("proc-cwd", "/proc/self/cwd/secret.txt".into()),
        ];
        for (name, target) in links {
            symlink(target, prefix.join(name)).unwrap();
        }
        mkfifo(&prefix.join("fifo"));
        // The fuzzer opens millions of files: the audit log is kept to one small file
        // and one rotated copy (the log refuses a symlink, so /dev/null is not an option).
        let state = base.join("state");
        std::fs::create_dir(&state).unwrap();
        let rotation = Rotation::new(1 << 20, 1).unwrap();
        let audit = Audit::open_with(&state, "fs", rotation).unwrap();
        let roots = ExportRoots::open(&[root]).unwrap();
        let fs = FsService::new(
            roots,
            HandleLimits::default(),
            audit,
            Arc::new(NothingRevoked),
        );
        let now = strata_cap::Timestamp::now().unix_seconds();
        let ts =
            |t: i64| serde_json::to_value(strata_cap::Timestamp::from_unix_seconds(t)).unwrap();
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "jti": "00112233445566778899aabbccddeeff", "sub": "uid:0",
            "iss": "identity@local-0", "aud": "strata",
            "iat": ts(now - 10), "exp": ts(now + 30 * 24 * 3600), "service": "fs",
            "rights": ["fs.open", "fs.read", "fs.list", "fs.stat"],
            "constraints": {"path_prefix": prefix.to_str().unwrap()}
        }))
        .unwrap();
        std::env::set_current_dir(&outside).unwrap();
        Fixture {
            fs,
            caller: Caller::new(Arc::new(claims), None),
        }
    })
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "mkfifo {}",
        path.display()
    );
}

fn check_parse(path: &str) {
    let wrong = path.contains('\0')
        || path.len() > MAX_PATH_LEN
        || path.starts_with('/')
        || path.split('/').any(|c| c == "..");
    match RequestPath::parse(path) {
        Ok(p) => {
            assert!(!wrong, "accepted {path:?}");
            assert_eq!(p.as_str(), path);
            assert!(!p.as_kernel_path().is_empty());
        }
        Err(_) => assert!(wrong, "refused {path:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    check_parse(path);
    let f = fixture();
    let opened = f.fs.open(
        &f.caller,
        &OpenParams {
            path: path.to_owned(),
            mode: "r".to_owned(),
        },
    );
    if let Ok(opened) = opened {
        let read =
            f.fs.read(
                &f.caller,
                &ReadParams {
                    handle: opened.handle.clone(),
                    offset: 0,
                    size: 8192,
                },
                1 << 20,
            )
            .expect("reading a handle just opened");
        let bytes = decode_base64(&read.data_b64);
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER),
            "{path:?} read bytes from outside the prefix"
        );
        f.fs.close(
            &f.caller,
            &CloseParams {
                handle: opened.handle,
            },
        )
        .expect("closing a handle just opened");
    }
    if let Ok(stat) = f.fs.stat(
        &f.caller,
        &StatParams {
            path: path.to_owned(),
        },
    ) {
        assert_ne!(
            stat.size, OUTSIDE_SIZE,
            "{path:?} stat'd a file outside the prefix"
        );
    }
    if let Ok(list) = f.fs.list(
        &f.caller,
        &ListParams {
            path: path.to_owned(),
            limit: Some(100),
            cursor: None,
        },
        1 << 20,
    ) {
        for entry in &list.entries {
            assert!(
                !entry.name.contains("secret"),
                "{path:?} listed {} from outside the prefix",
                entry.name
            );
        }
    }
    assert!(f.fs.handles().is_empty(), "a handle leaked");
});

/// Standard base64 with padding, decoded by hand to keep the oracle independent of fs.
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text.as_bytes() {
        if c == b'=' {
            break;
        }
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 alphabet") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
