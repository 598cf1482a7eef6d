//! mqtt_workers/broker.rs — the embedded broker: rumqttd in a process of its own.
//!
//! Demonstrates: rumqttd's `Broker::new` and `start()` spawn a router thread and a thread
//! per listener, each with a tokio runtime; so the master forks the broker's process
//! before anything in it starts a thread, and never runs the broker itself.
//! Run:     cargo run -p mqtt_workers          (then `ps -L -p <broker pid>`: its threads)
//! Observe: the `broker` event: its pid and address; `ps -L` shows its threads.
//! Book:    book/src/patterns/mqtt_workers.md

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, Strategy};

// ANCHOR: config
/// The broker's configuration, built in code: one MQTT 3.1.1 (v4) listener on `listen`,
/// shared subscriptions handed out round robin, nothing kept on disk.
pub fn config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 20 * 1024,
        max_inflight_count: 100, // messages sent to a client before it must acknowledge
        auth: None,
        external_auth: None,
        dynamic_filters: true, // a client may subscribe to any filter
    };
    let listener = ServerSettings {
        name: "v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        max_connections: 100,
        max_outgoing_packet_count: 200,
        max_segment_size: 1024 * 1024,
        max_segment_count: 4, // the router's log lives in memory: no persistence file
        shared_subscriptions_strategy: Strategy::RoundRobin,
        ..RouterConfig::default()
    };
    Config {
        router,
        v4: Some(HashMap::from([("v4".to_owned(), listener)])),
        ..Config::default()
    }
}
// ANCHOR_END: config

/// The broker's process: start rumqttd and serve until killed. `start()` blocks for ever
/// (its listener threads do the work); it returns only if a listener failed.
pub fn serve(listen: SocketAddr) -> anyhow::Result<i32> {
    let mut broker = Broker::new(config(listen)); // the router thread starts here
    broker
        .start()
        .with_context(|| format!("rumqttd on {listen}"))?;
    Ok(0)
}

/// A port of 127.0.0.1 that was free a moment ago: bind port 0, read the port the kernel
/// chose, close. (Another program could take it in between; then the broker fails to bind
/// and the demo says so.)
pub fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    listener.local_addr().context("getsockname")
}
