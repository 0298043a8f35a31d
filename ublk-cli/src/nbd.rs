//! `ublk add nbd`: its options, the connection they describe, and its events in the log.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ublk_targets::{DEFAULT_PORT, Nbd, NbdAddress, NbdBuilder, NbdEvent};

use crate::cli::{CommonArgs, MAX_TIMEOUT_SECS};
use crate::error::CliError;

/// `ublk add nbd`'s own options.
#[derive(Debug, Args)]
pub struct NbdArgs {
    /// The server's host name or address (with --port); or give --unix.
    #[arg(
        long,
        value_name = "HOST",
        required_unless_present = "unix",
        conflicts_with = "unix"
    )]
    pub host: Option<String>,
    /// The server's TCP port.
    #[arg(long, default_value_t = DEFAULT_PORT, value_name = "PORT", conflicts_with = "unix")]
    pub port: u16,
    /// The server's unix socket, instead of --host and --port.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// The export's name (default: the server's default export).
    #[arg(
        long,
        default_value = "",
        value_name = "NAME",
        hide_default_value = true
    )]
    pub export: String,
    /// Connections to the server, the queues sharing them out (each needs one): by default one
    /// per queue if the server advertises CAN_MULTI_CONN, else one, and then only one queue.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub connections: Option<u16>,
    /// Seconds a queue may go without any connection (each lost one is made anew, its
    /// unanswered requests sent again, while I/O waits) before its I/O fails with EIO, until
    /// the server is back.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub reconnect_timeout: u64,
    /// Seconds requests may go unanswered before their connection counts as lost and is made
    /// anew.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub io_timeout: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl NbdArgs {
    /// The server's address.
    pub fn address(&self) -> NbdAddress {
        match (&self.unix, &self.host) {
            (Some(path), _) => NbdAddress::Unix(path.clone()),
            (None, host) => NbdAddress::Tcp {
                host: host.clone().unwrap_or_default(),
                port: self.port,
            },
        }
    }

    /// Connects, as the options say, with the events going to the log.
    pub fn connect(&self) -> Result<Nbd, CliError> {
        let mut builder = NbdBuilder::new(self.address())
            .export(self.export.clone())
            .queues(self.common.queues)
            .reconnect_timeout(Duration::from_secs(self.reconnect_timeout))
            .io_timeout(Duration::from_secs(self.io_timeout))
            .on_event(log_event);
        if let Some(n) = self.connections {
            builder = builder.connections(n);
        }
        // 512, the default, is also the least: it asks for nothing, and the export's own
        // minimum block size is used.
        if self.common.block_size != 512 {
            builder = builder.block_size(self.common.block_size);
        }
        Ok(builder.connect()?)
    }
}

/// An event of a serving NBD device, in the server log at its weight.
fn log_event(event: &NbdEvent) {
    match event {
        NbdEvent::ServerMisbehaved { .. } | NbdEvent::GaveUp { .. } => log::error!("nbd: {event}"),
        NbdEvent::ConnectionLost { .. } => log::warn!("nbd: {event}"),
        NbdEvent::ReconnectFailed { attempt: 1, .. } => log::warn!("nbd: {event}"),
        NbdEvent::ReconnectFailed { .. } => log::debug!("nbd: {event}"),
        _ => log::info!("nbd: {event}"),
    }
}
