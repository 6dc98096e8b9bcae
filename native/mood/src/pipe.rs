//! The mood thread: the data plane hands it each batch's visitor texts in one message; it scores
//! them ([`LinearScorer`]), folds them into the [`Tracker`], and publishes the alerts that fired to a
//! [`SignalledList`], whose eventfd wakes the event loop (once per batch at most, as the journal's
//! completions do). The loop thread spends one channel send per batch on mood.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use kefu_signal::SignalledList;
use kefu_textfeat::Scratch;

use crate::{LinearScorer, Tracker, Update};

/// A conversation whose mood reached its armed threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    pub conv: u64,
    pub mood: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Messages scored (on the thread and synchronously).
    pub scored: u64,
    /// Messages not scored because the backlog was full (mood is advisory; the message is stored).
    pub dropped: u64,
    pub turned_angry: u64,
    pub alerts: u64,
    pub conversations: u64,
    /// Batches handed over and not yet scored.
    pub backlog: u64,
}

/// One batch of visitor texts: `text[ends[i-1]..ends[i]]` belongs to `convs[i]`.
struct Batch {
    convs: Vec<u64>,
    ends: Vec<u32>,
    text: String,
}

struct Shared {
    scorer: LinearScorer,
    tracker: Mutex<Tracker>,
    alerts: SignalledList<Alert>,
    scored: AtomicU64,
    dropped: AtomicU64,
    turned_angry: AtomicU64,
    alerted: AtomicU64,
    submitted: AtomicU64,
    done: AtomicU64,
}

pub struct MoodPipe {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<Batch>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MoodPipe {
    /// Starts the thread. At most `backlog_batches` batches wait for it; beyond that a batch is
    /// dropped and counted, never queued without bound.
    pub fn start(
        scorer: LinearScorer,
        tracker: Tracker,
        backlog_batches: usize,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            scorer,
            tracker: Mutex::new(tracker),
            alerts: SignalledList::new()?,
            scored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            turned_angry: AtomicU64::new(0),
            alerted: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            done: AtomicU64::new(0),
        });
        let (sender, receiver) = sync_channel(backlog_batches.max(1));
        let thread = std::thread::Builder::new()
            .name("kefu-mood".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared, &receiver)
            })?;
        Ok(Self {
            shared,
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hand a batch to the thread (`ends[i]`: end of text `i` in `text`, in bytes at char
    /// boundaries). False when it was dropped (backlog full or pipe closed).
    pub fn submit(&self, convs: Vec<u64>, ends: Vec<u32>, text: String) -> bool {
        if convs.is_empty() {
            return true;
        }
        let count = convs.len() as u64;
        let batch = Batch { convs, ends, text };
        let sender = lock(&self.sender);
        let sent = match sender.as_ref() {
            Some(sender) => {
                // Counted before the send: the thread may finish the batch before try_send returns,
                // and `backlog` (submitted − done) must never see done run ahead.
                self.shared.submitted.fetch_add(1, Ordering::SeqCst);
                match sender.try_send(batch) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        self.shared.submitted.fetch_sub(1, Ordering::SeqCst);
                        false
                    }
                }
            }
            None => false,
        };
        if !sent {
            self.shared.dropped.fetch_add(count, Ordering::Relaxed);
        }
        sent
    }

    /// `p_neg` of one text, on the caller's thread.
    pub fn score(&self, text: &str) -> f32 {
        self.shared.scorer.p_neg(text)
    }

    /// Score `text` and fold it into `conv`'s mood now (a conversation's first message, which
    /// routing needs before it answers).
    pub fn observe(&self, conv: u64, text: &str) -> Update {
        let p_neg = self.score(text);
        self.update(conv, f64::from(p_neg))
    }

    /// Fold an already computed `p_neg` into `conv`'s mood.
    pub fn update(&self, conv: u64, p_neg: f64) -> Update {
        let update = lock(&self.shared.tracker).update(conv, p_neg);
        self.shared.scored.fetch_add(1, Ordering::Relaxed);
        if update.turned_angry {
            self.shared.turned_angry.fetch_add(1, Ordering::Relaxed);
        }
        update
    }

    pub fn arm(&self, conv: u64, threshold: Option<f64>) {
        lock(&self.shared.tracker).arm(conv, threshold);
    }

    pub fn mood(&self, conv: u64) -> Option<f64> {
        lock(&self.shared.tracker).mood(conv)
    }

    pub fn forget(&self, conv: u64) {
        lock(&self.shared.tracker).forget(conv);
    }

    /// Readable while alerts may be waiting; call [`Self::take_alerts`] when it fires.
    pub fn fd(&self) -> RawFd {
        self.shared.alerts.fd()
    }

    /// The alerts published so far, oldest first; re-arms the fd.
    pub fn take_alerts(&self) -> Vec<Alert> {
        let mut alerts = Vec::new();
        self.shared.alerts.drain(&mut alerts);
        alerts
    }

    pub fn stats(&self) -> PipeStats {
        let shared = &self.shared;
        PipeStats {
            scored: shared.scored.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            turned_angry: shared.turned_angry.load(Ordering::Relaxed),
            alerts: shared.alerted.load(Ordering::Relaxed),
            conversations: lock(&shared.tracker).len() as u64,
            backlog: shared
                .submitted
                .load(Ordering::SeqCst)
                .saturating_sub(shared.done.load(Ordering::SeqCst)),
        }
    }

    /// Score what was handed over, then stop the thread. Later batches are dropped.
    pub fn close(&self) {
        drop(lock(&self.sender).take());
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MoodPipe {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(shared: &Shared, receiver: &Receiver<Batch>) {
    let mut scratch = Scratch::default();
    let mut scores: Vec<f32> = Vec::new();
    let mut fired: Vec<Alert> = Vec::new();
    while let Ok(batch) = receiver.recv() {
        scores.clear();
        let mut start = 0usize;
        for &end in &batch.ends {
            let end = end as usize;
            let text = batch.text.get(start..end).unwrap_or_default();
            scores.push(shared.scorer.p_neg_with(text, &mut scratch));
            start = end;
        }
        let mut turned_angry = 0;
        {
            let mut tracker = lock(&shared.tracker);
            for (&conv, &p_neg) in batch.convs.iter().zip(&scores) {
                let update = tracker.update(conv, f64::from(p_neg));
                turned_angry += u64::from(update.turned_angry);
                if update.alert {
                    fired.push(Alert {
                        conv,
                        mood: update.mood,
                    });
                }
            }
        }
        shared
            .scored
            .fetch_add(scores.len() as u64, Ordering::Relaxed);
        shared
            .turned_angry
            .fetch_add(turned_angry, Ordering::Relaxed);
        shared
            .alerted
            .fetch_add(fired.len() as u64, Ordering::Relaxed);
        shared.alerts.publish(fired.drain(..));
        shared.done.fetch_add(1, Ordering::SeqCst);
    }
}
