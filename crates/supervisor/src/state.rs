//! The lifecycle states (SPEC §3) and the only transitions allowed between them.
//!
//! ```text
//!   Declared ──► Starting ──► Healthy
//!      │           │  │          │
//!      │           │  └──────────┼──► Crashed ──► Restarting ──► Starting
//!      │           │             │      │  └───► Quarantined ──► Starting (svc.start only)
//!      ▼           ▼             ▼      ▼
//!   Stopped ◄──────┴─────────────┴──────┘   (Restarting and Quarantined may stop too)
//!      └──► Starting (svc.start)
//! ```
//!
//! `Crashed` is where a service rests when its restart policy says not to restart it
//! (`never`, or `on-failure` after a clean exit is `Stopped` instead). Every state change
//! in the supervisor goes through [`check_transition`].

use strata_proto::methods::supervisor::SvcState;

/// A transition the state machine does not allow; reaching one is a supervisor bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal state transition {from:?} -> {to:?}")]
pub struct IllegalTransition {
    /// The state it was in.
    pub from: SvcState,
    /// The state it was to enter.
    pub to: SvcState,
}

/// Whether `from -> to` is a legal lifecycle step.
pub fn is_legal(from: SvcState, to: SvcState) -> bool {
    use SvcState::*;
    matches!(
        (from, to),
        // Boot (dependencies Healthy) or an operator stop before it ever ran.
        (Declared, Starting) | (Declared, Stopped)
        // Readiness passed; exited or not ready in time; stopped while starting, or a
        // clean exit that the restart policy does not restart.
        | (Starting, Healthy) | (Starting, Crashed) | (Starting, Stopped)
        // Exited or stopped answering; stopped, or a clean exit not restarted.
        | (Healthy, Crashed) | (Healthy, Stopped)
        // The restart policy decides; an operator may start or stop a crashed service.
        | (Crashed, Restarting) | (Crashed, Quarantined) | (Crashed, Starting) | (Crashed, Stopped)
        // Backoff over (and dependencies Healthy), or stopped while waiting.
        | (Restarting, Starting) | (Restarting, Stopped)
        // Only an operator's svc.start leaves these.
        | (Stopped, Starting)
        | (Quarantined, Starting) | (Quarantined, Stopped)
    )
}

/// [`is_legal`] as a `Result`.
pub fn check_transition(from: SvcState, to: SvcState) -> Result<(), IllegalTransition> {
    if is_legal(from, to) {
        Ok(())
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// States in which the service has a process.
pub fn is_running(state: SvcState) -> bool {
    matches!(state, SvcState::Starting | SvcState::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SvcState::*;

    const ALL: [SvcState; 7] = [
        Declared,
        Starting,
        Healthy,
        Crashed,
        Restarting,
        Stopped,
        Quarantined,
    ];

    #[test]
    fn exactly_the_documented_transitions_are_legal() {
        let legal = [
            (Declared, Starting),
            (Declared, Stopped),
            (Starting, Healthy),
            (Starting, Crashed),
            (Starting, Stopped),
            (Healthy, Crashed),
            (Healthy, Stopped),
            (Crashed, Restarting),
            (Crashed, Quarantined),
            (Crashed, Starting),
            (Crashed, Stopped),
            (Restarting, Starting),
            (Restarting, Stopped),
            (Stopped, Starting),
            (Quarantined, Starting),
            (Quarantined, Stopped),
        ];
        for from in ALL {
            for to in ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(is_legal(from, to), expected, "{from:?} -> {to:?}");
                assert_eq!(check_transition(from, to).is_ok(), expected);
            }
        }
    }

    #[test]
    fn no_state_loops_onto_itself_and_nothing_returns_to_declared() {
        for s in ALL {
            assert!(!is_legal(s, s), "{s:?}");
            assert!(!is_legal(s, Declared), "{s:?}");
        }
    }

    #[test]
    fn quarantine_is_left_only_by_starting_or_stopping() {
        for to in ALL {
            assert_eq!(is_legal(Quarantined, to), matches!(to, Starting | Stopped));
        }
        // A crash loop cannot skip the Crashed state on its way to quarantine.
        for from in ALL {
            assert_eq!(is_legal(from, Quarantined), from == Crashed);
        }
    }
}
