//! The README's tour, run verbatim against a live node.
//!
//! The tour is the ```sh block between `<!-- tour:start -->` and `<!-- tour:end -->`.
//! Two things differ from a reader's machine, and only these: the node runs in a sandbox,
//! so the tour's `/var/lib/strata` (root's state dir) stands for the sandbox's state dir,
//! and `strata-ctl` comes from this build. A line ending in `# fails` must exit non-zero;
//! every other line must succeed.

use std::path::Path;
use std::process::Command;
use strata_e2e::Stack;

fn tour() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(readme).expect("README.md");
    let start = text.find("<!-- tour:start -->").expect("tour start marker");
    let end = text.find("<!-- tour:end -->").expect("tour end marker");
    let block = &text[start..end];
    let body = block
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block inside the tour markers");
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_tour_runs_verbatim() {
    let lines = tour();
    assert!(lines.len() >= 8, "the tour is too short: {lines:?}");
    let stack = Stack::start_with_defaults();
    let state = stack.sb.state_dir();
    let bin_dir = strata_testkit::binary("strata-ctl")
        .parent()
        .unwrap()
        .to_path_buf();
    let mut script = String::from("set -u -o pipefail\n");
    for (i, line) in lines.iter().enumerate() {
        let expect_failure = line.ends_with("# fails");
        let line = line.replace("/var/lib/strata", state.to_str().unwrap());
        script.push_str(&format!("echo '>>> line {}'\n{line}\nrc=$?\n", i + 1));
        if expect_failure {
            script.push_str(&format!(
                "[ $rc -ne 0 ] || {{ echo 'line {} should fail' >&2; exit 90; }}\n",
                i + 1
            ));
        } else {
            script.push_str(&format!(
                "[ $rc -eq 0 ] || {{ echo 'line {} failed' >&2; exit 91; }}\n",
                i + 1
            ));
        }
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", format!("{}:{path}", bin_dir.display()))
        .env("STRATA_RUNTIME_DIR", stack.sb.runtime_dir())
        .env("STRATA_STATE_DIR", &state)
        .env_remove("STRATA_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tour failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello strata"),
        "the tour should print the file: {stdout}"
    );
}
