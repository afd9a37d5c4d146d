//! `strata-ctl svc caps NAME` and the routing lines of `svc status`, against a fake
//! supervisor served in-process: the table, `-o json` (the result unchanged), `-o name`,
//! an empty run, and a hostile server's strings neutralised.

use serde_json::Value;
use strata_ipc::{Call, Router, Server, ServerConfig};
use strata_proto::methods::supervisor::{
    RoutedCap, SvcCaps, SvcCapsResult, SvcNameParams, SvcState, SvcStatus, SvcStatusResult,
};
use strata_proto::ErrorBody;
use strata_testkit::{healthy, wait_until, Sandbox, DEADLINE};

/// A terminal title change and a bell, in every string of the `evil` service's answer.
const HOSTILE: &str = "x\x1b]0;pwned\x07";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What the fake supervisor routed: `web` has two capabilities, `idle` none, `evil`
/// one made of hostile strings.
fn caps(name: &str) -> Vec<RoutedCap> {
    let now = now();
    let photos = RoutedCap {
        name: "photos".into(),
        cap_id: "0123456789abcdef0123456789abcdef".into(),
        service: "fs".into(),
        rights: vec!["fs.list".into(), "fs.read".into()],
        constraints: serde_json::json!({"path_prefix": "/srv/photos", "rate_limit": "200rps"}),
        expires: now + 40 * 60 + 30,
        issued: now - 20 * 60,
        rotations: 2,
        last_rotation: Some(now - 5 * 60 - 30),
    };
    match name {
        "web" => vec![
            photos.clone(),
            RoutedCap {
                name: "notes".into(),
                cap_id: "fedcba9876543210fedcba9876543210".into(),
                service: "notes".into(),
                rights: vec!["notes.get".into()],
                constraints: serde_json::json!({}),
                rotations: 0,
                last_rotation: None,
                ..photos
            },
        ],
        "evil" => vec![RoutedCap {
            name: HOSTILE.into(),
            cap_id: HOSTILE.into(),
            service: HOSTILE.into(),
            rights: vec![HOSTILE.into()],
            constraints: serde_json::json!({ HOSTILE: HOSTILE }),
            ..photos
        }],
        _ => Vec::new(),
    }
}

fn fake_supervisor(sb: &Sandbox) {
    let path = sb.socket("supervisor");
    let router = Router::new("supervisor", "0")
        .method::<SvcCaps, _, _, _>(|_c: Call, p: SvcNameParams| async move {
            let name = p.name.into_string();
            Ok::<_, ErrorBody>(SvcCapsResult {
                capabilities: caps(&name),
                name: if name == "evil" { HOSTILE.into() } else { name },
            })
        })
        .method::<SvcStatus, _, _, _>(|_c: Call, p: SvcNameParams| async move {
            Ok::<_, ErrorBody>(SvcStatusResult {
                name: p.name.into_string(),
                state: SvcState::Starting,
                pid: None,
                since: 1,
                since_ms: 1000,
                restarts: 0,
                crashes_in_window: 0,
                last_exit: None,
                applied: None,
                exec: None,
                args: None,
                readiness: "health".into(),
                restart: "always".into(),
                depends_on: vec!["identity".into()],
                dependents: vec![],
                socket: None,
                log_file: "/var/lib/strata/logs/web.log".into(),
                waiting: Some(format!("identity is not answering: {HOSTILE}")),
                capabilities: Some(2),
            })
        });
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let server = Server::bind(ServerConfig::new(&path), router).unwrap();
                server.serve(std::future::pending()).await;
            });
    });
    let path = sb.socket("supervisor");
    wait_until("the fake supervisor", DEADLINE, || healthy(&path));
}

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.run("strata-ctl", args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn svc_caps_prints_a_row_per_capability_and_json_unchanged() {
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    let shown = ok(&sb, &["svc", "caps", "web"]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    for title in [
        "NAME",
        "CAP ID",
        "SERVICE",
        "RIGHTS",
        "CONSTRAINTS",
        "EXPIRES",
        "ROTATIONS",
    ] {
        assert!(lines[0].contains(title), "{shown}");
    }
    assert!(!lines[0].contains("ISSUED"), "a wide column: {shown}");
    let photos = lines[1];
    for cell in [
        "photos",
        "0123456789abcdef0123456789abcdef",
        "fs.list, fs.read",
        "path_prefix /srv/photos, rate_limit 200rps",
        "in 40 min",
        "2 (last 5 min ago)",
    ] {
        assert!(photos.contains(cell), "{cell}: {shown}");
    }
    assert!(
        lines[2].starts_with("notes ") && lines[2].contains(" - "),
        "{shown}"
    );
    assert!(ok(&sb, &["-o", "wide", "svc", "caps", "web"]).contains("20 min ago"));

    // -o json: the server's result as it came (times as unix seconds).
    let json: Value = serde_json::from_str(&ok(&sb, &["--json", "svc", "caps", "web"])).unwrap();
    let sent: SvcCapsResult = serde_json::from_value(json).unwrap();
    assert_eq!(sent.name, "web");
    assert_eq!(sent.capabilities.len(), 2);
    assert_eq!(sent.capabilities[0].rotations, 2);
    assert_eq!(
        ok(&sb, &["-o", "name", "svc", "caps", "web"]),
        "photos\nnotes\n"
    );

    // A run with none says so; JSON still gives the (empty) result.
    assert_eq!(
        ok(&sb, &["svc", "caps", "idle"]),
        "idle: no capabilities are routed to its current run\n"
    );
    let json: Value =
        serde_json::from_str(&ok(&sb, &["-o", "json", "svc", "caps", "idle"])).unwrap();
    assert_eq!(json["capabilities"], serde_json::json!([]));
}

#[test]
fn a_hostile_supervisors_strings_are_escaped_and_status_shows_routing() {
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    for args in [
        &["svc", "caps", "evil"][..],
        &["-o", "wide", "svc", "caps", "evil"],
        &["-o", "name", "svc", "caps", "evil"],
        &["svc", "status", "web", "-n", "0"],
    ] {
        let shown = ok(&sb, args);
        assert!(
            !shown.contains('\x1b') && !shown.contains('\x07'),
            "{args:?}: {shown:?}"
        );
        assert!(shown.contains("x\\x1b]0;pwned\\x07"), "{args:?}: {shown}");
    }
    let status = ok(&sb, &["svc", "status", "web", "-n", "0"]);
    assert!(
        status.contains("waiting       identity is not answering: "),
        "{status}"
    );
    assert!(
        status.contains("capabilities  2 (strata-ctl svc caps web)"),
        "{status}"
    );
}
