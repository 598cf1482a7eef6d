//! options — prefork's command line: the server's options, the load, `prefork client`.
//!
//! Demonstrates: nothing of the kernel; what a reader of the other files may vary: the
//! workers, the dispatch mode, the grace of a stop, the load of a self-test or a client.
//! Run:     cargo run --bin prefork -- --help          (and `-- client --help`)
//! Observe: out-of-range values and load options without --self-test are usage errors.
//! Book:    book/src/patterns/prefork.md

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use proclab::cli;
use serde::Serialize;

/// The load options need a client to send them (--self-test's, or `prefork client`).
pub fn require_self_test_for_load(server: &Server) {
    if server.self_test {
        return;
    }
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    let load = <Load as clap::Args>::augment_args(clap::Command::new("load"));
    let given = load.get_arguments().any(|option| {
        matches.value_source(option.get_id().as_str())
            == Some(clap::parser::ValueSource::CommandLine)
    });
    if given {
        cli::usage_error(
            "the load options need --self-test (or send the load with `prefork client`)",
        );
    }
}

// ANCHOR: dispatch_modes
#[derive(Clone, Copy, PartialEq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dispatch {
    /// Every worker calls accept() on the shared listening socket; the kernel picks one.
    SharedAccept,
    /// The master accepts and passes each connection to the next worker in turn.
    RoundRobin,
    /// The master accepts and passes each connection to the worker with the fewest.
    LeastLoaded,
}
// ANCHOR_END: dispatch_modes

impl Dispatch {
    pub fn name(self) -> &'static str {
        match self {
            Dispatch::SharedAccept => "shared-accept",
            Dispatch::RoundRobin => "round-robin",
            Dispatch::LeastLoaded => "least-loaded",
        }
    }
}

/// What load to send.
#[derive(clap::Args, Clone, Debug)]
pub struct Load {
    /// Concurrent connections: client threads, each with one request in flight (1-256).
    #[arg(long, value_name = "C", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub connections: u64,

    /// Requests in all, one per connection, spread over the C threads (1-1000000).
    #[arg(long, value_name = "R", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub requests: u64,

    /// Ask the worker to take MS milliseconds over each request (SLOW; 0-60000).
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub slow_ms: u64,

    /// With --slow-ms: only every Nth request of each thread is slow (1-1000000).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub slow_every: u64,

    /// How many times a request whose connection failed is tried again (0-1000).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub retries: u32,

    /// Also hold N connections that send nothing, reopened when dropped (0-256).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=256))]
    pub idle: u64,
}

#[derive(clap::Args)]
pub struct ClientArgs {
    /// The server's port, as it printed it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    #[command(flatten)]
    pub load: Load,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Send tagged requests to a running prefork server from C connections at a time;
    /// report requests/s and latency, and check that every request got exactly one reply,
    /// its own. Exit status 1 if one did not.
    Client(ClientArgs),
}

#[derive(clap::Args)]
pub struct Server {
    /// The TCP port to listen on, on 127.0.0.1 (0: any free port, printed at start).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// Worker processes (1-64).
    #[arg(long, value_name = "W", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: u64,

    /// How connections reach the workers.
    #[arg(long, value_enum, default_value_t = Dispatch::SharedAccept)]
    pub dispatch: Dispatch,

    /// After SIGTERM or Ctrl-C, how long requests in flight may take to finish (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "5",
          value_parser = cli::seconds_up_to(3600.0))]
    pub grace: Duration,

    /// No TCP_DEFER_ACCEPT, and a worker waits 5 s for a request's first byte, not 0.2 s.
    #[arg(long)]
    pub no_idle_defence: bool,

    /// Serve for this long (more than 0, at most 3600 s), then stop as SIGTERM would
    /// (default: until stopped, or until stdout is closed).
    #[arg(long, value_name = "SECONDS", value_parser = cli::positive_seconds)]
    pub seconds: Option<Duration>,

    /// Once the workers are ready, fork a client that sends the load below, then stop
    /// gracefully and report both sides.
    #[arg(long, conflicts_with = "seconds")]
    pub self_test: bool,

    /// Workers exit with status 3 before they are ready (to show backoff, then giving up).
    #[arg(long)]
    pub crash_at_start: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    pub json: bool,

    #[command(
        flatten,
        next_help_heading = "Load (with --self-test; or `prefork client`)"
    )]
    pub load: Load,
}

/// A TCP server on 127.0.0.1 with pre-forked workers, a shared scoreboard, respawn,
/// graceful shutdown and rolling restart — and `prefork client`, its load generator.
///
/// The master binds the port, forks --workers W, and supervises them. It speaks HTTP/1.1,
/// one request per connection (`Connection: close`): `GET /echo/<tag>` (the reply names
/// the worker), `GET /slow/<ms>/<tag>`, `GET /status` (the scoreboard, as JSON).
/// SIGTERM or Ctrl-C: graceful stop within --grace; a second Ctrl-C: stop now; SIGHUP:
/// replace the workers one at a time; a closed stdout: stop gracefully.
#[derive(Parser)]
#[command(args_conflicts_with_subcommands = true, after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub server: Server,
}

/// The examples at the end of --help, each with what it shows (tests/prefork.rs runs them).
const EXAMPLES: &str = "Examples:
  prefork --self-test
      2000 requests from 8 connections, each answered exactly once, by its own reply
  prefork --self-test --dispatch round-robin
      the master passes the connections in turn: 500 to each of the 4 workers
  prefork --self-test --dispatch least-loaded --slow-ms 20 --slow-every 10
      one request in 10 takes 20 ms: the p99 latency is 20 ms or more
  prefork --self-test --idle 8 --requests 500
      8 connections that send nothing beside the load: the idle defence keeps it under 2 s
  prefork --self-test --workers 2 --idle 2 --requests 2 --no-idle-defence
      without the defence, 2 idle connections hold both workers for their 5 s deadline
  prefork --port 8080 --workers 4
      serve until Ctrl-C (or SIGTERM); then, from another terminal:
  prefork client --port 8080 --connections 8 --requests 2000
      the same load from outside; exit status 1 if a reply was wrong or missing
  curl -i 127.0.0.1:8080/echo/hello
      HTTP/1.1 200 OK, Content-Length, Connection: close; the body names the worker
  curl 127.0.0.1:8080/status
      the scoreboard, as JSON: one row per worker
  wrk -t 2 -c 8 -d 2s http://127.0.0.1:8080/echo/x
      requests/s from an HTTP load tool (Debian: apt-get install wrk)";
