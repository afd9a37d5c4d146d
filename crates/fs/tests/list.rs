//! fs.list paging and fs.stat.

mod common;

use common::Fixture;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use strata_fs::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use strata_proto::methods::fs::{ListParams, StatParams};
use strata_proto::ErrorCode;

fn params(path: &str, limit: Option<u64>, cursor: Option<String>) -> ListParams {
    ListParams {
        path: path.into(),
        limit,
        cursor,
    }
}

#[test]
fn entries_are_sorted_with_type_and_size() {
    let f = Fixture::new();
    f.write("b.txt", b"12345");
    f.write("a.txt", b"1");
    f.write("c/inner", b"");
    let c = f.caller();
    for path in ["", "."] {
        let page =
            f.fs.list(&c, &params(path, None, None), usize::MAX)
                .unwrap();
        let names: Vec<_> = page.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt", "c"]);
        assert_eq!(page.entries[1].size, 5);
        assert!(page.entries[2].is_dir && !page.entries[0].is_dir);
        assert_eq!(page.next_cursor, None);
    }
    let sub = f.fs.list(&c, &params("c", None, None), usize::MAX).unwrap();
    assert_eq!(sub.entries.len(), 1);
    let e =
        f.fs.list(&c, &params("a.txt", None, None), usize::MAX)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let e =
        f.fs.list(&c, &params("nope", None, None), usize::MAX)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[test]
fn a_large_directory_pages_through_every_name_once() {
    let f = Fixture::new();
    let dir = f.prefix().join("many");
    std::fs::create_dir(&dir).unwrap();
    let mut expected: Vec<Vec<u8>> = (0..2_500)
        .map(|i| format!("f{i:05}").into_bytes())
        .collect();
    // A name that is not UTF-8 still pages exactly (it is shown lossily).
    expected.push(b"z\xff".to_vec());
    for name in &expected {
        std::fs::write(dir.join(std::ffi::OsStr::from_bytes(name)), b"").unwrap();
    }
    expected.sort();
    let c = f.caller();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page =
            f.fs.list(&c, &params("many", Some(700), cursor), usize::MAX)
                .unwrap();
        assert!(page.entries.len() <= 700);
        seen.extend(page.entries.into_iter().map(|e| e.name));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let shown: Vec<String> = expected
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert_eq!(seen, shown);
    // The default page size.
    let page =
        f.fs.list(&c, &params("many", None, None), usize::MAX)
            .unwrap();
    assert_eq!(page.entries.len() as u64, DEFAULT_LIST_LIMIT);
    assert!(page.next_cursor.is_some());
}

#[test]
fn a_page_stops_early_when_the_frame_would_overflow() {
    let f = Fixture::new();
    for i in 0..50 {
        f.write(&format!("{i:02}-{}", "n".repeat(200)), b"");
    }
    let c = f.caller();
    let page =
        f.fs.list(&c, &params("", Some(50), None), 10 * 270)
            .unwrap();
    assert!(page.entries.len() < 50 && !page.entries.is_empty());
    let rest =
        f.fs.list(
            &c,
            &params("", Some(50), page.next_cursor.clone()),
            usize::MAX,
        )
        .unwrap();
    assert_eq!(page.entries.len() + rest.entries.len(), 50);
}

#[test]
fn limits_and_cursors_are_validated() {
    let f = Fixture::new();
    let c = f.caller();
    for limit in [0, MAX_LIST_LIMIT + 1] {
        let e =
            f.fs.list(&c, &params("", Some(limit), None), usize::MAX)
                .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("limit"));
    }
    f.fs.list(&c, &params("", Some(MAX_LIST_LIMIT), None), usize::MAX)
        .unwrap();
    let e =
        f.fs.list(&c, &params("", None, Some("***".into())), usize::MAX)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
}

