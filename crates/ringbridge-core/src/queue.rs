//! A bounded host-side message queue with an explicit backpressure policy. Nothing is dropped
//! silently: the dropping policies count every message they discard.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::Error;

/// What a full queue does with one more message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// The sender waits for room (bounded by its timeout).
    Block,
    /// The sender gets [`PushOutcome::Rejected`] / `ERR_RINGBRIDGE_FULL`; the message is returned.
    Reject,
    /// The oldest queued message is discarded (and counted) to make room.
    DropOldest,
    /// The new message is discarded (and counted).
    DropNewest,
}

impl Backpressure {
    /// Parses the policy names used by the JS API: `block`, `reject`, `drop-oldest`, `drop-newest`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the accepted spellings.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "block" => Ok(Self::Block),
            "reject" => Ok(Self::Reject),
            "drop-oldest" => Ok(Self::DropOldest),
            "drop-newest" => Ok(Self::DropNewest),
            other => Err(Error::InvalidConfig {
                what: format!("backpressure policy '{other}'"),
                value: None,
                expected: "one of block, reject, drop-oldest, drop-newest".into(),
            }),
        }
    }
}

/// What happened to a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome<T> {
    /// Queued.
    Queued,
    /// Queued after discarding the oldest message (returned).
    QueuedDroppedOldest(T),
    /// Discarded under `DropNewest` (returned).
    DroppedNewest(T),
    /// Refused under `Reject`, or `Block` timed out (returned).
    Rejected(T),
}

struct Inner<T> {
    items: VecDeque<T>,
    dropped: u64,
    closed: bool,
}

/// A bounded multi-producer, multi-consumer FIFO with a [`Backpressure`] policy.
pub struct MessageQueue<T> {
    capacity: usize,
    policy: Backpressure,
    inner: Mutex<Inner<T>>,
    not_full: Condvar,
    not_empty: Condvar,
}

impl<T> MessageQueue<T> {
    /// A queue holding at most `capacity` messages.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `capacity` is 0.
    pub fn new(capacity: usize, policy: Backpressure) -> Result<Self, Error> {
        if capacity == 0 {
            return Err(Error::InvalidConfig {
                what: "queue capacity".into(),
                value: None,
                expected: "at least 1".into(),
            });
        }
        Ok(Self {
            capacity,
            policy,
            inner: Mutex::new(Inner { items: VecDeque::with_capacity(capacity), dropped: 0, closed: false }),
            not_full: Condvar::new(),
            not_empty: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes `item`, applying the policy when full; `Block` waits at most `limit`.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](MessageQueue::close) (the item is dropped with the error).
    pub fn push(&self, item: T, limit: Duration) -> Result<PushOutcome<T>, Error> {
        let deadline = Instant::now() + limit;
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return Err(Error::Closed);
            }
            if inner.items.len() < self.capacity {
                inner.items.push_back(item);
                self.not_empty.notify_one();
                return Ok(PushOutcome::Queued);
            }
            match self.policy {
                Backpressure::Reject => return Ok(PushOutcome::Rejected(item)),
                Backpressure::DropNewest => {
                    inner.dropped += 1;
                    return Ok(PushOutcome::DroppedNewest(item));
                }
                Backpressure::DropOldest => {
                    let oldest = inner.items.pop_front().expect("a full queue has a front");
                    inner.dropped += 1;
                    inner.items.push_back(item);
                    self.not_empty.notify_one();
                    return Ok(PushOutcome::QueuedDroppedOldest(oldest));
                }
                Backpressure::Block => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(PushOutcome::Rejected(item));
                    }
                    inner = self.not_full.wait_timeout(inner, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
    }

    /// Takes the oldest message, waiting at most `limit`; `None` on timeout or when closed and empty.
    pub fn pop(&self, limit: Duration) -> Option<T> {
        let deadline = Instant::now() + limit;
        let mut inner = self.lock();
        loop {
            if let Some(item) = inner.items.pop_front() {
                self.not_full.notify_one();
                return Some(item);
            }
            let now = Instant::now();
            if inner.closed || now >= deadline {
                return None;
            }
            inner = self.not_empty.wait_timeout(inner, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages discarded by the dropping policies so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Refuses further pushes, wakes every waiter, and returns what was still queued (nothing
    /// is lost: the caller decides what to do with it).
    pub fn close(&self) -> Vec<T> {
        let mut inner = self.lock();
        inner.closed = true;
        self.not_full.notify_all();
        self.not_empty.notify_all();
        inner.items.drain(..).collect()
    }
}
