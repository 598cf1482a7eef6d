//! mqtt_workers/desk.rs — the master's MQTT client, in a process of its own, spoken to
//! over two pipes.
//!
//! Demonstrates: an MQTT client brings threads (rumqttc runs a tokio runtime; the desk
//! adds a thread to forward what arrives), and a process with threads must not fork. So
//! the master keeps no client: it forks this "desk" once, writes it a line per message
//! to publish and reads a line per message received — and stays single-threaded for
//! every fork and respawn that follows.
//! Run:     cargo run -p mqtt_workers          (then `ps -L -p <desk pid>`)
//! Observe: the `desk` event; `ls -l /proc/<desk pid>/fd`: two pipes and one socket.
//! Book:    book/src/patterns/mqtt_workers.md

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::unistd::{Pid, getpid, read};
use proclab::fdio::write_all;
use rumqttc::{Client, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS};

/// What the desk subscribes to for the master: results and heartbeats.
const FOR_THE_MASTER: [(&str, QoS); 2] = [
    ("results/+", QoS::AtLeastOnce),
    ("heartbeat/+", QoS::AtMostOnce),
];

// ANCHOR: desk
/// The desk's process: one line from the master (`TOPIC PAYLOAD`) is one publish at QoS 1;
/// one message from the broker is one line to the master. The first line up is
/// `connected`, once the subscriptions are acknowledged; EOF from the master ends it.
pub fn serve(broker: (String, u16), commands: OwnedFd, up: OwnedFd) -> anyhow::Result<i32> {
    let mut options = MqttOptions::new(format!("master-{}", getpid()), broker.0, broker.1);
    options.set_clean_session(true);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 256);
    for (filter, qos) in FOR_THE_MASTER {
        client.subscribe(filter, qos)?;
    }
    // The desk may have threads: it never forks. This one drives the connection.
    let forwarder = std::thread::spawn(move || {
        if let Err(error) = forward(&mut connection, &up) {
            let _ = write_all(&up, format!("error {error:#}\n").as_bytes());
            // SAFETY: ends the desk's process at once; the master sees EOF and the exit.
            unsafe { libc::_exit(1) }
        }
    });
    for line in BufReader::new(File::from(commands)).lines() {
        let line = line.context("read from the master")?;
        let (topic, payload) = line.split_once(' ').context("a line is TOPIC PAYLOAD")?;
        client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())?;
    }
    client.disconnect()?; // EOF: the master is done; the forwarder's loop ends
    let _ = forwarder.join();
    Ok(0)
}
// ANCHOR_END: desk

/// Drives the connection and writes each message received as one line to the master.
fn forward(connection: &mut rumqttc::Connection, up: &OwnedFd) -> anyhow::Result<()> {
    let mut acknowledged = 0;
    let mut refused = 0;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                acknowledged += 1;
                if acknowledged == FOR_THE_MASTER.len() {
                    write_all(up, b"connected\n")?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                let payload = String::from_utf8_lossy(&message.payload);
                write_all(up, format!("{} {payload}\n", message.topic).as_bytes())?;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            // The broker's process may still be binding its port: try for 5 s.
            Err(ConnectionError::Io(_)) if acknowledged == 0 && refused < 100 => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => return Err(error).context("the desk's connection to the broker"),
        }
    }
    Ok(())
}

/// The master's side of the desk: its pid, the pipe to it, the pipe from it.
pub struct Desk {
    pub pid: Pid,
    pub commands: Option<OwnedFd>,
    pub replies: OwnedFd,
    unread: Vec<u8>,
}

impl Desk {
    pub fn new(pid: Pid, commands: OwnedFd, replies: OwnedFd) -> Desk {
        let commands = Some(commands);
        let unread = Vec::new();
        Desk {
            pid,
            commands,
            replies,
            unread,
        }
    }

    /// Asks the desk to publish `payload` on `topic` at QoS 1: one line, one write.
    pub fn publish(&self, topic: &str, payload: &str) -> anyhow::Result<()> {
        let commands = self.commands.as_ref().context("the desk is closed")?;
        write_all(commands, format!("{topic} {payload}\n").as_bytes())
    }

    /// The whole lines the desk has sent so far (the replies pipe is non-blocking), and
    /// whether it has closed it (EOF: the desk ended).
    pub fn lines(&mut self) -> anyhow::Result<(Vec<String>, bool)> {
        let mut buffer = [0u8; 4096];
        let closed = loop {
            match read(self.replies.as_fd(), &mut buffer) {
                Ok(0) => break true,
                Ok(n) => self.unread.extend_from_slice(&buffer[..n]),
                Err(Errno::EAGAIN) => break false,
                Err(Errno::EINTR) => {}
                Err(error) => return Err(error).context("read from the desk"),
            }
        };
        let mut lines = Vec::new();
        while let Some(end) = self.unread.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.unread.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        Ok((lines, closed))
    }
}
