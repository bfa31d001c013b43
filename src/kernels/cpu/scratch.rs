//! Buffers the Winograd convolution keeps per thread between calls: its transformed inputs
//! and products, which would otherwise be allocated, faulted in and zeroed at every layer.

use std::cell::RefCell;

/// The transformed inputs and products of the last convolution on this thread, kept for the
/// next one: a fresh buffer of that size costs a page fault per 4 KiB and a full memset.
pub(super) struct Scratch;

/// A thread's kept buffer for [`Scratch`].
pub(super) type ScratchSlot = std::thread::LocalKey<RefCell<Vec<f32>>>;

thread_local! {
    pub(super) static INPUT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    pub(super) static PRODUCT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    pub(super) static BLOCK_INPUT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    pub(super) static BLOCK_PRODUCT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Scratch {
    /// A buffer of `len` floats (their values are whatever the last use left). Only the part
    /// of it that no earlier use reached is zeroed: a kept buffer is never shortened, so that
    /// layers of different sizes in turn do not zero the difference again and again.
    pub(super) fn take(slot: &'static ScratchSlot, len: usize) -> ScratchBuffer {
        let mut buffer = slot.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        ScratchBuffer { buffer, len }
    }

    /// Keeps `buffer` for the thread's next [`Scratch::take`] from `slot`.
    pub(super) fn give_back(slot: &'static ScratchSlot, buffer: ScratchBuffer) {
        slot.with(|cell| {
            let mut kept = cell.borrow_mut();
            if buffer.buffer.len() > kept.len() {
                *kept = buffer.buffer;
            }
        });
    }
}

/// A buffer lent by [`Scratch::take`] or held by a [`super::winograd::KeptInput`]: the first `len` floats of a
/// kept buffer that may be longer.
pub(super) struct ScratchBuffer {
    pub(super) buffer: Vec<f32>,
    pub(super) len: usize,
}

impl std::ops::Deref for ScratchBuffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buffer[..self.len]
    }
}

impl std::ops::DerefMut for ScratchBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buffer[..self.len]
    }
}
