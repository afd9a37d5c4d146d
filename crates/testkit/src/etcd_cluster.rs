//! A real multi-member etcd cluster for fault tests: every member on its own loopback
//! ports with its own data directory, each one stoppable, killable and restartable, all
//! killed on drop.
//!
//! ```no_run
//! use strata_testkit::etcd_cluster::EtcdCluster;
//! let Some(mut etcd) = EtcdCluster::start_or_skip("my_test", 3) else { return };
//! let endpoints = etcd.endpoints();           // every member's client URL
//! let leader = etcd.wait_leader();            // index of the member that leads now
//! let follower = etcd.follower().unwrap();    // a running member that does not
//! etcd.member_mut(follower).kill();           // SIGKILL; the others keep a majority
//! etcd.member_mut(follower).restart().unwrap(); // same data and ports, rejoins
//! etcd.kill_all();                            // the whole cluster crashes
//! etcd.start_all().unwrap();                  // and comes back with its data
//! # let _ = (endpoints, leader);
//! ```
//!
//! The members are [`Etcd`]s (same binary lookup, logs and health check as the single
//! member); this only starts them together and asks them who leads, through etcd's own
//! HTTP gateway (`POST /v3/maintenance/status`), so it spawns nothing but etcd.

use crate::etcd::{find_binary, free_ports, http, Etcd, EtcdError};
use crate::DEADLINE;
use std::time::{Duration, Instant};

