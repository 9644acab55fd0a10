//! Stopping a run from outside: a shared flag the loop reads after every step.
//!
//! A signal handler may do almost nothing safely, so the CLI's Ctrl-C handler only raises the
//! flag; the step in progress finishes, the loop returns the weights reached, and the caller
//! decides what to save.

use super::Callback;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Ends training once its flag is raised.
#[derive(Debug, Clone, Default)]
pub struct StopFlag {
    flag: Arc<AtomicBool>,
}

impl StopFlag {
    /// A lowered flag.
    pub fn new() -> Self {
        StopFlag::default()
    }

    /// Raises the flag; returns whether it was already raised (a second Ctrl-C).
    pub fn raise(&self) -> bool {
        self.flag.swap(true, Ordering::SeqCst)
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Callback for StopFlag {
    fn should_stop(&self) -> bool {
        self.is_raised()
    }
}
