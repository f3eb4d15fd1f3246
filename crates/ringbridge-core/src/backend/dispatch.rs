//! The kernel side of the protocol (spec §5, K1–K7): poll input, run the handler, push replies,
//! publish, honour commands. The CPU backend runs this loop on a thread; `kernels/` is the same
//! loop in CUDA C.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::handlers::{Handler, Outcome};
use crate::protocol::{
    kernel_error, ControlBlock, ErrorRecord, FrameHeader, KernelState, FLAG_ERROR, TERMINATE_ABANDON, TERMINATE_DRAIN, TERMINATE_NONE,
};
use crate::ring::{Consumer, PopError, Producer, RingMemory};
use crate::sync::{fence, Ordering};

/// What the loop needs from its backend: a clock, a way to wait, a way to wake the host.
pub trait KernelHooks {
    /// Kernel clock in nanoseconds (for `last_activity`).
    fn now_ns(&self) -> u64;
    /// Nothing to do: wait a little. `ready` re-checks the awaited condition with SeqCst loads
    /// and must be called after announcing sleep (spec §8).
    fn idle(&mut self, cb: &ControlBlock, ready: &mut dyn FnMut() -> bool);
    /// Work was found; the next `idle` starts its back-off from scratch.
    fn busy(&mut self);
    /// Rings the host's doorbell.
    fn notify_host(&self);
    /// After a publish that moved the output tail (`output`) or the input head (`input`), past
    /// the SeqCst fence of K7: a route's neighbours may need waking (spec §14).
    fn published(&self, _output: bool, _input: bool) {}
}

/// Runs the dispatch loop until `terminate` says stop (spec §9). Returns the messages processed.
pub fn run<I: RingMemory, O: RingMemory>(
    cb: &ControlBlock,
    mut input: Consumer<I>,
    mut output: Producer<O>,
    handler: &mut dyn Handler,
    hooks: &mut dyn KernelHooks,
    max_batch: u64,
) -> u64 {
    let mut processed = cb.messages_processed.load(Ordering::Relaxed);
    let mut state = KernelState::Running;
    set_state(cb, hooks, state);
    'dispatch: loop {
        // ORDERING: (K1) acquire pairs with the host's release of terminate (H5), which follows
        // its last publish of input.tail: a drain sees every message sent before it.
        let terminate = command(cb.terminate.load(Ordering::Acquire));
        if terminate == TERMINATE_ABANDON {
            break;
        }
        // A terminate command overrides pause: drain finishes the ring, abandon exits above.
        if cb.active.load(Ordering::Acquire) == 0 && terminate == TERMINATE_NONE {
            if state != KernelState::Paused {
                state = KernelState::Paused;
                set_state(cb, hooks, state);
            }
            hooks.idle(cb, &mut || cb.active.load(Ordering::SeqCst) != 0 || command(cb.terminate.load(Ordering::SeqCst)) != TERMINATE_NONE);
            continue;
        }
        if state != KernelState::Running {
            state = KernelState::Running;
            set_state(cb, hooks, state);
        }
        let n = input.available(max_batch).min(max_batch);
        if n == 0 {
            if terminate == TERMINATE_DRAIN {
                break;
            }
            let head = input.memory().head().load(Ordering::Relaxed);
            let tail = input.memory().tail();
            hooks.idle(cb, &mut || {
                tail.load(Ordering::SeqCst) != head
                    || command(cb.terminate.load(Ordering::SeqCst)) != TERMINATE_NONE
                    || cb.active.load(Ordering::SeqCst) == 0
            });
            continue;
        }
        hooks.busy();
        let mut done = 0;
        while done < n {
            if output.free_slots(1) == 0 {
                // K4: hand the host what we have so it can drain, then wait for room.
                publish(cb, &mut input, &mut output, hooks);
                let head = output.memory().head();
                let seen = head.load(Ordering::Relaxed);
                hooks.idle(cb, &mut || {
                    head.load(Ordering::SeqCst) != seen
                        || cb.terminate.load(Ordering::SeqCst) == TERMINATE_ABANDON
                        || cb.active.load(Ordering::SeqCst) == 0
                });
                if cb.active.load(Ordering::Acquire) == 0 && command(cb.terminate.load(Ordering::Acquire)) == TERMINATE_NONE {
                    // K4: a pause while stalled on a full output ring takes effect now; the
                    // rest of the batch stays in the input ring (K2 parks the kernel).
                    break;
                }
                if cb.terminate.load(Ordering::Acquire) == TERMINATE_ABANDON {
                    // Count the part of the batch already handled before leaving.
                    processed = processed.wrapping_add(done);
                    cb.messages_processed.store(processed, Ordering::Relaxed);
                    break 'dispatch;
                }
                continue;
            }
            dispatch_one(cb, &mut input, &mut output, handler);
            done += 1;
        }
        // Wrapping: the count resumes from the control block, which a buggy host may have
        // scribbled on; a statistic must not panic the kernel.
        processed = processed.wrapping_add(done);
        // Relaxed: statistics; the single writer is this loop.
        cb.messages_processed.store(processed, Ordering::Relaxed);
        cb.last_activity.store(hooks.now_ns(), Ordering::Relaxed);
        publish(cb, &mut input, &mut output, hooks);
    }
    publish(cb, &mut input, &mut output, hooks);
    set_state(cb, hooks, KernelState::Terminated);
    processed
}

