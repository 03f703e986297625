//! PATCHED (chat cluster, vendor/README.md change 11): a socket's send queue and volatile slot,
//! which allocate nothing until a packet is queued.
//!
//! It replaces a tokio `mpsc` channel and a tokio `watch` channel. Those allocate when they are
//! created: the `mpsc` channel its shared state and its first block of 32 slots (about 800 bytes,
//! by massif), the `watch` channel its shared state (about 350 bytes), for every connection,
//! idle or not. This queue lives inline in its [`Socket`](crate::socket::Socket): a mutex over a
//! `VecDeque` that grows on the first packet queued, the reader's waker, and a [`Notify`] for
//! those who wait for room or for the end.
//!
//! What it keeps from the channels it replaces:
//! - a fixed capacity ([`EngineIoConfig::max_buffer_size`](crate::config::EngineIoConfig)),
//!   counting the packets queued and the places reserved ([`SendQueue::try_reserve`]); a sender
//!   gets [`TrySendError::Full`] when it is reached; a place made while a sender waits for
//!   room ([`SendQueue::send`]) is that sender's, not the next `try_send`'s or `try_reserve`'s;
//! - [`SendQueue::close`] refuses new packets ([`TrySendError::Closed`]) and lets the reader take
//!   what was queued before ending ([`SendQueue::poll_recv`] gives `None` once it is empty);
//! - one volatile packet list at most, the latest ([`SendQueue::send_volatile`]), read after
//!   every queued one;
//! - one reader at a time (the socket's `internal_rx` lock), woken when a packet comes.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::Mutex,
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, mpsc::error::TrySendError};

use crate::socket::QueuedPackets;

/// How many slots an emptied queue keeps; it gives back a larger allocation, grown by a burst,
/// once it is empty again.
const KEPT_SLOTS: usize = 8;

/// A sender's place in line while it waits in [`SendQueue::send`] (`State::waiting`), left
/// when dropped.
struct InLine<'a> {
    queue: &'a SendQueue,
    waits: bool,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if self.waits {
            self.queue.lock().waiting -= 1;
        }
    }
}

/// A socket's send queue. See the module's documentation.
#[derive(Debug)]
pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// The reader, woken when a packet is queued or the queue is closed.
    reader: AtomicWaker,
    /// Woken when room is made for a waiting sender ([`SendQueue::send`]) and when the queue
    /// closes ([`SendQueue::closed`]).
    changed: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    packets: VecDeque<QueuedPackets>,
    /// Places held by [`Permit`]s not yet used.
    reserved: usize,
    volatile: Option<QueuedPackets>,
    closed: bool,
    /// Senders waiting in [`SendQueue::send`] for room. Each holds a place in line that
    /// [`SendQueue::try_send`] and [`SendQueue::try_reserve`] may not take, as a tokio channel
    /// hands a place made to the sender waiting for it: otherwise a socket's emits could take
    /// every place made before the woken sender (the upgrade's NOOP) runs, and it would wait on.
    waiting: usize,
}

impl State {
    /// No room for a packet list but those of the senders waiting.
    fn is_full(&self, capacity: usize) -> bool {
        self.packets.len() + self.reserved + self.waiting >= capacity
    }

    /// No room at all, for a sender waiting in [`SendQueue::send`].
    fn no_room(&self, capacity: usize) -> bool {
        self.packets.len() + self.reserved >= capacity
    }
}

/// A place reserved in a [`SendQueue`] for one packet list; given back if dropped unused.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    queue: &'a SendQueue,
}

impl Permit<'_> {
    /// Queues `packets` in the place reserved.
    pub(crate) fn send(self, packets: QueuedPackets) {
        let queue = self.queue;
        std::mem::forget(self);
        let mut state = queue.lock();
        state.reserved -= 1;
        state.packets.push_back(packets);
        drop(state);
        queue.reader.wake();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.reserved -= 1;
        let notify = state.waiting > 0;
        drop(state);
        if notify {
            self.queue.changed.notify_waiters();
        }
    }
}

