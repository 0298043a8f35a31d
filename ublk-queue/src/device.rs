//! A device that exists but is not serving yet: [`DeviceBuilder::add`](crate::DeviceBuilder::add)
//! makes one, [`Device::serve`] brings it live.

use ublk_uapi::{DevInfo, Params};

use crate::error::Result;
use crate::server::Server;
use crate::serving::Serving;
use crate::target::Target;

/// A created device that is not serving yet. Dropping it deletes it.
#[derive(Debug)]
pub struct Device {
    // `None` once `serve` or `delete` took it over.
    server: Option<Server>,
}

impl Device {
    pub(crate) fn new(server: Server) -> Self {
        Device {
            server: Some(server),
        }
    }

    fn server(&self) -> &Server {
        self.server
            .as_ref()
            .expect("a Device always has its server until it is consumed")
    }

    /// The device id: `N` in `/dev/ublkbN` and `/dev/ublkcN`.
    pub fn id(&self) -> u32 {
        self.server().id()
    }

    /// The device as the kernel created it (queues clamped to the CPU count, negotiated features).
    pub fn info(&self) -> &DevInfo {
        &self.server().info
    }

    /// The parameters the device was given.
    pub fn params(&self) -> &Params {
        &self.server().params
    }

    /// Starts serving with `target`: opens `/dev/ublkcN`, starts one thread per queue, waits until
    /// every queue has fetched all its tags, then START_DEV, which adds `/dev/ublkbN`.
    ///
    /// # Errors
    ///
    /// Any failure on the way; the device is then torn down (queues stopped and joined, the device
    /// deleted) before the error returns: no half-created device is left behind.
    pub fn serve<T: Target>(mut self, target: T) -> Result<Serving> {
        let server = self
            .server
            .take()
            .expect("a Device always has its server until it is consumed");
        let mut warnings = Vec::new();
        let mut queues = match server.start_queues(target, &mut warnings) {
            Ok(queues) => queues,
            Err(e) => {
                let _ = server.ctrl.delete(server.id());
                return Err(e);
            }
        };
        let pid = rustix::process::getpid();
        if let Err(e) = server.ctrl.with(|c| c.start_dev(server.id(), pid)) {
            let _ = server.shutdown(&mut queues);
            return Err(e.into());
        }
        Ok(Serving {
            server,
            queues,
            warnings,
            finished: false,
        })
    }

    /// Deletes the device (DEL_DEV), reporting the error that dropping it would ignore.
    ///
    /// # Errors
    ///
    /// The control error; a device someone already deleted is not an error.
    pub fn delete(mut self) -> Result<()> {
        match self.server.take() {
            Some(server) => server.ctrl.delete(server.id()),
            None => Ok(()),
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.ctrl.delete(server.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_cross_threads() {
        fn send<T: Send>() {}
        send::<Device>();
    }
}
