//! A device's server side: its open `/dev/ublkcN` and its queue threads (one per queue, or
//! several per queue with per-I/O daemons).
//!
//! Built in steps so that both a fresh start (then START_DEV) and, later, user recovery (then
//! END_USER_RECOVERY) can use it: [`QueueSet::open`] opens the char device, [`QueueSet::spawn`]
//! starts a queue thread, [`QueueSet::wait_ready`] waits until every queue has fetched all its
//! tags, [`QueueSet::join`] waits for the queues to end and closes the char device.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustix::thread::CpuSet;
use ublk_uapi::{DevInfo, Params};

use crate::batch::Batching;
use crate::char_dev;
use crate::error::{Error, Result, Warning};
use crate::options::{MAX_BUSY_POLL, QueueOptions};
use crate::queue_thread::{Event, QueueSetup, run_queue};
use crate::stats::QueueStats;
use crate::target::Target;
use crate::wake::Wake;

/// The open char device and the queue threads serving it.
#[derive(Debug)]
pub(crate) struct QueueSet {
    dev_info: DevInfo,
    params: Params,
    char_dev: Option<Arc<OwnedFd>>,
    /// Makes every queue leave (or drain), without waiting for its tags to be aborted.
    wake: Arc<Wake>,
    threads: Vec<JoinHandle<()>>,
    exited: Vec<bool>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    stats: Arc<[QueueStats]>,
    first_error: Option<Error>,
}

impl QueueSet {
    /// Opens the device's char device (waiting for its node until `deadline`) and the wake
    /// eventfd, for `threads` queue threads.
    pub(crate) fn open(
        dev_info: DevInfo,
        params: Params,
        deadline: Instant,
        threads: &[u16],
    ) -> Result<Self> {
        let char_dev = char_dev::open(dev_info.dev_id, deadline)?;
        let wake = Wake::new()?;
        let (events_tx, events) = crossbeam_channel::unbounded();
        let stats = threads.iter().map(|&q| QueueStats::of_queue(q)).collect();
        Ok(QueueSet {
            dev_info,
            params,
            char_dev: Some(Arc::new(char_dev)),
            wake: Arc::new(wake),
            threads: Vec::new(),
            exited: Vec::new(),
            events_tx,
            events,
            stats,
            first_error: None,
        })
    }

    /// Starts the next thread: of queue `q`, the one of rank `rank` among `threads`, pinned to
    /// `cpus` (if any), run as `options` say and batching as `batching` says.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn<T: Target>(
        &mut self,
        target: &Arc<T>,
        (q, rank, threads): (u16, u16, u16),
        cpus: Option<CpuSet>,
        options: &QueueOptions,
        batching: Batching,
    ) -> Result<()> {
        let thread = self.threads.len();
        let Some(char_dev) = &self.char_dev else {
            return Err(Error::QueueExited { q });
        };
        let setup = QueueSetup {
            q_id: q,
            thread,
            rank,
            threads,
            dev_info: self.dev_info,
            params: self.params,
            char_dev: Arc::clone(char_dev),
            wake: Arc::clone(&self.wake),
            cpus,
            sched: options.sched,
            busy_poll: options.busy_poll.min(MAX_BUSY_POLL),
            batching,
            stats: Arc::clone(&self.stats),
            request_stats: options.request_stats,
        };
        let target = Arc::clone(target);
        let events = self.events_tx.clone();
        let handle = std::thread::Builder::new()
            .name(if threads == 1 {
                format!("ublk-q{}-{q}", self.dev_info.dev_id)
            } else {
                format!("ublk-q{}-{q}.{rank}", self.dev_info.dev_id)
            })
            .spawn(move || run_queue(setup, target, events))
            .map_err(|source| Error::Spawn { q, source })?;
        self.threads.push(handle);
        self.exited.push(false);
        Ok(())
    }

    /// Waits until every spawned thread has fetched all its tags; returns their warnings.
    ///
    /// # Errors
    ///
    /// The error of a queue that failed first, or [`Error::FetchTimeout`].
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<Vec<Warning>> {
        let deadline = Instant::now() + timeout;
        let mut ready = 0;
        let mut warnings = Vec::new();
        while ready < self.threads.len() {
            match self.events.recv_deadline(deadline) {
                Ok(Event::Ready { warnings: w, .. }) => {
                    ready += 1;
                    warnings.extend(w);
                }
                Ok(Event::Exited { q, thread, result }) => {
                    self.exited[thread] = true;
                    return Err(match result {
                        Err(e) => Error::Queue {
                            q,
                            source: Box::new(e),
                        },
                        Ok(()) => Error::QueueExited { q },
                    });
                }
                // We hold a sender ourselves, so the channel never disconnects: only the deadline.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(Error::FetchTimeout {
                        ready,
                        queues: self.threads.len(),
                        after: timeout,
                    });
                }
            }
        }
        Ok(warnings)
    }

    /// The queues' wake-up, for handles that outlive a borrow of the set.
    pub(crate) fn waker(&self) -> Arc<Wake> {
        Arc::clone(&self.wake)
    }

    /// Makes every queue leave at once, whatever its tags are doing.
    ///
    /// For teardown when the device is not (or no longer) able to abort the tags itself: a queue
    /// leaving with commands pending has the kernel cancel them when its ring closes.
    pub(crate) fn wake(&self) {
        self.wake.leave();
    }

    /// Waits until every queue has ended, or one of them failed; returns that failure (the other
    /// queues go on serving until told otherwise).
    pub(crate) fn wait_exit_or_failure(&mut self) -> Option<Error> {
        while self.exited.iter().any(|exited| !exited) {
            match self.events.recv() {
                Ok(Event::Exited { q, thread, result }) => {
                    self.exited[thread] = true;
                    if let Err(e) = result {
                        return Some(Error::Queue {
                            q,
                            source: Box::new(e),
                        });
                    }
                }
                Ok(Event::Ready { .. }) => {}
                // Unreachable while we hold a sender; nothing more to hear if it happens.
                Err(_) => break,
            }
        }
        None
    }

    /// Waits for every queue thread to end. The char device stays open until
    /// [`close`](Self::close): while it is, the kernel cannot give the device's id to a new
    /// device, so a delete by id cannot hit someone else's.
    ///
    /// # Errors
    ///
    /// The first queue error, in the order the queues reported them (reported once).
    pub(crate) fn join(&mut self) -> Result<()> {
        while self.exited.iter().any(|exited| !exited) {
            match self.events.recv() {
                Ok(Event::Exited { q, thread, result }) => {
                    self.exited[thread] = true;
                    if let Err(e) = result {
                        self.first_error.get_or_insert(Error::Queue {
                            q,
                            source: Box::new(e),
                        });
                    }
                }
                Ok(Event::Ready { .. }) => {}
                // Unreachable while we hold a sender; nothing more to hear if it happens.
                Err(_) => break,
            }
        }
        for thread in self.threads.drain(..) {
            // A panic was already reported through the queue's exit event.
            let _ = thread.join();
        }
        match self.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Closes the char device (after [`join`](Self::join)): the device's id may be reused once
    /// it is deleted and closed.
    pub(crate) fn close(&mut self) {
        self.char_dev = None;
    }

    /// Each thread's counters.
    pub(crate) fn stats(&self) -> &Arc<[QueueStats]> {
        &self.stats
    }
}
