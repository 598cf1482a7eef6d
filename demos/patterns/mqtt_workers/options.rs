//! mqtt_workers/options.rs — the command line: how many jobs, which broker, which hosts,
//! and the failure to provoke.
//!
//! Demonstrates: the same run against the embedded broker or a real one (`--broker`),
//! on one network or on several (`--hosts`), with or without the master's ledger.
//! Run:     cargo run -p mqtt_workers -- --help
//! Observe: the examples at the end of --help, each showing one of them.
//! Book:    book/src/patterns/mqtt_workers.md

use clap::Parser;

/// A master starts an MQTT broker, forks workers that share a topic, and proves every
/// job's effect happened exactly once.
///
/// The broker is the embedded rumqttd, run as a process of its own on a free port of
/// 127.0.0.1, or an existing one (--broker). Three workers share `sensors/+/data` through
/// the shared subscription `$share/workers/sensors/+/data` (the broker hands each job to
/// one of them, round robin); one more subscribes to `alerts/#` alone. The master
/// publishes the jobs at QoS 1, collects the results, kills workers that stop sending
/// heartbeats and forks replacements. Its ledger re-publishes jobs whose result is
/// overdue and drops duplicate results: a broker does not hand a dead member's messages
/// to another member.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  mqtt_workers\n  mqtt_workers --kill-worker-after 10\n  \
                        mqtt_workers --kill-worker-after 10 --no-ledger\n  \
                        mqtt_workers --freeze-worker-after 10\n  \
                        mqtt_workers --broker mqtt://127.0.0.1:1883\n  \
                        sudo mqtt_workers --hosts 2"
)]
pub struct Args {
    /// Jobs to publish on sensors/<n>/data (1-10000); one alert more per 10 jobs.
    #[arg(long, value_name = "J", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub jobs: u64,

    /// Use this broker instead of starting the embedded one (mqtt://HOST:PORT).
    #[arg(long, value_name = "URL", value_parser = parse_broker, conflicts_with = "hosts")]
    pub broker: Option<(String, u16)>,

    /// Put each group of workers in a network namespace of its own, a "host" joined to
    /// the broker's namespace by a bridge (1-4; needs CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4))]
    pub hosts: Option<u32>,

    /// Trust the broker alone: no re-publishing of overdue jobs, duplicates counted.
    #[arg(long)]
    pub no_ledger: bool,

    /// SIGKILL a sensors worker once this many results came in (1-10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub kill_worker_after: Option<u64>,

    /// SIGSTOP a sensors worker once this many results came in: it stops answering.
    #[arg(long, value_name = "N", conflicts_with = "kill_worker_after",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub freeze_worker_after: Option<u64>,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    pub json: bool,
}

/// `mqtt://HOST:PORT` (or `HOST:PORT`) as host and port.
fn parse_broker(text: &str) -> Result<(String, u16), String> {
    let address = text.strip_prefix("mqtt://").unwrap_or(text);
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not mqtt://HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("{text:?} is not mqtt://HOST:PORT"));
    }
    Ok((host.to_owned(), port))
}
