//! CPU time and resident memory of the processes a case involves: `getrusage` for the
//! harness itself (load generator, app, and for in-process cases the client and server),
//! `/proc/<pid>/stat` and `/proc/<pid>/status` for proxy processes.

use std::io;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

/// User + system CPU time of this process, all threads.
pub fn self_cpu() -> io::Result<Duration> {
    let u = getrusage(UsageWho::RUSAGE_SELF).map_err(io::Error::from)?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(tv(u.user_time()) + tv(u.system_time()))
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t.max(1) as u64)
}

/// User + system CPU time of process `pid`, all threads (clock-tick resolution).
pub fn pid_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&stat, clock_ticks())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat format"))
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name is in parentheses and may
/// hold spaces, so fields are counted after the last `)`.
fn parse_stat_cpu(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (field 3) ... utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_sec))
}

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn pid_rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Voluntary context switches of every thread of `pid` so far: each is a thread going to
/// sleep, so their growth over an idle window counts the process's wake-ups.
pub fn pid_wakeups(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may exit between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        total += parse_voluntary_switches(&status).unwrap_or(0);
    }
    Ok(total)
}

fn parse_voluntary_switches(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time spent by this process and `pids` between [`CpuMeter::start`] and
/// [`CpuMeter::stop`].
#[derive(Debug)]
pub struct CpuMeter {
    pids: Vec<u32>,
    start_self: Duration,
    start_pids: Vec<Duration>,
}

impl CpuMeter {
    /// Reads the counters now.
    pub fn start(pids: &[u32]) -> io::Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            start_self: self_cpu()?,
            start_pids: pids
                .iter()
                .map(|&p| pid_cpu(p))
                .collect::<io::Result<_>>()?,
        })
    }

    /// CPU time since `start`: (this process, the other processes together).
    pub fn stop(&self) -> io::Result<(Duration, Duration)> {
        let own = self_cpu()?.saturating_sub(self.start_self);
        let mut others = Duration::ZERO;
        for (pid, start) in self.pids.iter().zip(&self.start_pids) {
            others += pid_cpu(*pid)?.saturating_sub(*start);
        }
        Ok((own, others))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(line, 100), Some(Duration::from_millis(3000)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tenvoy\nVmPeak:\t 100 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn wakeups_are_voluntary_switches_of_all_threads() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_voluntary_switches(status), Some(42));
        let me = std::process::id();
        let before = pid_wakeups(me).unwrap();
        std::thread::spawn(|| std::thread::sleep(Duration::from_millis(5)))
            .join()
            .unwrap();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(pid_wakeups(me).unwrap() >= before + 3);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = self_cpu().unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(self_cpu().unwrap() > before);
        // And this process can read its own /proc entries.
        assert!(pid_rss(std::process::id()).unwrap() > 0);
        pid_cpu(std::process::id()).unwrap();
    }
}
