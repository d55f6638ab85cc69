//! CPU time and peak memory of a process tree, read from `/proc`.
//!
//! The pipeline under test may be one process or a wrapper with children (a shell, a JVM
//! launcher), so every sample walks the tree below the root pid. A process that exits keeps its
//! last sample, so short-lived children still count.

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`; 100 on Linux unless
/// configured otherwise).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `(ppid, utime + stime in ticks)` of `pid`, if it is alive.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Peak resident set size (`VmHWM`) of `pid` in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Accumulated samples of the trees below some root pids.
#[derive(Debug, Default)]
pub struct TreeStats {
    roots: Vec<u32>,
    cpu_ticks: HashMap<u32, u64>,
    hwm_kib: HashMap<u32, u64>,
}

impl TreeStats {
    /// Watches the trees below `roots`.
    pub fn new(roots: Vec<u32>) -> TreeStats {
        TreeStats {
            roots,
            ..TreeStats::default()
        }
    }

    /// Takes one sample of every process in the trees.
    pub fn sample(&mut self) {
        let mut parent: HashMap<u32, u32> = HashMap::new();
        let mut ticks: HashMap<u32, u64> = HashMap::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some((ppid, t)) = stat(pid) {
                    parent.insert(pid, ppid);
                    ticks.insert(pid, t);
                }
            }
        }
        for (&pid, &t) in &ticks {
            let mut p = pid;
            let mut hops = 0;
            let inside = loop {
                if self.roots.contains(&p) {
                    break true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp > 1 && hops < 64 => {
                        p = pp;
                        hops += 1;
                    }
                    _ => break false,
                }
            };
            if inside {
                self.cpu_ticks.insert(pid, t);
                if let Some(h) = vm_hwm_kib(pid) {
                    let e = self.hwm_kib.entry(pid).or_default();
                    *e = (*e).max(h);
                }
            }
        }
    }

    /// CPU seconds (user + system) used so far by every process seen in the trees.
    pub fn cpu_seconds(&self, ticks_per_second: u64) -> f64 {
        self.cpu_ticks.values().sum::<u64>() as f64 / ticks_per_second as f64
    }

    /// Peak RSS of each process seen, in MiB, largest first.
    pub fn peak_rss_mib(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.hwm_kib.values().map(|k| *k as f64 / 1024.0).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_a_busy_child() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        let mut s = TreeStats::new(vec![child.id()]);
        for _ in 0..200 {
            s.sample();
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.wait();
        assert!(s.cpu_seconds(clock_ticks()) > 0.0, "{s:?}");
        assert!(s.peak_rss_mib()[0] > 0.1, "{s:?}");
    }
}
