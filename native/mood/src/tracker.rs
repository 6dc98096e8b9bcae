//! Per-conversation mood: the EWMA and hysteresis flag of `kefu.sentiment.MoodTracker` (the
//! reference; tests compare the two), plus alert thresholds armed by the control plane.

use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Weight of the newest message: `mood = alpha·p_neg + (1 − alpha)·mood`.
    pub alpha: f64,
    /// A calm conversation turns angry when its mood reaches this…
    pub angry_threshold: f64,
    /// …and an angry one calms down only below this (hysteresis).
    pub calm_threshold: f64,
    /// Conversations remembered at most; beyond it the least recently updated eighth is forgotten.
    pub max_conversations: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            alpha: 0.4,
            angry_threshold: 0.7,
            calm_threshold: 0.5,
            max_conversations: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerError(&'static str);

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TrackerError {}

/// The mood of a conversation after one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    pub mood: f64,
    pub angry: bool,
    /// Flagged by this very message.
    pub turned_angry: bool,
    /// The mood reached the conversation's armed threshold; the alert is now disarmed.
    pub alert: bool,
}

#[derive(Debug, Clone, Copy)]
struct Mood {
    mood: f64,
    angry: bool,
    touched: u64,
}

pub struct Tracker {
    config: TrackerConfig,
    moods: HashMap<u64, Mood>,
    /// Armed alert thresholds (kept apart from moods: a conversation may be armed before its first
    /// scored message).
    alerts: HashMap<u64, f64>,
    clock: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Result<Self, TrackerError> {
        if !(config.alpha > 0.0 && config.alpha <= 1.0) {
            return Err(TrackerError("alpha must be in (0, 1]"));
        }
        if !(0.0 <= config.calm_threshold
            && config.calm_threshold <= config.angry_threshold
            && config.angry_threshold <= 1.0)
        {
            return Err(TrackerError(
                "need 0 <= calm_threshold <= angry_threshold <= 1",
            ));
        }
        if config.max_conversations == 0 {
            return Err(TrackerError("max_conversations must be positive"));
        }
        Ok(Self {
            config,
            moods: HashMap::new(),
            alerts: HashMap::new(),
            clock: 0,
        })
    }

    /// Fold one message's `p_neg` into its conversation's mood (the first message sets it).
    pub fn update(&mut self, conv: u64, p_neg: f64) -> Update {
        let p_neg = if p_neg.is_nan() {
            0.0
        } else {
            p_neg.clamp(0.0, 1.0)
        };
        self.clock += 1;
        let (mood, was_angry) = match self.moods.get(&conv) {
            None => (p_neg, false),
            Some(previous) => (
                self.config.alpha * p_neg + (1.0 - self.config.alpha) * previous.mood,
                previous.angry,
            ),
        };
        let angry = if was_angry {
            mood >= self.config.calm_threshold
        } else {
            mood >= self.config.angry_threshold
        };
        self.moods.insert(
            conv,
            Mood {
                mood,
                angry,
                touched: self.clock,
            },
        );
        let alert = match self.alerts.get(&conv) {
            Some(&threshold) if mood >= threshold => {
                self.alerts.remove(&conv);
                true
            }
            _ => false,
        };
        if self.moods.len() > self.config.max_conversations {
            self.forget_oldest();
        }
        Update {
            mood,
            angry,
            turned_angry: angry && !was_angry,
            alert,
        }
    }

    /// Alert once when the mood of `conv` reaches `threshold` (`None`: never).
    pub fn arm(&mut self, conv: u64, threshold: Option<f64>) {
        match threshold {
            Some(threshold) => {
                self.alerts.insert(conv, threshold);
            }
            None => {
                self.alerts.remove(&conv);
            }
        }
    }

    pub fn mood(&self, conv: u64) -> Option<f64> {
        self.moods.get(&conv).map(|entry| entry.mood)
    }

    pub fn forget(&mut self, conv: u64) {
        self.moods.remove(&conv);
        self.alerts.remove(&conv);
    }

    pub fn len(&self) -> usize {
        self.moods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.moods.is_empty()
    }

    /// Forget the least recently updated eighth at once, so a flood of new conversations costs one
    /// scan per `max/8` of them rather than one per message (Python's reference forgets one at a time).
    fn forget_oldest(&mut self) {
        let mut touched: Vec<u64> = self.moods.values().map(|entry| entry.touched).collect();
        let keep = self.config.max_conversations - self.config.max_conversations / 8;
        let cut = touched.len() - keep;
        let (_, &mut oldest_kept, _) = touched.select_nth_unstable(cut);
        let alerts = &mut self.alerts;
        self.moods.retain(|conv, entry| {
            let kept = entry.touched >= oldest_kept;
            if !kept {
                alerts.remove(conv);
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig::default()).unwrap()
    }

    #[test]
    fn the_first_message_sets_the_mood_and_later_ones_smooth_it() {
        let mut t = tracker();
        let first = t.update(1, 0.9);
        assert_eq!(first.mood, 0.9);
        assert!(first.angry && first.turned_angry);
        let second = t.update(1, 0.0);
        assert!((second.mood - 0.54).abs() < 1e-12);
        assert!(
            second.angry && !second.turned_angry,
            "hysteresis keeps it angry above 0.5"
        );
        assert!(!t.update(1, 0.0).angry);
    }

    #[test]
    fn an_alert_fires_once_until_rearmed() {
        let mut t = tracker();
        t.arm(7, Some(0.6));
        assert!(!t.update(7, 0.5).alert);
        assert!(t.update(7, 1.0).alert);
        assert!(!t.update(7, 1.0).alert, "disarmed after firing");
        t.arm(7, Some(0.6));
        assert!(t.update(7, 1.0).alert);
        t.arm(7, Some(0.6));
        t.arm(7, None);
        assert!(!t.update(7, 1.0).alert);
    }

    #[test]
    fn the_size_is_bounded_by_forgetting_the_least_recently_updated() {
        let mut t = Tracker::new(TrackerConfig {
            max_conversations: 16,
            ..TrackerConfig::default()
        })
        .unwrap();
        for conv in 0..16 {
            t.update(conv, 0.1);
        }
        t.update(0, 0.2); // now the most recent
        t.update(100, 0.3);
        assert_eq!(t.len(), 14);
        assert!(t.mood(0).is_some() && t.mood(100).is_some());
        assert!(t.mood(1).is_none() && t.mood(2).is_none() && t.mood(3).is_none());
    }

    #[test]
    fn bad_configs_and_inputs_are_refused_or_clamped() {
        assert!(Tracker::new(TrackerConfig {
            alpha: 0.0,
            ..TrackerConfig::default()
        })
        .is_err());
        assert!(Tracker::new(TrackerConfig {
            calm_threshold: 0.8,
            ..TrackerConfig::default()
        })
        .is_err());
        let mut t = tracker();
        assert_eq!(t.update(1, f64::NAN).mood, 0.0);
        assert_eq!(t.update(2, 3.0).mood, 1.0);
    }
}
