//! The README's tour, run verbatim against a live node.
//!
//! The tour is the ```sh block between `<!-- tour:start -->` and `<!-- tour:end -->`.
//! Two things differ from a reader's machine, and only these: the node runs in a sandbox,
//! so the tour's `/var/lib/strata` (root's state dir) stands for the sandbox's state dir,
//! and `strata-ctl` comes from this build. A line ending in `# fails` must exit non-zero;
//! every other line must succeed. The output the README shows (the ```text block between
//! `<!-- tour-output:start -->` and `<!-- tour-output:end -->`) must be what the tour
//! printed, up to what differs from run to run: numbers (pids, times, ids), time units
//! ("3 s ago" / "5 min ago"), column padding, and log lines, which are left out.

use std::path::Path;
use std::process::Command;
use strata_e2e::Stack;

/// The first ```<lang> block between `<!-- name:start -->` and `<!-- name:end -->`.
fn readme_block(name: &str, lang: &str) -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(readme).expect("README.md");
    let start = text
        .find(&format!("<!-- {name}:start -->"))
        .unwrap_or_else(|| panic!("{name} start marker"));
    let end = text
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("{name} end marker"));
    let block = &text[start..end];
    block
        .split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("a ```{lang} block inside the {name} markers"))
        .to_owned()
}

fn tour() -> Vec<String> {
    readme_block("tour", "sh")
        .lines()
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
    let printed: Vec<String> = stdout
        .lines()
        .map(|l| {
            let l = l
                .replace(stack.sb.runtime_dir().to_str().unwrap(), "/run/strata")
                .replace(state.to_str().unwrap(), "/var/lib/strata");
            normalise(&l)
        })
        .collect();
    let shown = readme_block("tour-output", "text");
    assert!(
        shown.lines().count() >= 10,
        "the README shows too little: {shown}"
    );
    for line in shown.lines().filter(|l| !l.trim().is_empty()) {
        let want = normalise(line);
        if want.starts_with("N-N-NTN:N:N.NZ ") || want.starts_with("$ ") {
            continue; // a log line, or the command that printed what follows
        }
        assert!(
            printed.contains(&want),
            "README shows {line:?}, which the tour did not print:\n{stdout}"
        );
    }
}

/// What stays the same between runs: numbers become `N`, time units `U`, runs of spaces
/// one space.
fn normalise(line: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for c in line.trim().chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(c);
    }
    for unit in [" s", " min", " h", " d"] {
        for after in [" ", ")", ","] {
            out = out.replace(&format!("N{unit}{after}"), &format!("N U{after}"));
        }
        if out.ends_with(&format!("N{unit}")) {
            out.truncate(out.len() - unit.len());
            out.push_str(" U");
        }
    }
    out.replace("just now", "N U ago")
}

#[test]
fn normalising_keeps_what_is_stable() {
    assert_eq!(
        normalise("fs        Healthy  27067  0         9 s ago"),
        normalise("fs        Healthy  812    0         5 min ago")
    );
    assert_eq!(
        normalise("uptime    2 h 5 min (since x)"),
        "uptime N U N U (since x)"
    );
    assert_ne!(normalise("fs Healthy"), normalise("fs Crashed"));
}
