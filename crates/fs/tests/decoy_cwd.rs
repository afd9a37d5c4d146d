//! The fs process's working directory plays no part: with the cwd full of decoys that share
//! names with the prefix's files, every request sees the prefix and only the prefix.
//!
//! This file holds a single test because it changes the process's working directory.

mod common;

use common::Fixture;
use strata_proto::methods::fs::{ListParams, StatParams};
use strata_proto::ErrorCode;

#[test]
fn requests_never_see_the_working_directory() {
    let f = Fixture::new();
    f.write("file.txt", b"real");
    let decoy = tempfile::tempdir().unwrap();
    std::fs::write(decoy.path().join("file.txt"), b"DECOY").unwrap();
    std::fs::write(decoy.path().join("decoy-only.txt"), b"DECOY").unwrap();
    std::fs::create_dir(decoy.path().join("decoy-dir")).unwrap();
    std::env::set_current_dir(decoy.path()).unwrap();

    let c = f.caller();
    assert_eq!(f.slurp(&c, "file.txt").unwrap(), b"real");
    assert_eq!(f.open(&c, "decoy-only.txt"), Err(ErrorCode::NotFound));
    assert_eq!(f.open(&c, "./decoy-only.txt"), Err(ErrorCode::NotFound));
    let listed = |path: &str| {
        let params = ListParams {
            path: path.into(),
            limit: None,
            cursor: None,
        };
        f.fs.list(&c, &params, usize::MAX)
    };
    for path in ["", "."] {
        let names: Vec<String> = listed(path)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["file.txt"]);
    }
    assert_eq!(listed("decoy-dir").unwrap_err().code(), ErrorCode::NotFound);
    let stat = f.fs.stat(
        &c,
        &StatParams {
            path: "decoy-only.txt".into(),
        },
    );
    assert_eq!(stat.unwrap_err().code(), ErrorCode::NotFound);
    let stat =
        f.fs.stat(
            &c,
            &StatParams {
                path: "file.txt".into(),
            },
        )
        .unwrap();
    assert_eq!(stat.size, 4);
}
