//! When a routed token is replaced.

use super::*;
use crate::units::HumanDuration;

fn cap(ttl_secs: u64) -> CapabilitySpec {
    let mut spec: CapabilitySpec =
        toml::from_str("name = \"data\"\nservice = \"fs\"\nrights = [\"fs.read\"]").unwrap();
    spec.ttl = HumanDuration(Duration::from_secs(ttl_secs));
    spec
}

#[test]
fn a_token_is_replaced_when_a_third_of_its_lifetime_is_left_by_the_wall_clock() {
    let cap = cap(30);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000_900);
    let asked = Instant::now();
    // The answer came 0.1 s after the asking, and identity's clock, truncated to the
    // second, had its `iat` at 1_000_000 (0.9 s before the wall clock's now): 29.1 s
    // left, not 30 (two thirds of the ttl from the answer would leave 9.1 s, not 10).
    let now = asked + Duration::from_millis(100);
    let due = rotation_due(asked, &cap, 1_000_000 + 30, now, wall);
    assert_eq!(due, now + Duration::from_millis(19_100));
    // Never later than two thirds of the ttl after the asking (an `exp` far ahead).
    let due = rotation_due(asked, &cap, 2_000_000_000, now, wall);
    assert_eq!(due, asked + Duration::from_secs(20));
    // Already past: at once.
    let due = rotation_due(asked, &cap, 1_000_000 - 5, now, wall);
    assert_eq!(due, now);
}