#[test]
fn stat_describes_files_and_the_prefix() {
    let f = Fixture::new();
    let path = f.write("s.txt", b"abc");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = f.caller();
    let st =
        f.fs.stat(
            &c,
            &StatParams {
                path: "s.txt".into(),
            },
        )
        .unwrap();
    assert_eq!((st.size, st.is_dir, st.mode), (3, false, 0o640));
    let modified: strata_cap::Timestamp = st.modified.parse().unwrap();
    let now = strata_cap::Timestamp::now();
    assert!(now.duration_since(modified).unwrap().as_secs() < 60);
    assert!(st.modified.ends_with('Z'));
    for itself in ["", "."] {
        let st =
            f.fs.stat(
                &c,
                &StatParams {
                    path: itself.into(),
                },
            )
            .unwrap();
        assert!(st.is_dir);
    }
    let e =
        f.fs.stat(
            &c,
            &StatParams {
                path: "nope".into(),
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

/// One page through both ways fs answers: `list` and the JSON the router sends, which
/// must say the same.
fn page_both_ways(
    f: &Fixture,
    c: &strata_fs::Caller,
    p: &ListParams,
) -> strata_proto::methods::fs::ListResult {
    let page = f.fs.list(c, p, usize::MAX).unwrap();
    let json = f.fs.list_json(c, p, usize::MAX).unwrap();
    assert_eq!(json.get(), serde_json::to_string(&page).unwrap());
    if let Some(inline) = f.fs.list_json_inline(c, p, usize::MAX) {
        assert_eq!(inline.unwrap().get(), json.get());
    }
    page
}

#[test]
fn inline_listing_answers_as_the_pool_does_and_hands_big_directories_over() {
    use std::os::unix::fs::symlink;
    let f = Fixture::new();
    f.write("b.txt", b"12345");
    f.write("a.txt", b"1");
    f.write("sub/inner", b"xy");
    f.write("q\"uote\\", b"");
    std::fs::write(f.prefix().join(std::ffi::OsStr::from_bytes(b"z\xff")), b"").unwrap();
    symlink("sub", f.prefix().join("link")).unwrap();
    symlink("../../outside", f.prefix().join("out")).unwrap();
    let c = f.caller();
    let pool = |p: &ListParams| {
        f.fs.list_json(&c, p, usize::MAX)
            .map(|j| j.get().to_owned())
    };
    let inline = |p: &ListParams| {
        f.fs.list_json_inline(&c, p, usize::MAX)
            .expect("a small local directory lists inline")
            .map(|j| j.get().to_owned())
    };
    // Every page, paged two at a time, of the prefix, a subdirectory and one through a
    // symlink beneath the prefix.
    for path in ["", ".", "sub", "link"] {
        let mut cursor = None;
        loop {
            let p = params(path, Some(2), cursor);
            let (want, got) = (pool(&p).unwrap(), inline(&p).unwrap());
            assert_eq!(got, want, "{path}");
            let page: strata_proto::methods::fs::ListResult = serde_json::from_str(&got).unwrap();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    // Refusals are the same too.
    for path in ["nope", "a.txt", "../x", "/etc"] {
        let p = params(path, None, None);
        let (want, got) = (pool(&p).unwrap_err(), inline(&p).unwrap_err());
        assert_eq!(got.code(), want.code(), "{path}");
    }
    // A symlink out of the prefix: EXDEV under RESOLVE_NO_XDEV could be a mount on the way,
    // so the pool answers, and refuses.
    let out = params("out", None, None);
    assert!(f.fs.list_json_inline(&c, &out, usize::MAX).is_none());
    assert_eq!(pool(&out).unwrap_err().code(), ErrorCode::PermissionDenied);
    let e = inline(&params("", Some(0), None)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    // A directory with more entries than an inline listing reads goes to the pool,
    // whatever the page size.
    let dir = f.prefix().join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..strata_fs::INLINE_SCAN_MAX {
        std::fs::write(dir.join(format!("f{i:04}")), b"").unwrap();
    }
    for limit in [1, 1000] {
        assert!(f
            .fs
            .list_json_inline(&c, &params("many", Some(limit), None), usize::MAX)
            .is_none());
    }
    let page =
        f.fs.list(&c, &params("many", Some(1000), None), usize::MAX)
            .unwrap();
    assert_eq!(page.entries.len(), strata_fs::INLINE_SCAN_MAX);
    // A caller without a prefix is the pool's to refuse.
    let none = f.caller_for(None);
    assert!(f
        .fs
        .list_json_inline(&none, &params("", None, None), usize::MAX)
        .is_none());
}

#[test]
fn ten_thousand_entries_page_in_raw_byte_order_each_once_symlinks_as_themselves() {
    use std::os::unix::fs::symlink;
    let f = Fixture::new();
    let dir = f.prefix().join("big");
    std::fs::create_dir(&dir).unwrap();
    // (raw name, is_dir, size) of every entry.
    let mut expected: Vec<(Vec<u8>, bool, u64)> = Vec::new();
    for i in 0..9_950u32 {
        let name = format!("e{:05}", (i * 7_919) % 9_950).into_bytes();
        let size = u64::from(i % 5);
        std::fs::write(
            dir.join(std::ffi::OsStr::from_bytes(&name)),
            vec![b'x'; size as usize],
        )
        .unwrap();
        expected.push((name, false, size));
    }
    // Names that are not UTF-8 (several show as the same text; the cursor keeps them apart).
    for i in 0..40u8 {
        let lead = [0xff, 0xc3, 0xe9, 0x80][usize::from(i % 4)];
        let name = vec![lead, b'0' + i / 10, b'0' + i % 10];
        std::fs::write(dir.join(std::ffi::OsStr::from_bytes(&name)), b"").unwrap();
        expected.push((name, false, 0));
    }
    // Symlinks are described as themselves (size: the target's length), whatever they
    // point at: outside the prefix, a directory, nothing, themselves.
    for (name, target) in [
        ("link-out", "/etc/passwd"),
        ("link-dir", "."),
        ("link-none", "nope"),
        ("link-loop", "link-loop"),
    ] {
        symlink(target, dir.join(name)).unwrap();
        expected.push((name.into(), false, target.len() as u64));
    }
    for name in ["sub-a", "sub-b", "sub-c", "sub-d", "sub-e", "sub-f"] {
        std::fs::create_dir(dir.join(name)).unwrap();
        let size = std::fs::symlink_metadata(dir.join(name)).unwrap().len();
        expected.push((name.into(), true, size));
    }
    assert_eq!(expected.len(), 10_000);
    expected.sort();

    let c = f.caller();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = page_both_ways(&f, &c, &params("big", Some(999), cursor));
        assert!(page.entries.len() <= 999);
        seen.extend(page.entries);
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 11);
    let want: Vec<strata_proto::methods::fs::DirEntry> = expected
        .iter()
        .map(|(name, is_dir, size)| strata_proto::methods::fs::DirEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            is_dir: *is_dir,
            size: *size,
        })
        .collect();
    assert_eq!(seen.len(), want.len());
    assert!(
        seen == want,
        "pages differ from the directory in raw byte order"
    );
}

#[test]
fn the_prefix_itself_lists_the_same_both_ways() {
    let f = Fixture::new();
    f.write("a \"quoted\" \\ name\t", b"12");
    f.write("é", b"");
    std::fs::create_dir(f.prefix().join("d")).unwrap();
    let c = f.caller();
    for path in ["", "."] {
        let page = page_both_ways(&f, &c, &params(path, Some(2), None));
        assert_eq!(page.entries.len(), 2);
        let rest = page_both_ways(&f, &c, &params(path, Some(2), page.next_cursor));
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.next_cursor, None);
    }
}
