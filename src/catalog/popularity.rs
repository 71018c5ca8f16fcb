//! Time-decayed item popularity: the cold-start ranking and a signal for
//! models. Scores live per slot as `f64` bits in atomics, so RECSYS.EVENT
//! updates them under the catalog's read lock without waiting for searches.
//!
//! Scores are kept in units at an epoch (`epoch_ms`): an event at time `t`
//! adds `weight * 2^((t - epoch) / half-life)`, and reading at `now` scales by
//! `2^(-(now - epoch) / half-life)`. When the factor grows large the epoch
//! moves forward and every score is rescaled, so values stay finite.
//!
//! The most popular live slots are kept in order ([`Popularity::ranking`],
//! the top [`RANKING_LEN`]) until a score changes, so cold start and the
//! `popular` source walk a short list instead of every slot.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};

/// Popularity halves every day without new events.
pub const HALF_LIFE_MS: f64 = 86_400_000.0;
/// Latest event time accepted at all (ms since the epoch, ~year 6400).
pub const MAX_EVENT_MS: i64 = 1 << 47;
/// How far ahead of the server's clock an event may be stamped.
pub const MAX_FUTURE_MS: i64 = 86_400_000;
/// Largest |WEIGHT| of one event.
pub const MAX_WEIGHT: f64 = 1e6;

/// Checks an event's time against the server clock `now_ms`: an event far
/// in the future would move the epoch there and make every score decay to
/// zero, so it is refused.
pub fn check_event_time(ts_ms: i64, now_ms: i64) -> Result<()> {
    if ts_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(Error::invalid(format!(
            "TS {ts_ms} is more than a day ahead of the server clock ({now_ms} ms)"
        )));
    }
    Ok(())
}
/// Half-lives between the epoch and an event before the epoch moves.
const MAX_EXPONENT: f64 = 512.0;

/// Slots the cached ranking holds (about 16 KB).
pub const RANKING_LEN: usize = 4096;

#[derive(Debug, Default)]
pub struct Popularity {
    scores: Vec<AtomicU64>,
    epoch_ms: AtomicI64,
    /// Bumped by every change of a score (or of the slots).
    version: AtomicU64,
    /// The top live slots at a version, best first.
    ranking: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
}

impl Popularity {
    /// Room for `slots` slots (new ones at zero).
    pub fn grow(&mut self, slots: usize) {
        if slots > self.scores.len() {
            // Grows by eighths as crate::growth does (atomics are not Clone).
            if slots > self.scores.capacity() {
                let spare = (slots / 8).max(64);
                self.scores.reserve_exact(slots + spare - self.scores.len());
            }
            self.scores.resize_with(slots, || AtomicU64::new(0));
            self.changed();
        }
    }

    fn changed(&self) {
        self.version.fetch_add(1, Relaxed);
    }

    /// The [`RANKING_LEN`] most popular slots that `live` accepts (all of
    /// them when fewer), by decreasing score, ties by slot: cached until a
    /// score or a slot changes (every change bumps the version, and a
    /// ranking built while one happened is stored under the old version,
    /// so the next call builds it again).
    pub fn ranking(&self, slots: usize, live: impl Fn(u32) -> bool) -> Arc<Vec<u32>> {
        let version = self.version.load(Relaxed);
        if let Some((v, top)) = &*self.ranking.lock() {
            if *v == version {
                return Arc::clone(top);
            }
        }
        let mut scored: Vec<(u32, f64)> = (0..slots.min(self.scores.len()) as u32)
            .filter(|&s| live(s))
            .map(|s| (s, self.raw(s)))
            .collect();
        let by_score = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scored.len() > RANKING_LEN {
            scored.select_nth_unstable_by(RANKING_LEN - 1, by_score);
            scored.truncate(RANKING_LEN);
        }
        scored.sort_unstable_by(by_score);
        let top = Arc::new(scored.into_iter().map(|(s, _)| s).collect::<Vec<u32>>());
        *self.ranking.lock() = Some((version, Arc::clone(&top)));
        top
    }

    /// Resets a slot (a new or deleted item).
    pub fn clear(&self, slot: u32) {
        if let Some(p) = self.scores.get(slot as usize) {
            p.store(0, Relaxed);
            self.changed();
        }
    }

    /// The stored score of `slot`, in units at the epoch.
    pub fn raw(&self, slot: u32) -> f64 {
        self.scores
            .get(slot as usize)
            .map_or(0.0, |p| f64::from_bits(p.load(Relaxed)))
    }

