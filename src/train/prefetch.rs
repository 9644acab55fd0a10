//! Reading mini-batches of streamed images ahead of the steps that use them.
//!
//! At the start of each epoch the loop knows the order of the epoch's rows; a background
//! thread then reads the batches, in that order, into a bounded queue ([`DEPTH`] batches), so
//! that a step finds its images read. Buffers go back to the reader when a step is done, so
//! memory holds `DEPTH + 2` batches at most and no fresh pages are faulted in each step. A
//! step whose batch is not the next one read (none was planned) reads its rows itself: the
//! queue only changes when the bytes are read, never which.

use crate::data::PackedRows;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Batches read ahead.
const DEPTH: usize = 2;

/// One batch read by the background thread: its rows, and their bytes or the read error.
type Read = (Vec<usize>, std::io::Result<Vec<u8>>);

/// A reader of streamed mini-batches.
pub struct Prefetch {
    rows: PackedRows,
    ready: Option<Receiver<Read>>,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Prefetch {
    /// A reader of `rows`, with nothing planned yet.
    pub fn new(rows: PackedRows) -> Self {
        Prefetch {
            rows,
            ready: None,
            spare: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts reading the batches of `order`, `batch` rows at a time (what is still queued
    /// from an earlier plan is dropped, and its thread ends).
    pub fn plan(&mut self, order: &[usize], batch: usize) {
        self.plan_batches(order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect());
    }

    /// Starts reading `batches`, in order (this process's parts of shared batches, say).
    pub fn plan_batches(&mut self, batches: Vec<Vec<usize>>) {
        let (send, receive) = sync_channel(DEPTH);
        let (rows, spare) = (self.rows.clone(), Arc::clone(&self.spare));
        self.ready = Some(receive);
        std::thread::spawn(move || read_ahead(&rows, &spare, batches, &send));
    }

    /// The bytes of rows `batch` (`batch.len() × features`): the next batch read ahead when it
    /// is this one, else read now. Hand the buffer back with [`give`](Self::give).
    ///
    /// # Errors
    /// The read error, or a row that fails its checksum.
    pub fn take(&mut self, batch: &[usize]) -> std::io::Result<Vec<u8>> {
        if let Some(ready) = &self.ready {
            match ready.recv() {
                Ok((rows, bytes)) if rows == batch => return bytes,
                // Not the batch planned: the plan no longer holds.
                _ => self.ready = None,
            }
        }
        let mut buf = spare_buffer(&self.spare);
        buf.resize(batch.len() * self.rows.features(), 0);
        self.rows.gather(batch, &mut buf)?;
        Ok(buf)
    }

    /// Returns a buffer for the reader to fill again.
    pub fn give(&self, buf: Vec<u8>) {
        if let Ok(mut spare) = self.spare.lock()
            && spare.len() < DEPTH + 2
        {
            spare.push(buf);
        }
    }
}

fn spare_buffer(spare: &Mutex<Vec<Vec<u8>>>) -> Vec<u8> {
    spare
        .lock()
        .ok()
        .and_then(|mut s| s.pop())
        .unwrap_or_default()
}

/// The background thread: reads each batch and queues it; stops when the queue's reader has
/// gone (a new plan, or the end of training).
fn read_ahead(
    rows: &PackedRows,
    spare: &Mutex<Vec<Vec<u8>>>,
    batches: Vec<Vec<usize>>,
    send: &SyncSender<Read>,
) {
    for batch in batches {
        let mut buf = spare_buffer(spare);
        buf.resize(batch.len() * rows.features(), 0);
        let bytes = rows.gather(&batch, &mut buf).map(|()| buf);
        if send.send((batch, bytes)).is_err() {
            return;
        }
    }
}
