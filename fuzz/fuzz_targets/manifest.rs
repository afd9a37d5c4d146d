//! Supervisor manifest parsing (`strata_manifest::Manifest::parse`, which the supervisor
//! re-exports as `strata_supervisor::Manifest`) on arbitrary text.
//!
//! Must hold: no panic (TOML syntax, field types, names, limits, dependency cycles); an
//! accepted manifest validates again, has unique valid names, and its dependencies all
//! name declared services.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use strata_manifest::{check_name, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text, "fuzz.toml", Path::new("/etc/strata")) else {
        return;
    };
    manifest
        .validate()
        .expect("an accepted manifest validates again");
    let mut names = std::collections::BTreeSet::new();
    for service in &manifest.services {
        check_name(&service.name).expect("accepted names are valid");
        assert!(
            names.insert(service.name.as_str()),
            "duplicate {}",
            service.name
        );
    }
    for service in &manifest.services {
        for dep in &service.depends_on {
            assert!(
                names.contains(dep.as_str()),
                "{} depends on unknown {dep}",
                service.name
            );
        }
        assert!(
            service.exec.is_empty() || !service.exec.contains('/') || service.exec.starts_with('/')
        );
    }
});