    /// Adds `weight` at time `ts_ms`; the result never goes below zero.
    pub fn record(&self, slot: u32, weight: f64, ts_ms: i64) {
        let Some(cell) = self.scores.get(slot as usize) else {
            return;
        };
        if !weight.is_finite() {
            return;
        }
        let _ = self.epoch_ms.compare_exchange(0, ts_ms, Relaxed, Relaxed);
        let mut exponent = ts_ms.saturating_sub(self.epoch_ms.load(Relaxed)) as f64 / HALF_LIFE_MS;
        if exponent > MAX_EXPONENT {
            let shift = 2f64.powf(-exponent);
            for p in &self.scores {
                p.store((f64::from_bits(p.load(Relaxed)) * shift).to_bits(), Relaxed);
            }
            self.epoch_ms.store(ts_ms, Relaxed);
            exponent = 0.0;
        }
        let updated = (self.raw(slot) + weight * 2f64.powf(exponent)).clamp(0.0, f64::MAX);
        cell.store(updated.to_bits(), Relaxed);
        self.changed();
    }

    /// The epoch scores are kept in units at.
    pub fn epoch_ms(&self) -> i64 {
        self.epoch_ms.load(Relaxed)
    }

    /// Sets `slot`'s score to `score` in units at `epoch_ms` (the form
    /// [`Popularity::raw`] and [`Popularity::epoch_ms`] give), converted
    /// to this catalog's epoch; a catalog without events adopts `epoch_ms`.
    pub fn set(&self, slot: u32, epoch_ms: i64, score: f64) -> Result<()> {
        if !score.is_finite() || score < 0.0 {
            return Err(Error::invalid(format!(
                "popularity must be a finite number >= 0, got {score}"
            )));
        }
        let Some(cell) = self.scores.get(slot as usize) else {
            return Ok(());
        };
        let _ = self
            .epoch_ms
            .compare_exchange(0, epoch_ms, Relaxed, Relaxed);
        let shift = epoch_ms.saturating_sub(self.epoch_ms.load(Relaxed)) as f64 / HALF_LIFE_MS;
        let converted = (score * 2f64.powf(shift)).clamp(0.0, f64::MAX);
        cell.store(converted.to_bits(), Relaxed);
        self.changed();
        Ok(())
    }

    /// Popularity of `slot` as it stands at time `now_ms` (always finite).
    pub fn at(&self, slot: u32, now_ms: i64) -> f64 {
        let epoch = self.epoch_ms.load(Relaxed);
        let factor = 2f64.powf(-(now_ms.saturating_sub(epoch) as f64) / HALF_LIFE_MS);
        let p = self.raw(slot) * factor;
        if p.is_finite() {
            p
        } else {
            f64::MAX
        }
    }

    /// Writes the slots `live` accepts that have a score.
    pub fn encode(&self, w: &mut Writer, live: impl Fn(u32) -> bool) {
        let popular: Vec<u32> = (0..self.scores.len() as u32)
            .filter(|&s| self.raw(s) > 0.0 && live(s))
            .collect();
        w.u64(self.epoch_ms.load(Relaxed) as u64);
        w.u64(popular.len() as u64);
        for s in popular {
            w.u32(s);
            w.f64(self.raw(s));
        }
    }

    /// Reads what [`Popularity::encode`] wrote for a catalog of `slots` slots.
    pub fn decode(r: &mut Reader, slots: usize) -> Result<Popularity, String> {
        let epoch_ms = r.u64()? as i64;
        let n = r.count(12)?;
        if n > slots {
            return Err("popularity section larger than the catalog".into());
        }
        let mut p = Popularity::default();
        p.grow(slots);
        p.epoch_ms.store(epoch_ms, Relaxed);
        for _ in 0..n {
            let s = r.u32()? as usize;
            let v = r.f64()?;
            if s >= slots || !v.is_finite() || v < 0.0 {
                return Err("bad popularity record".into());
            }
            p.scores[s].store(v.to_bits(), Relaxed);
        }
        Ok(p)
    }

    pub fn heap_bytes(&self) -> usize {
        let ranking = self
            .ranking
            .lock()
            .as_ref()
            .map_or(0, |(_, t)| t.capacity() * 4);
        self.scores.capacity() * 8 + ranking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_decay_stay_finite_and_far_future_is_refused() {
        let mut p = Popularity::default();
        p.grow(3);
        p.record(0, 4.0, 1_000);
        p.record(1, 1.0, 1_000 + HALF_LIFE_MS as i64);
        assert!((p.at(0, 1_000 + HALF_LIFE_MS as i64) - 2.0).abs() < 1e-9);
        assert!((p.at(1, 1_000 + HALF_LIFE_MS as i64) - 1.0).abs() < 1e-9);
        // Events long after the epoch move it instead of overflowing.
        p.record(2, MAX_WEIGHT, MAX_EVENT_MS);
        p.record(2, MAX_WEIGHT, MAX_EVENT_MS);
        assert!((0..3).all(|s| p.at(s, MAX_EVENT_MS).is_finite() && p.raw(s).is_finite()));
        assert!(p.at(2, MAX_EVENT_MS) > 0.0);
        assert!(
            p.at(2, 0).is_finite(),
            "reading long before the epoch stays finite"
        );
        assert!(check_event_time(5_000, 1_000).is_ok());
        assert!(check_event_time(1_000 + MAX_FUTURE_MS + 1, 1_000).is_err());
    }
}
