//! PATCHED (chat cluster, vendor/README.md): what the transports write, counted for the
//! embedding server's metrics, and a sampled latency probe. Not in the published crate.
//!
//! Per packet written the cost is one relaxed atomic add (socket.io event packets) and one
//! relaxed load compared with the packet's address (the probe); per packet queued, one read of
//! a thread-local flag. Nothing locks, allocates or reads a clock unless a probe is armed.
//!
//! The probe: the server arms it before it queues one message for many sockets
//! ([`arm`], on the same thread, with no await in between); the first message packet queued
//! afterwards becomes the sample, and every write of that same packet (the queued copies share
//! their bytes, so their address) reports the time since it was armed to the observer set with
//! [`set_latency_observer`]. Arming again replaces the sample.
//!
//! Without the crate feature `probe` nothing is counted or timed (every figure stays 0): the
//! embedding server's way to measure what this costs.

use std::{
    cell::Cell,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use engineioxide_core::{Packet, Str};

use crate::errors::Error;

static EVENTS_WRITTEN: AtomicU64 = AtomicU64::new(0);
static TOO_LARGE: AtomicU64 = AtomicU64::new(0);

/// Address of the sampled packet's bytes; 0 while no sample is live.
static SAMPLE_ADDR: AtomicUsize = AtomicUsize::new(0);
/// The sampled packet (kept, so that its address cannot be reused by another allocation while
/// it is the sample) and when it was armed.
static SAMPLE: Mutex<Option<(Str, Instant)>> = Mutex::new(None);
static OBSERVER: OnceLock<fn(Duration)> = OnceLock::new();

thread_local! {
    /// Set by [`arm`]: the next message packet queued on this thread becomes the sample.
    static ARMED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// socket.io event packets (engine.io message packets whose payload starts with `2`, EVENT, or
/// `5`, BINARY_EVENT) handed to a client's transport so far, in this process: written to a
/// websocket, or put in a long-polling response.
pub fn events_written() -> u64 {
    EVENTS_WRITTEN.load(Ordering::Relaxed)
}

/// Websocket sessions closed because the client sent a message above the size limit, in this
/// process.
pub fn too_large_closed() -> u64 {
    TOO_LARGE.load(Ordering::Relaxed)
}

/// Where sampled latencies go. Set once per process; later calls are ignored.
pub fn set_latency_observer(observer: fn(Duration)) {
    let _ = OBSERVER.set(observer);
}

/// Makes the next message packet queued on this thread the latency sample, timed from
/// `arrival`. Call [`disarm`] after queuing, in case nothing was queued.
pub fn arm(arrival: Instant) {
    ARMED.with(|armed| armed.set(Some(arrival)));
}

/// Clears an armed probe that no packet took; true if it was still armed (nothing was queued
/// since [`arm`]).
pub fn disarm() -> bool {
    ARMED.with(|armed| armed.take().is_some())
}

/// A message packet is being queued for one socket.
#[inline]
pub(crate) fn on_queue(message: &Str) {
    if !cfg!(feature = "probe") {
        return;
    }
    if let Some(arrival) = ARMED.with(|armed| armed.take()) {
        let mut sample = SAMPLE.lock().unwrap_or_else(|poison| poison.into_inner());
        SAMPLE_ADDR.store(message.as_ptr() as usize, Ordering::Relaxed);
        // The previous sample is dropped after the address moved on.
        *sample = Some((message.clone(), arrival));
    }
}

/// A packet is being handed to a transport.
#[inline]
pub(crate) fn on_write(packet: &Packet) {
    if !cfg!(feature = "probe") {
        return;
    }
    let Packet::Message(message) = packet else {
        return;
    };
    if matches!(message.as_bytes().first(), Some(b'2' | b'5')) {
        EVENTS_WRITTEN.fetch_add(1, Ordering::Relaxed);
    }
    if SAMPLE_ADDR.load(Ordering::Relaxed) == message.as_ptr() as usize {
        observe(message);
    }
}

#[cold]
fn observe(message: &Str) {
    let elapsed = {
        let sample = SAMPLE.lock().unwrap_or_else(|poison| poison.into_inner());
        match &*sample {
            // Same bytes, not only the same address.
            Some((sampled, arrival))
                if sampled.as_ptr() == message.as_ptr() && sampled.len() == message.len() =>
            {
                arrival.elapsed()
            }
            _ => return,
        }
    };
    if let Some(observer) = OBSERVER.get() {
        observer(elapsed);
    }
}

/// A websocket session ended with `err` while reading from the client.
pub(crate) fn on_read_error(err: &Error) {
    if !cfg!(feature = "probe") {
        return;
    }
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    if let Error::WsTransport(err) = err
        && matches!(
            **err,
            WsError::Capacity(CapacityError::MessageTooLong { .. })
        )
    {
        TOO_LARGE.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(all(test, feature = "probe"))]
mod tests {
    use super::*;

    #[test]
    fn counts_events_and_times_the_armed_packet() {
        static SEEN: AtomicU64 = AtomicU64::new(0);
        set_latency_observer(|_| {
            SEEN.fetch_add(1, Ordering::Relaxed);
        });
        let before = events_written();
        on_write(&Packet::Message(Str::from("40")));
        on_write(&Packet::Message(Str::from("2[\"x\"]")));
        assert_eq!(events_written() - before, 1);

        let sampled = Str::from(String::from("2[\"message\",1]"));
        arm(Instant::now());
        on_queue(&sampled);
        on_queue(&Str::from(String::from("2[\"message\",2]")));
        disarm();
        // Every write of the sampled bytes is observed; another packet is not.
        on_write(&Packet::Message(sampled.clone()));
        on_write(&Packet::Message(sampled.clone()));
        on_write(&Packet::Message(Str::from(String::from("2[\"message\",1]"))));
        assert_eq!(SEEN.load(Ordering::Relaxed), 2);
    }
}
