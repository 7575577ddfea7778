//! The standard `process_*` series (CPU, memory, file descriptors, start
//! time), read from `/proc/self` at scrape time. prometheus_client has no
//! process collector; this one needs no dependency and no unsafe code.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat` (the kernel's USER_HZ):
/// fixed at 100 on the architectures kvnode is built for (x86_64,
/// aarch64), whatever the kernel's internal HZ. Reading it would take
/// `sysconf`, an unsafe call.
const USER_HZ: f64 = 100.0;

/// What `/proc/self/stat` says about the process.
#[derive(Debug, PartialEq)]
pub struct Stat {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Start time in seconds after boot.
    pub start_after_boot: f64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted from
/// the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; utime, stime and
    // starttime are fields 14, 15 and 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |n: usize| -> Option<f64> { fields.get(n - 3)?.parse::<u64>().ok().map(|v| v as f64) };
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
        start_after_boot: field(22)? / USER_HZ,
    })
}

/// Boot time in seconds since the epoch, from `/proc/stat`'s `btime` line.
pub fn parse_boot_time(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

/// Resident set size in bytes, from `/proc/<pid>/status`'s `VmRSS` (kB).
pub fn parse_rss_bytes(text: &str) -> Option<f64> {
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some((kb * 1024) as f64)
}

/// The soft limit on open files, from `/proc/<pid>/limits`; `None` when
/// unlimited or absent.
pub fn parse_max_fds(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|v| v as f64)
}

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: Option<f64>,
    ) -> Result<(), std::fmt::Error> {
        let Some(v) = value else { return Ok(()) };
        let g = ConstGauge::new(v);
        g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = |path: &str| fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        if let Some(s) = &stat {
            let c = ConstCounter::new(s.cpu_seconds);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
        let start = stat.zip(boot).map(|(s, b)| b + s.start_after_boot);
        Self::gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the epoch in seconds",
            start,
        )?;
        Self::gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            read("/proc/self/status")
                .as_deref()
                .and_then(parse_rss_bytes),
        )?;
        let open = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        Self::gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            open,
        )?;
        Self::gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            read("/proc/self/limits").as_deref().and_then(parse_max_fds),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis must not shift the
        // fields: utime 250, stime 50 ticks, started 12345 ticks after boot.
        let text = "4242 (kv node) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 \
                    12 0 12345 123456789 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_seconds: 3.0,
                start_after_boot: 123.45,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\tkvnode\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_bytes(status), Some(2048.0 * 1024.0));
        assert_eq!(parse_rss_bytes("Name:\tkvnode\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63304                63304                processes\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(1_048_576.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1.7e9)
        );
    }

    #[test]
    fn this_process_is_read() {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for name in [
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
