//! What a server holds of its device, and the two steps every start and stop goes through:
//! starting the queues (for START_DEV or END_USER_RECOVERY) and shutting them down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::thread::CpuSet;
use ublk_uapi::{DevInfo, Params};

use crate::ctrl::SharedCtrl;
use crate::error::{Result, Warning};
use crate::options::{Affinity, QueueOptions};
use crate::queue_set::QueueSet;
use crate::target::Target;

/// A device as its server holds it, whether serving or not: the control handle, what the kernel
/// said about the device, and how its queues are to run.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) ctrl: Arc<SharedCtrl>,
    pub(crate) info: DevInfo,
    pub(crate) params: Params,
    pub(crate) options: QueueOptions,
    /// The deadline of each control command and of the queues' start.
    pub(crate) timeout: Duration,
}

impl Server {
    pub(crate) fn id(&self) -> u32 {
        self.info.dev_id
    }

    /// Each queue's CPU set, as the affinity policy says.
    fn queue_cpus(&self, warnings: &mut Vec<Warning>) -> Vec<Option<CpuSet>> {
        (0..self.info.nr_hw_queues)
            .map(|q| match self.options.affinity {
                Affinity::None => None,
                Affinity::Kernel => match self.ctrl.with(|c| c.queue_affinity(self.id(), q)) {
                    Ok(cpus) => Some(cpus),
                    Err(e) => {
                        warnings.push(Warning::AffinityUnknown {
                            q,
                            reason: e.to_string(),
                        });
                        None
                    }
                },
            })
            .collect()
    }

    /// Opens the char device, spawns every queue and waits until all have fetched their tags.
    pub(crate) fn start_queues<T: Target>(
        &self,
        target: T,
        warnings: &mut Vec<Warning>,
    ) -> Result<QueueSet> {
        let deadline = Instant::now() + self.timeout;
        let mut queues = QueueSet::open(self.info, self.params, deadline)?;
        let batching = self.options.batching.unwrap_or_else(|| target.batching());
        let target = Arc::new(target);
        let cpus = self.queue_cpus(warnings);
        let started = cpus
            .into_iter()
            .try_for_each(|cpus| queues.spawn(&target, cpus, &self.options, batching))
            .and_then(|()| queues.wait_ready(deadline.saturating_duration_since(Instant::now())));
        match started {
            Ok(ready) => {
                warnings.extend(ready);
                Ok(queues)
            }
            Err(e) => {
                // Nothing was started: abort what was fetched, make every queue leave, close the
                // char device. The caller deletes the device.
                let _ = self.ctrl.stop(self.id());
                queues.wake();
                let _ = queues.join();
                Err(e)
            }
        }
    }

    /// STOP_DEV, wait for the queues, close the char device, DEL_DEV: the first error wins, queue
    /// errors first (they are the cause; the rest is cleanup).
    pub(crate) fn shutdown(&self, queues: &mut QueueSet) -> Result<()> {
        let stopped = self.ctrl.stop(self.id());
        if stopped.is_err() {
            // STOP_DEV did not abort the tags, so the queues would wait forever: make them leave.
            queues.wake();
        }
        let joined = queues.join();
        let deleted = self.ctrl.delete(self.id());
        joined.and(stopped).and(deleted)
    }
}
