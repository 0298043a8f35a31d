//! What a server holds of its device, and the two steps every start and stop goes through:
//! starting the queues (for START_DEV or END_USER_RECOVERY) and shutting them down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::thread::CpuSet;
use ublk_uapi::{DevInfo, DevState, Features, Params};

use crate::buffer_mode::BufferMode;
use crate::command_mode::CommandMode;
use crate::ctrl::SharedCtrl;
use crate::error::{Error, Result, Warning};
use crate::options::{Affinity, QueueOptions};
use crate::queue_set::QueueSet;
use crate::target::{ONE_THREAD_PER_QUEUE, Target};

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
        let mode = BufferMode::of(self.info.features());
        if mode.keeps_data_in_kernel() && target.needs_memory() {
            return Err(Error::TargetNeedsMemory { mode });
        }
        let plan = self.thread_plan()?;
        let queues = self.info.nr_hw_queues;
        if plan.len() > usize::from(queues) && !target.per_io_daemons() {
            return Err(Error::InvalidThreads {
                threads: plan.len() as u16,
                queues,
                reason: ONE_THREAD_PER_QUEUE,
            });
        }
        let deadline = Instant::now() + self.timeout;
        let threads: Vec<u16> = plan.iter().map(|&(q, _, _)| q).collect();
        let mut queues = QueueSet::open(self.info, self.params, deadline, &threads)?;
        let batching = self.options.batching.unwrap_or_else(|| target.batching());
        let target = Arc::new(target);
        let cpus = self.queue_cpus(warnings);
        let started = plan
            .into_iter()
            .try_for_each(|thread| {
                let cpus = cpus[usize::from(thread.0)];
                queues.spawn(&target, thread, cpus, &self.options, batching)
            })
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
                queues.close();
                Err(e)
            }
        }
    }

    /// Which thread serves which tags, checked against what the device allows.
    fn thread_plan(&self) -> Result<Vec<(u16, u16, u16)>> {
        let (queues, depth) = (self.info.nr_hw_queues, self.info.queue_depth);
        let plan = self.options.thread_plan(queues, depth)?;
        if plan.len() > usize::from(queues) {
            let features = self.info.features();
            let invalid = |reason| Error::InvalidThreads {
                threads: plan.len() as u16,
                queues,
                reason,
            };
            if CommandMode::of(features) == CommandMode::Batch {
                return Err(invalid(
                    "a batch I/O device serves each queue from one thread (the kernel hands any \
                     tag to any fetch); create it with per-tag commands for more threads",
                ));
            }
            if !features.contains(Features::PER_IO_DAEMON) {
                return Err(invalid(
                    "more threads than queues needs per-I/O daemons (PER_IO_DAEMON, Linux 6.16), \
                     which this kernel does not have",
                ));
            }
        }
        Ok(plan)
    }

    /// STOP_DEV, wait for the queues, DEL_DEV, close the char device: the first error wins,
    /// queue errors first (they are the cause; the rest is cleanup).
    pub(crate) fn shutdown(&self, queues: &mut QueueSet) -> Result<()> {
        let stopped = self.ctrl.stop(self.id());
        if stopped.is_err() {
            // STOP_DEV did not abort the tags, so the queues would wait forever: make them leave.
            queues.wake();
        }
        let joined = queues.join();
        let deleted = self.delete(queues);
        joined.and(stopped).and(deleted)
    }

    /// DEL_DEV, then closes the char device (see [`SharedCtrl::delete_then`] for why in that
    /// order). The queues must have ended.
    pub(crate) fn delete(&self, queues: &mut QueueSet) -> Result<()> {
        self.ctrl.delete_then(self.id(), || queues.close())
    }

    /// Polls GET_DEV_INFO, with a short backoff, until `done` says so or `deadline` passes:
    /// recovery has no event for a device's state changes or its char device's release.
    ///
    /// # Errors
    ///
    /// `done`'s error, the control error, or [`Error::RecoveryTimeout`] at the deadline.
    pub(crate) fn poll_info(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&DevInfo) -> Result<bool>,
    ) -> Result<()> {
        let id = self.id();
        let mut backoff = Duration::from_millis(1);
        loop {
            let info = self.ctrl.with(|c| c.dev_info(id))?;
            if done(&info)? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::RecoveryTimeout {
                    dev_id: id,
                    state: state_name(info.state),
                    hint: timeout_hint(info.state()),
                    after: self.timeout,
                });
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The longest pause between two polls of the device's state.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// The kernel's name for a device state (`UBLK_S_DEV_*`).
pub(crate) fn state_name(state: u16) -> &'static str {
    match DevState::try_from(state) {
        Ok(DevState::Dead) => "DEAD",
        Ok(DevState::Live) => "LIVE",
        Ok(DevState::Quiesced) => "QUIESCED",
        Ok(DevState::FailIo) => "FAIL_IO",
        Ok(_) | Err(_) => "in an unknown state",
    }
}

/// Why a device may still not be recoverable at the deadline.
fn timeout_hint(state: Result<DevState, u16>) -> &'static str {
    match state {
        Ok(DevState::Live) => {
            "the kernel has not noticed its server's exit: if every tag was in the server's hands, \
             it does at the request timeout (30 s by default); allow a longer deadline"
        }
        Ok(DevState::Quiesced | DevState::FailIo) => {
            "its old server still holds /dev/ublkcN open: is a process of the old server (or a \
             child that inherited the descriptor) still alive?"
        }
        _ => "",
    }
}
