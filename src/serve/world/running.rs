//! The simulation thread's loop, under supervision: commands between steps, a frame when one is
//! due, the status four times a second. A panic or error in any of it never leaves a dead world
//! behind a live server: it is caught, every client is told the cause, and the world goes on,
//! paused, from its last good state (the newest kept frame, else a fresh universe).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Failure, Kind, World};
use crate::guard::panic_text;
use crate::kernels::EngineBackend;
use crate::serve::messages::{Outgoing, Published};
use crate::serve::{Hub, Outputs, Reply, Request};

/// When the loop last did what it does on a clock.
struct Clock {
    last_frame: Option<Instant>,
    last_status: Instant,
    steps_since_frame: u32,
}

/// Whether the loop goes on.
enum Turn {
    Continue,
    Stop,
}

impl<B: EngineBackend> World<B> {
    /// Runs until `shutdown` says or every sender is gone.
    pub(in crate::serve) fn run(mut self, requests: Receiver<Request>, outputs: Outputs, hub: Arc<Hub>) {
        let mut clock = Clock {
            last_frame: None,
            last_status: Instant::now() - Duration::from_secs(1),
            steps_since_frame: 0,
        };
        while !hub.shutdown.load(Ordering::Relaxed) {
            match catch_unwind(AssertUnwindSafe(|| self.turn(&requests, &outputs, &hub, &mut clock))) {
                Ok(Turn::Continue) => {}
                Ok(Turn::Stop) => break,
                Err(payload) => {
                    let cause = format!("the simulation failed: {}", panic_text(payload.as_ref()));
                    self.recover(&cause, &hub);
                }
            }
        }
        if let Some(training) = self.training.take() {
            training.stop_and_wait();
        }
    }

    /// One turn: the commands waiting, a step when one is due, a frame and the status when
    /// due. Waits for a command while there is nothing to do.
    fn turn(
        &mut self,
        requests: &Receiver<Request>,
        outputs: &Outputs,
        hub: &Hub,
        clock: &mut Clock,
    ) -> Turn {
        let idle = !self.stepping() && !self.dirty;
        let first = if idle {
            match requests.recv_timeout(Duration::from_millis(50)) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Turn::Stop,
            }
        } else {
            match requests.try_recv() {
                Ok(request) => Some(request),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Turn::Stop,
            }
        };
        let mut next = first;
        while let Some(request) = next {
            self.handle(request, hub);
            next = requests.try_recv().ok();
        }
        if self.stepping() {
            self.pending_steps = self.pending_steps.saturating_sub(1);
            match self.step() {
                Ok(()) => self.count_step(),
                Err(error) => self.fail(&format!("the step failed: {error}"), hub),
            }
            clock.steps_since_frame += 1;
            self.dirty = true;
        }
        let frame_due = clock.steps_since_frame >= self.steps_per_frame || !self.stepping();
        let interval = Duration::try_from_secs_f64(1.0 / self.max_fps).unwrap_or(Duration::from_secs(10));
        let on_time = clock.last_frame.is_none_or(|at| at.elapsed() >= interval);
        let watched = hub.clients.load(Ordering::Relaxed) > 0 || self.recording.is_some();
        if self.dirty && frame_due && on_time && watched {
            match self.frame() {
                Ok(frame) => {
                    let _ = outputs.frames.send(Some(Arc::new(frame)));
                }
                Err(error) => self.fail(&format!("a frame failed: {error}"), hub),
            }
            self.remember();
            clock.last_frame = Some(Instant::now());
            clock.steps_since_frame = 0;
            self.dirty = false;
        }
        if self.status_due || clock.last_status.elapsed() >= Duration::from_millis(250) {
            let _ = outputs.status.send(Some(Arc::new(Published::new(self.status(hub)))));
            clock.last_status = Instant::now();
            self.status_due = false;
        }
        Turn::Continue
    }

    /// Measures steps per second over the last two seconds of wall-clock time: everything the
    /// thread does between steps (frames, commands) counts against the rate.
    fn count_step(&mut self) {
        let now = Instant::now();
        self.rate.push_back((now, self.step_count()));
        while self.rate.front().is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(2)) {
            self.rate.pop_front();
        }
        if let (Some((first, from)), Some((last, to))) = (self.rate.front(), self.rate.back()) {
            let seconds = last.duration_since(*first).as_secs_f64();
            if seconds > 0.0 {
                self.steps_per_s = to.saturating_sub(*from) as f64 / seconds;
            }
        }
    }

    /// An error that leaves the world sound (a step or frame refused): pause, and tell every
    /// client and the status why.
    fn fail(&mut self, cause: &str, hub: &Hub) {
        tracing::error!("{cause}");
        self.running = false;
        self.interrupt_steps();
        self.last_failure = Some(Failure { error: cause.to_string(), step: Some(self.step_count()) });
        self.status_due = true;
        let _ = hub.notices.send(Outgoing::error(None, format!("{cause}; paused")).text());
    }

    /// After a panic: the world may be half-updated, so it goes on, paused, from the newest kept
    /// frame (or a fresh universe of the same settings), and every client is told.
    pub(super) fn recover(&mut self, cause: &str, hub: &Hub) {
        let restored = catch_unwind(AssertUnwindSafe(|| self.restore_last_good()));
        let from = match restored {
            Ok(Ok(from)) => from,
            Ok(Err(error)) => format!("it could not be restored ({error}) and goes on as it is"),
            Err(payload) => {
                format!("restoring it failed too ({}) and it goes on as it is", panic_text(payload.as_ref()))
            }
        };
        if let Some(recording) = self.recording.take() {
            let message = Outgoing::error(
                Some("record"),
                format!("the recording {} was cut short: {cause}", recording.name),
            );
            let _ = recording.reply.try_send(Reply::notice(message.text()));
        }
        self.dirty = true;
        self.fail(&format!("{cause}; {from}"), hub);
    }

    /// Puts back the newest kept frame, or a fresh universe; says which.
    fn restore_last_good(&mut self) -> crate::Result<String> {
        if let Kind::Dense { simulation, input, history, .. } = &mut self.kind {
            if let Some(state) = history.back().cloned() {
                let step = state.step;
                simulation.universe = state;
                simulation.last_delta = None;
                *input = None;
                return Ok(format!("the world went back to its last good state, step {step}"));
            }
        }
        self.reset(None, None, None, None)?;
        Ok("the world starts afresh with the same settings".into())
    }
}
