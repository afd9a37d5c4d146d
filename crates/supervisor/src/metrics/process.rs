//! A service's memory and CPU: from its cgroup v2 (`memory.current`, `cpu.stat`
//! `usage_usec`) when it runs in one, which counts every process of the service; else from
//! `/proc/<pid>` of its main process (`VmRSS`, `utime + stime`).
#![allow(unsafe_code)]

use std::path::Path;

/// What a service's processes use now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Bytes of memory: the cgroup's `memory.current`, else the process's resident set.
    pub memory_bytes: Option<u64>,
    /// CPU seconds, user and system, since the cgroup (or process) began.
    pub cpu_seconds: Option<f64>,
}

/// The usage of the service whose cgroup is `cgroup` (if it has one) and whose main
/// process is `pid`. Each figure comes from the cgroup when the cgroup has it.
pub fn usage(cgroup: Option<&Path>, pid: Option<i32>) -> Usage {
    let from_cgroup = cgroup.map(cgroup_usage).unwrap_or_default();
    let from_proc = match pid {
        Some(pid) if from_cgroup.memory_bytes.is_none() || from_cgroup.cpu_seconds.is_none() => {
            proc_usage(pid)
        }
        _ => Usage::default(),
    };
    Usage {
        memory_bytes: from_cgroup.memory_bytes.or(from_proc.memory_bytes),
        cpu_seconds: from_cgroup.cpu_seconds.or(from_proc.cpu_seconds),
    }
}

fn cgroup_usage(dir: &Path) -> Usage {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    Usage {
        memory_bytes: read("memory.current").and_then(|s| s.trim().parse().ok()),
        cpu_seconds: read("cpu.stat")
            .and_then(|s| usage_usec(&s))
            .map(|us| us as f64 / 1e6),
    }
}

/// `usage_usec` of a `cpu.stat` file.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

fn proc_usage(pid: i32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    Usage {
        memory_bytes: status.as_deref().and_then(vm_rss_bytes),
        cpu_seconds: stat
            .as_deref()
            .and_then(cpu_ticks)
            .map(|ticks| ticks as f64 / clock_ticks_per_second()),
    }
}

/// `VmRSS` of a `/proc/<pid>/status` file, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/<pid>/stat` times. Neither std nor Tokio
/// exposes it.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_the_way_the_kernel_writes_them() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 1 0 12345 1000000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(
            vm_rss_bytes("Name:\tx\nVmRSS:\t    1234 kB\n"),
            Some(1234 * 1024)
        );
        assert_eq!(
            usage_usec("usage_usec 1500000\nuser_usec 1\n"),
            Some(1_500_000)
        );
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = usage(None, Some(std::process::id() as i32));
        assert!(me.memory_bytes.is_some_and(|b| b > 0), "{me:?}");
        assert!(me.cpu_seconds.is_some(), "{me:?}");
    }

    #[test]
    fn a_cgroup_counts_before_the_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 2000000\n").unwrap();
        let u = usage(Some(dir.path()), Some(std::process::id() as i32));
        assert_eq!(u.memory_bytes, Some(4096));
        assert_eq!(u.cpu_seconds, Some(2.0));
    }
}