/// K3: consumes one input frame and stages its reply or error frame (one output slot is free).
fn dispatch_one<I: RingMemory, O: RingMemory>(
    cb: &ControlBlock,
    input: &mut Consumer<I>,
    output: &mut Producer<O>,
    handler: &mut dyn Handler,
) {
    let popped = input.pop_with(|header, payload| {
        output.stage_with(|area| {
            let outcome = if header.flags & FLAG_ERROR != 0 {
                // §3.4: an earlier stage's error frame (a route) is forwarded unchanged, so the
                // host sees the first failure under its correlation_id (I6: one frame out).
                if payload.len() <= area.len() {
                    area[..payload.len()].copy_from_slice(payload);
                    return Some(header);
                }
                Outcome::Reply { type_id: header.type_id, length: header.length }
            } else {
                catch_unwind(AssertUnwindSafe(|| handler.handle(&header, payload, area)))
                    .unwrap_or(Outcome::Error { code: kernel_error::HANDLER_FAULT, detail: 0 })
            };
            let outcome = match outcome {
                Outcome::Reply { length, .. } if length as usize > area.len() => {
                    Outcome::Error { code: kernel_error::REPLY_TOO_LARGE, detail: length }
                }
                other => other,
            };
            match outcome {
                Outcome::Reply { type_id, length } => {
                    Some(FrameHeader { length, type_id, flags: 0, correlation_id: header.correlation_id })
                }
                Outcome::Error { code, detail } => {
                    record_error(cb, code);
                    area[..ErrorRecord::BYTES].copy_from_slice(&ErrorRecord { code, detail }.to_bytes());
                    Some(FrameHeader {
                        length: ErrorRecord::BYTES as u32,
                        type_id: header.type_id,
                        flags: FLAG_ERROR,
                        correlation_id: header.correlation_id,
                    })
                }
                Outcome::NoReply => None,
            }
        })
    });
    match popped {
        Ok(staged) => debug_assert!(staged.is_ok(), "a free output slot was checked before dispatch"),
        // K3: every input frame gets exactly one output frame (I6), a corrupt one an error frame
        // carrying whatever ids its header holds.
        Err(PopError::BadFrame { header, .. }) => {
            record_error(cb, kernel_error::BAD_FRAME);
            let staged = output.stage_with(|area| {
                let record = ErrorRecord { code: kernel_error::BAD_FRAME, detail: header.length };
                area[..ErrorRecord::BYTES].copy_from_slice(&record.to_bytes());
                Some(FrameHeader {
                    length: ErrorRecord::BYTES as u32,
                    type_id: header.type_id,
                    flags: FLAG_ERROR,
                    correlation_id: header.correlation_id,
                })
            });
            debug_assert!(staged.is_ok(), "a free output slot was checked before dispatch");
        }
        Err(PopError::Empty) => debug_assert!(false, "available() counted this frame"),
    }
}

/// The command a `terminate` word holds: DRAIN or ABANDON, anything else is NONE (spec §9). A
/// stray value (a buggy host's store) must neither stop the kernel nor count as a command the
/// idle re-checks wake for: the fuzzer's `terminate = 7` had the kernel spin at full speed,
/// never parking and never exiting.
fn command(word: u32) -> u32 {
    match word {
        TERMINATE_DRAIN | TERMINATE_ABANDON => word,
        _ => TERMINATE_NONE,
    }
}

/// K5–K7: publish replies, release inputs, ring the host's doorbell if it sleeps.
fn publish<I: RingMemory, O: RingMemory>(
    cb: &ControlBlock,
    input: &mut Consumer<I>,
    output: &mut Producer<O>,
    hooks: &mut dyn KernelHooks,
) {
    let (out_moved, in_moved) = (output.staged() > 0, input.unreleased() > 0);
    output.publish();
    input.release();
    if out_moved || in_moved {
        // ORDERING: (K7) SeqCst fence between our index stores and the load of host_waiting;
        // pairs with the host's SeqCst store of host_waiting and re-check of the index (H7).
        fence(Ordering::SeqCst);
        if cb.host_waiting.load(Ordering::Relaxed) != 0 {
            hooks.notify_host();
        }
        hooks.published(out_moved, in_moved);
    }
}

fn set_state(cb: &ControlBlock, hooks: &mut dyn KernelHooks, state: KernelState) {
    // ORDERING: (K8) release: the host that acquires `state` sees every index and counter
    // written before the change (Terminated in particular is final).
    cb.state.store(state as u32, Ordering::Release);
    fence(Ordering::SeqCst);
    hooks.notify_host();
}

/// Records a kernel-level error: the first code wins, every one is counted. The kernel is the
/// only writer of both words, so load-then-store is not a lost update.
pub fn record_error(cb: &ControlBlock, code: u32) {
    if cb.error_code.load(Ordering::Relaxed) == kernel_error::NONE {
        cb.error_code.store(code, Ordering::Relaxed);
    }
    let count = cb.error_count.load(Ordering::Relaxed);
    cb.error_count.store(count.wrapping_add(1), Ordering::Release);
}