impl SendQueue {
    /// An empty queue that holds at most `capacity` packet lists.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            reader: AtomicWaker::new(),
            changed: Notify::new(),
            capacity,
        }
    }

    /// The state; a panic while it was held left nothing half done (each change is one
    /// statement), so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a place for one packet list.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the packets queued and the places reserved reach the
    /// capacity; [`TrySendError::Closed`] once the queue is closed.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_>, TrySendError<()>> {
        let mut state = self.lock();
        if state.closed {
            return Err(TrySendError::Closed(()));
        }
        if state.is_full(self.capacity) {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(Permit { queue: self })
    }

    /// Queues `packets` if there is room.
    ///
    /// # Errors
    /// As [`SendQueue::try_reserve`], with `packets` given back.
    pub(crate) fn try_send(
        &self,
        packets: QueuedPackets,
    ) -> Result<(), TrySendError<QueuedPackets>> {
        let mut state = self.lock();
        if state.closed {
            return Err(TrySendError::Closed(packets));
        }
        if state.is_full(self.capacity) {
            return Err(TrySendError::Full(packets));
        }
        state.packets.push_back(packets);
        drop(state);
        self.reader.wake();
        Ok(())
    }

    /// Queues `packets`, waiting for room.
    ///
    /// # Errors
    /// `packets` given back if the queue is closed, before or while waiting.
    pub(crate) async fn send(&self, mut packets: QueuedPackets) -> Result<(), QueuedPackets> {
        // Its place in line, left when it is done or dropped.
        let mut line = InLine {
            queue: self,
            waits: false,
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so that a change after it is not missed.
            changed.as_mut().enable();
            match self.push_in_line(packets, &mut line.waits) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(back),
                Err(TrySendError::Full(back)) => packets = back,
            }
            changed.await;
        }
    }

    /// For [`SendQueue::send`]: queues `packets` if there is room, leaving the line if `waits`;
    /// else takes a place in line (`waits`).
    fn push_in_line(
        &self,
        packets: QueuedPackets,
        waits: &mut bool,
    ) -> Result<(), TrySendError<QueuedPackets>> {
        let mut state = self.lock();
        if !state.closed && state.no_room(self.capacity) {
            if !*waits {
                *waits = true;
                state.waiting += 1;
            }
            return Err(TrySendError::Full(packets));
        }
        state.waiting -= usize::from(std::mem::take(waits));
        if state.closed {
            return Err(TrySendError::Closed(packets));
        }
        state.packets.push_back(packets);
        drop(state);
        self.reader.wake();
        Ok(())
    }

    /// Replaces the volatile packet list, if any, by `packets`.
    ///
    /// # Errors
    /// `false` once the queue is closed.
    pub(crate) fn send_volatile(&self, packets: QueuedPackets) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.volatile = Some(packets);
        drop(state);
        self.reader.wake();
        true
    }

    /// The next packet list: the oldest queued, else the volatile one. `None` once the queue is
    /// closed and empty. To be called by the holder of the socket's `internal_rx` lock only:
    /// one reader is woken.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<QueuedPackets>> {
        let mut state = self.lock();
        match self.take(&mut state) {
            Some(packets) => Poll::Ready(Some(packets)),
            None if state.closed => Poll::Ready(None),
            None => {
                // Under the lock: a sender queues under it too, and wakes after.
                self.reader.register(cx.waker());
                Poll::Pending
            }
        }
    }

    /// [`SendQueue::poll_recv`] as a future.
    pub(crate) async fn recv(&self) -> Option<QueuedPackets> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next packet list if one is there, as [`SendQueue::poll_recv`] gives it.
    pub(crate) fn try_recv(&self) -> Option<QueuedPackets> {
        let mut state = self.lock();
        self.take(&mut state)
    }

    fn take(&self, state: &mut State) -> Option<QueuedPackets> {
        let Some(packets) = state.packets.pop_front() else {
            return state.volatile.take();
        };
        if state.packets.is_empty() && state.packets.capacity() > KEPT_SLOTS {
            state.packets = VecDeque::new();
        }
        if state.waiting > 0 {
            self.changed.notify_waiters();
        }
        Some(packets)
    }

    /// Refuses every packet from now on; what is queued can still be read.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
        self.reader.wake();
    }

    /// Whether the queue is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until the queue is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_closed() {
                return;
            }
            changed.await;
        }
    }

    /// How many packet lists are queued, and places reserved.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let state = self.lock();
        state.packets.len() + state.reserved
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use engineioxide_core::Packet;
    use smallvec::smallvec;

    use super::*;

    fn packets(text: &'static str) -> QueuedPackets {
        Arc::new(smallvec![Packet::Message(text.into())])
    }

    fn text(packets: Option<QueuedPackets>) -> Option<String> {
        match packets?.first()? {
            Packet::Message(msg) => Some(msg.to_string()),
            _ => None,
        }
    }

    #[test]
    fn a_new_queue_allocates_nothing() {
        let queue = SendQueue::new(16);
        assert_eq!(queue.lock().packets.capacity(), 0);
    }

    #[test]
    fn packets_come_out_in_order_then_the_volatile_one() {
        let queue = SendQueue::new(4);
        assert!(queue.send_volatile(packets("v1")));
        assert!(queue.send_volatile(packets("v2")));
        queue.try_send(packets("a")).unwrap();
        queue.try_reserve().unwrap().send(packets("b"));
        assert_eq!(text(queue.try_recv()).as_deref(), Some("a"));
        assert_eq!(text(queue.try_recv()).as_deref(), Some("b"));
        // Only the latest volatile packet is kept.
        assert_eq!(text(queue.try_recv()).as_deref(), Some("v2"));
        assert!(queue.try_recv().is_none());
    }

    #[test]
    fn capacity_counts_queued_packets_and_reserved_places() {
        let queue = SendQueue::new(2);
        let permit = queue.try_reserve().unwrap();
        queue.try_send(packets("a")).unwrap();
        assert!(matches!(queue.try_reserve(), Err(TrySendError::Full(()))));
        assert!(matches!(
            queue.try_send(packets("b")),
            Err(TrySendError::Full(_))
        ));
        // A permit dropped unused gives its place back.
        drop(permit);
        assert_eq!(queue.len(), 1);
        queue.try_send(packets("b")).unwrap();
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn a_closed_queue_refuses_packets_and_gives_what_it_holds() {
        let queue = SendQueue::new(4);
        queue.try_send(packets("a")).unwrap();
        queue.close();
        assert!(queue.is_closed());
        assert!(matches!(
            queue.try_send(packets("b")),
            Err(TrySendError::Closed(_))
        ));
        assert!(matches!(queue.try_reserve(), Err(TrySendError::Closed(()))));
        assert!(!queue.send_volatile(packets("v")));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(queue.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(matches!(queue.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn an_emptied_queue_gives_back_what_a_burst_grew() {
        let queue = SendQueue::new(64);
        for _ in 0..40 {
            queue.try_send(packets("a")).unwrap();
        }
        while queue.try_recv().is_some() {}
        assert!(queue.lock().packets.capacity() <= KEPT_SLOTS);
    }

    #[tokio::test]
    async fn the_reader_is_woken_by_a_packet() {
        let queue = Arc::new(SendQueue::new(4));
        let reader = tokio::spawn({
            let queue = queue.clone();
            async move { text(queue.recv().await) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!reader.is_finished());
        queue.try_send(packets("a")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), reader).await;
        assert_eq!(got.unwrap().unwrap().as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_or_its_packets_back() {
        let queue = Arc::new(SendQueue::new(1));
        queue.try_send(packets("a")).unwrap();
        let sender = tokio::spawn({
            let queue = queue.clone();
            async move { queue.send(packets("b")).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!sender.is_finished(), "the queue is full");
        assert_eq!(text(queue.try_recv()).as_deref(), Some("a"));
        let sent = tokio::time::timeout(Duration::from_secs(1), sender).await;
        assert!(sent.unwrap().unwrap(), "room was made");
        assert_eq!(text(queue.try_recv()).as_deref(), Some("b"));

        queue.try_send(packets("c")).unwrap();
        let sender = tokio::spawn({
            let queue = queue.clone();
            async move { queue.send(packets("d")).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        queue.close();
        let sent = tokio::time::timeout(Duration::from_secs(1), sender).await;
        assert!(!sent.unwrap().unwrap(), "the queue closed");
    }

    #[tokio::test]
    async fn closed_resolves_when_the_queue_closes() {
        let queue = Arc::new(SendQueue::new(1));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        queue.close();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    /// `future`'s output, or a failure at `deadline`. The deadline is looked at first, so a
    /// future that was never woken fails there, instead of being polled by the timer's wake-up
    /// and found ready (as `tokio::time::timeout` would find it).
    async fn before<F: Future>(deadline: std::time::Instant, what: &str, future: F) -> F::Output {
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                panic!("{what}: not woken before the deadline (a lost wake-up)")
            }
            output = future => output,
        }
    }

    /// A packet list that says which sender queued it and its number in that sender's order.
    fn numbered(sender: usize, seq: usize) -> QueuedPackets {
        let mut data = [0u8; 16];
        data[..8].copy_from_slice(&(sender as u64).to_le_bytes());
        data[8..].copy_from_slice(&(seq as u64).to_le_bytes());
        Arc::new(smallvec![Packet::Binary(bytes::Bytes::copy_from_slice(
            &data
        ))])
    }

    fn number(packets: &QueuedPackets) -> (usize, usize) {
        match packets.first() {
            Some(Packet::Binary(data)) if data.len() == 16 => (
                u64::from_le_bytes(data[..8].try_into().unwrap()) as usize,
                u64::from_le_bytes(data[8..].try_into().unwrap()) as usize,
            ),
            other => panic!("not a numbered packet: {other:?}"),
        }
    }

    /// Senders on threads of their own (one with its own runtime, waiting in `send`), and a
    /// reader that sleeps in `recv` and drains with `try_recv`: every packet comes out once, in
    /// each sender's order, and the reader is never left asleep with a packet queued (a lost
    /// wake-up fails the test at its deadline instead of hanging). Places reserved and given back
    /// unused, and the senders' `Full` retries, leave the count at zero.
    #[tokio::test]
    async fn stress_every_packet_comes_out_once_in_order() {
        const SENDERS: usize = 4;
        const PACKETS: usize = 20_000;
        const DEADLINE: Duration = Duration::from_secs(20);
        let queue = Arc::new(SendQueue::new(8));
        let deadline = std::time::Instant::now() + DEADLINE;

        let spawn_sender = |sender: usize| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut seq = 0;
                while seq < PACKETS {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "sender {sender} stuck"
                    );
                    let sent = match (sender + seq) % 3 {
                        // A place reserved, then used.
                        0 => match queue.try_reserve() {
                            Ok(permit) => {
                                permit.send(numbered(sender, seq));
                                true
                            }
                            Err(TrySendError::Full(())) => false,
                            Err(TrySendError::Closed(())) => panic!("closed"),
                        },
                        // A place reserved and given back unused, then a packet queued.
                        1 => {
                            drop(queue.try_reserve());
                            match queue.try_send(numbered(sender, seq)) {
                                Ok(()) => true,
                                Err(TrySendError::Full(_)) => false,
                                Err(TrySendError::Closed(_)) => panic!("closed"),
                            }
                        }
                        _ => match queue.try_send(numbered(sender, seq)) {
                            Ok(()) => true,
                            Err(TrySendError::Full(_)) => false,
                            Err(TrySendError::Closed(_)) => panic!("closed"),
                        },
                    };
                    if sent {
                        seq += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut threads: Vec<_> = (0..SENDERS - 1).map(spawn_sender).collect();
        // The last sender waits for room in `send`, on a runtime of its own.
        threads.push({
            let queue = queue.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    for seq in 0..PACKETS {
                        let sent = queue.send(numbered(SENDERS - 1, seq));
                        assert!(before(deadline, "the waiting sender", sent).await.is_ok());
                    }
                });
            })
        });

        let reader = async {
            let mut next = [0usize; SENDERS];
            let mut received = 0;
            while received < SENDERS * PACKETS {
                let first = queue.recv().await.expect("the queue is not closed");
                let mut batch = vec![first];
                // Drain without sleeping every other time, as the websocket writer does.
                if received % 2 == 0 {
                    while let Some(packets) = queue.try_recv() {
                        batch.push(packets);
                    }
                }
                for packets in batch {
                    let (sender, seq) = number(&packets);
                    assert_eq!(seq, next[sender], "sender {sender}'s order");
                    next[sender] += 1;
                    received += 1;
                }
                if received % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            next
        };
        let next = before(deadline, "the reader", reader).await;
        assert_eq!(next, [PACKETS; SENDERS]);
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(queue.try_recv().is_none(), "nothing more");
        assert_eq!(queue.len(), 0, "no place left reserved or queued");
        // Every place is there again.
        for _ in 0..8 {
            queue.try_reserve().unwrap().send(packets("a"));
        }
        assert!(matches!(
            queue.try_send(packets("b")),
            Err(TrySendError::Full(_))
        ));
    }

    /// One packet at a time, each queued while the reader is asleep or falling asleep in
    /// `recv`, by each way of queueing (a permit, `try_send`, `send`, the volatile slot), then
    /// the close: each must wake the reader. A lost wake-up fails at the deadline.
    #[tokio::test]
    async fn stress_each_packet_wakes_the_reader() {
        const ROUNDS: usize = 10_000;
        let queue = Arc::new(SendQueue::new(2));
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let sender = {
            let (queue, taken) = (queue.clone(), taken.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    for seq in 0..ROUNDS {
                        let packets = numbered(0, seq);
                        match seq % 4 {
                            0 => queue.try_reserve().unwrap().send(packets),
                            1 => queue.try_send(packets).unwrap(),
                            2 => queue.send(packets).await.unwrap(),
                            _ => assert!(queue.send_volatile(packets)),
                        }
                        // The next packet comes once this one is taken: the reader is then
                        // asleep, or about to be.
                        while taken.load(std::sync::atomic::Ordering::Acquire) <= seq {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "packet {seq} not taken"
                            );
                            std::thread::yield_now();
                        }
                    }
                    queue.close();
                });
            })
        };
        let reader = async {
            for seq in 0..ROUNDS {
                let packets = queue.recv().await.expect("the queue is not closed yet");
                assert_eq!(number(&packets), (0, seq));
                taken.store(seq + 1, std::sync::atomic::Ordering::Release);
            }
            assert!(queue.recv().await.is_none(), "closed and empty");
        };
        before(deadline, "the reader", reader).await;
        sender.join().unwrap();
        assert_eq!(queue.len(), 0);
    }

    /// A sender that finds the queue full at every packet and waits in `send`: each place
    /// made, by the reader taking a packet or by a permit given back unused, must wake it. A lost
    /// wake-up fails at the deadline.
    #[tokio::test]
    async fn stress_each_place_made_wakes_the_waiting_sender() {
        const ROUNDS: usize = 5_000;
        let queue = Arc::new(SendQueue::new(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let sender = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    for seq in 0..ROUNDS {
                        let sent = queue.send(numbered(0, seq));
                        assert!(before(deadline, "the waiting sender", sent).await.is_ok());
                    }
                });
            })
        };
        let reader = async {
            for seq in 0..ROUNDS {
                let packets = queue.recv().await.expect("the queue is not closed");
                assert_eq!(number(&packets), (0, seq));
                // Every other time the place just made is taken by a permit, for the sender to
                // wait for, then given back unused.
                if seq % 2 == 0 {
                    if let Ok(permit) = queue.try_reserve() {
                        for _ in 0..(seq % 3) {
                            std::thread::yield_now();
                        }
                        drop(permit);
                    }
                }
            }
        };
        before(deadline, "the reader", reader).await;
        sender.join().unwrap();
        assert_eq!(queue.len(), 0);
    }

    /// A place made while a sender waits in `send` is the waiting sender's, as a tokio
    /// channel's permit is handed to the sender waiting for it: `try_send` and `try_reserve`
    /// may not take it before the sender runs. Otherwise a busy socket's emits could keep
    /// taking every place from the upgrade's NOOP, which then waits until the upgrade times out.
    #[tokio::test]
    async fn a_place_made_for_a_waiting_sender_is_kept_for_it() {
        let queue = Arc::new(SendQueue::new(1));
        queue.try_send(packets("a")).unwrap();
        let sender = tokio::spawn({
            let queue = queue.clone();
            async move { queue.send(packets("noop")).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The place is made; the sender, woken, has not run yet (one thread).
        assert_eq!(text(queue.try_recv()).as_deref(), Some("a"));
        assert!(
            matches!(queue.try_send(packets("b")), Err(TrySendError::Full(_))),
            "the place is the waiting sender's"
        );
        assert!(matches!(queue.try_reserve(), Err(TrySendError::Full(()))));
        let sent = tokio::time::timeout(Duration::from_secs(1), sender).await;
        assert!(sent.unwrap().unwrap());
        assert_eq!(text(queue.try_recv()).as_deref(), Some("noop"));
        assert_eq!(queue.len(), 0);
        queue.try_send(packets("c")).unwrap();
    }

    /// A sender that stops waiting (its `send` dropped, as the upgrade's at its timeout)
    /// leaves its place in line; two waiting senders and one place: one of them gets it.
    #[tokio::test]
    async fn a_sender_that_stops_waiting_leaves_its_place() {
        let queue = Arc::new(SendQueue::new(1));
        queue.try_send(packets("a")).unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), queue.send(packets("x")));
        assert!(gave_up.await.is_err(), "the queue is full");
        assert_eq!(text(queue.try_recv()).as_deref(), Some("a"));
        queue.try_send(packets("b")).unwrap();

        let senders: Vec<_> = ["c", "d"]
            .into_iter()
            .map(|name| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.send(packets(name)).await.is_ok() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(1), queue.recv()).await;
            assert!(got.unwrap().is_some());
        }
        for sender in senders {
            let sent = tokio::time::timeout(Duration::from_secs(1), sender).await;
            assert!(sent.unwrap().unwrap());
        }
        assert_eq!(queue.len(), 0);
        queue.try_send(packets("e")).unwrap();
    }

    /// `closed()` resolves for every waiter, however `close()` races with them: a waiter that
    /// checks just before the close and sleeps just after is still woken.
    #[tokio::test]
    async fn stress_closed_resolves_when_close_races_with_waiters() {
        for round in 0..2_000 {
            let queue = Arc::new(SendQueue::new(1));
            queue.try_send(packets("a")).unwrap();
            let closer = {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    if round % 2 == 0 {
                        std::thread::yield_now();
                    }
                    queue.close();
                })
            };
            let waiters = async {
                let waiting = (0..3).map(|_| queue.closed());
                futures_util::future::join_all(waiting).await;
                // A sender waiting for room gets its packets back.
                assert!(queue.send(packets("b")).await.is_err());
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            before(deadline, &format!("round {round}: closed()"), waiters).await;
            closer.join().unwrap();
            assert!(queue.is_closed());
            assert_eq!(text(queue.try_recv()).as_deref(), Some("a"));
            assert!(queue.try_recv().is_none());
        }
    }

    /// A place reserved before the queue closes and given back after it: the count goes back to
    /// zero, never below, also when the close races with senders that reserve and give back.
    #[test]
    fn a_permit_dropped_after_close_gives_back_its_place() {
        let queue = SendQueue::new(2);
        let permit = queue.try_reserve().unwrap();
        let used = queue.try_reserve().unwrap();
        queue.close();
        drop(permit);
        assert_eq!(queue.len(), 1, "one place still reserved");
        // A permit taken before the close may still be used, as a tokio permit may.
        used.send(packets("a"));
        assert_eq!(queue.len(), 1);
        assert_eq!(text(queue.try_recv()).as_deref(), Some("a"));
        assert!(queue.try_recv().is_none());
        assert_eq!(queue.len(), 0);

        for _ in 0..200 {
            let queue = Arc::new(SendQueue::new(4));
            let senders: Vec<_> = (0..2)
                .map(|_| {
                    let queue = queue.clone();
                    std::thread::spawn(move || {
                        for i in 0..200 {
                            match queue.try_reserve() {
                                Ok(permit) if i % 2 == 0 => drop(permit),
                                Ok(permit) => permit.send(packets("p")),
                                Err(_) => {}
                            }
                            while queue.try_recv().is_some() {}
                        }
                    })
                })
                .collect();
            std::thread::yield_now();
            queue.close();
            for sender in senders {
                sender.join().unwrap();
            }
            while queue.try_recv().is_some() {}
            assert_eq!(queue.len(), 0);
        }
    }
}