/// Members of one etcd cluster on 127.0.0.1.
pub struct EtcdCluster {
    members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Starts a cluster of `size` members (1 to 7) on fresh ports and data directories
    /// and waits until every member reports healthy (it has a leader).
    pub fn start(size: usize) -> Result<EtcdCluster, EtcdError> {
        assert!((1..=7).contains(&size), "an etcd cluster of {size} members");
        let binary = find_binary()?;
        // Ports are free when picked but could be taken before etcd binds them; a start
        // that fails for that reason is retried on new ports.
        let mut attempts = 3;
        loop {
            let ports = free_ports(2 * size)?;
            let name = |i: usize| format!("m{i}");
            let initial_cluster = (0..size)
                .map(|i| format!("{}=http://127.0.0.1:{}", name(i), ports[2 * i + 1]))
                .collect::<Vec<_>>()
                .join(",");
            // Unique among running clusters: no other one holds this port.
            let token = format!("strata-test-{}", ports[1]);
            let mut members = Vec::with_capacity(size);
            for i in 0..size {
                members.push(Etcd::member(
                    &binary,
                    &name(i),
                    ports[2 * i],
                    ports[2 * i + 1],
                    initial_cluster.clone(),
                    token.clone(),
                )?);
            }
            let mut cluster = EtcdCluster { members };
            match cluster.launch() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    attempts -= 1;
                    let port_taken = cluster
                        .members
                        .iter()
                        .any(|m| m.log_tail().contains("address already in use"));
                    if attempts == 0 || !port_taken {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// [`EtcdCluster::start`], or `None` after printing `SKIPPED <test>: <why>` when etcd
    /// is not installed. Panics (with the members' logs) if it is installed but does not
    /// start.
    pub fn start_or_skip(test: &str, size: usize) -> Option<EtcdCluster> {
        match EtcdCluster::start(size) {
            Ok(cluster) => Some(cluster),
            Err(EtcdError::NotInstalled(why)) => {
                crate::skip(test, &why);
                None
            }
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Every member at once (a member waits for a quorum before it is healthy), then
    /// every member healthy.
    fn launch(&mut self) -> Result<(), EtcdError> {
        for member in &mut self.members {
            member.spawn()?;
        }
        let until = Instant::now() + DEADLINE;
        for member in &mut self.members {
            member.wait_healthy(until)?;
        }
        Ok(())
    }

    /// Crashes the whole cluster: SIGKILL to every running member. Their data
    /// directories stay (etcd fsyncs its log before it acknowledges a write), for
    /// [`EtcdCluster::start_all`].
    pub fn kill_all(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }

    /// Starts every stopped member again on its own data directory and ports, all at once
    /// (one alone has no quorum), and waits until every member is healthy.
    pub fn start_all(&mut self) -> Result<(), EtcdError> {
        for member in &mut self.members {
            if !member.running() {
                member.spawn()?;
            }
        }
        let until = Instant::now() + DEADLINE;
        for member in &mut self.members {
            member.wait_healthy(until)?;
        }
        Ok(())
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: `start` makes at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, `http://127.0.0.1:PORT`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// The endpoints comma-separated, as `STRATA_ETCD_ENDPOINTS` takes them.
    pub fn endpoints_env(&self) -> String {
        self.endpoints().join(",")
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Etcd {
        &self.members[i]
    }

    /// Member `i`, to stop, kill or restart it ([`Etcd::stop`], [`Etcd::kill`],
    /// [`Etcd::restart`]; a restarted member rejoins with its data).
    pub fn member_mut(&mut self, i: usize) -> &mut Etcd {
        &mut self.members[i]
    }

    /// The index of the member the running members agree leads, if they do right now.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<Option<(String, String)>> = self
            .members
            .iter()
            .map(|m| if m.running() { status(m) } else { None })
            .collect();
        let mut leader_ids = statuses.iter().flatten().map(|(_, leader)| leader);
        let first = leader_ids.next()?;
        if first == "0" || leader_ids.any(|l| l != first) {
            return None;
        }
        statuses
            .iter()
            .position(|s| s.as_ref().is_some_and(|(id, _)| id == first))
    }

    /// Waits (up to [`DEADLINE`]) until the running members agree on a leader; its
    /// index. Panics with the members' logs if they do not.
    pub fn wait_leader(&self) -> usize {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(leader) = self.leader() {
                return leader;
            }
            if Instant::now() >= until {
                panic!(
                    "the etcd members did not agree on a leader within {DEADLINE:?}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A running member that is not the leader (after [`EtcdCluster::wait_leader`]).
    pub fn follower(&self) -> Option<usize> {
        let leader = self.wait_leader();
        (0..self.len()).find(|&i| i != leader && self.members[i].running())
    }

    /// The end of every member's log, for failure messages.
    pub fn log_tails(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("--- member {i} ({}) ---\n{}", m.endpoint(), m.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A member's own id and the leader's id as it sees them (decimal strings), from the
/// gRPC gateway's `Maintenance/Status`.
fn status(member: &Etcd) -> Option<(String, String)> {
    let body = http(member.client_port(), "POST", "/v3/maintenance/status", "{}")?;
    let value: serde_json::Value = serde_json::from_str(&body).ok()?;
    // The gateway writes 64-bit integers as strings.
    let id = value["header"]["member_id"].as_str()?.to_owned();
    let leader = value["leader"].as_str()?.to_owned();
    Some((id, leader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_three_member_cluster_survives_a_follower_and_takes_it_back() {
        let test = "a_three_member_cluster_survives_a_follower_and_takes_it_back";
        let Some(mut etcd) = EtcdCluster::start_or_skip(test, 3) else {
            return;
        };
        assert_eq!(etcd.endpoints().len(), 3);
        let leader = etcd.wait_leader();
        let follower = etcd.follower().expect("a follower");
        assert_ne!(leader, follower);
        etcd.member_mut(follower).kill();
        assert!(!etcd.member(follower).running());
        // Two of three still have a leader (the same one: a follower's death calls no
        // election), and the dead member is out of the count.
        assert_eq!(etcd.wait_leader(), leader);
        assert!(etcd.member(leader).healthy());
        etcd.member_mut(follower).restart().unwrap();
        assert!(etcd.member(follower).healthy());
        assert_eq!(etcd.wait_leader(), leader);
    }

    #[test]
    fn a_cluster_killed_whole_comes_back_with_its_data() {
        let test = "a_cluster_killed_whole_comes_back_with_its_data";
        let Some(mut etcd) = EtcdCluster::start_or_skip(test, 3) else {
            return;
        };
        // Key "k", value "v", base64 as the gateway takes them.
        let put = http(
            etcd.member(0).client_port(),
            "POST",
            "/v3/kv/put",
            r#"{"key":"aw==","value":"dg=="}"#,
        );
        assert!(put.is_some(), "put failed\n{}", etcd.log_tails());
        etcd.kill_all();
        assert!((0..3).all(|i| !etcd.member(i).running() && !etcd.member(i).healthy()));
        etcd.start_all().unwrap();
        etcd.wait_leader();
        let range = http(
            etcd.member(2).client_port(),
            "POST",
            "/v3/kv/range",
            r#"{"key":"aw=="}"#,
        )
        .expect("range answers");
        assert!(range.contains(r#""value":"dg==""#), "{range}");
    }
}
