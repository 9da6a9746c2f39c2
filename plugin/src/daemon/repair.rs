//! Repair while running: the daemon subscribes to containerd's image events, and when an image
//! that a present archive provides is deleted, loses a pin or is re-pointed by someone else, it
//! is restored from the record within moments — no archive byte read (the archive's lease holds
//! the content; only if content is gone is the archive imported again).
//!
//! Another actor that keeps undoing a repair does not make the daemon spin: after a few repairs
//! of one name in a short time, each further repair waits longer (up to 30 s), events in
//! between only make sure one check is pending, and each such episode is logged once. Events are
//! lost while containerd restarts or the subscription breaks, so after every (re)subscription,
//! and every `resync_seconds`, every record is verified as at startup (reading no archive).

use super::Daemon;
use crate::containerd::{Client, Event};
use crate::pins::Change;
use crate::service::Recalled;
use crate::state::verify::{Repair, Snapshot};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Repairs of one name within [`WINDOW`] beyond which further repairs are delayed.
const FREE_REPAIRS: usize = 3;
/// The window [`FREE_REPAIRS`] counts in.
const WINDOW: Duration = Duration::from_secs(10);
/// The first delay once an actor fights back; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest a repair waits.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// How long after asking for a subscription containerd surely has it (containerd confirms a
/// subscription only with its first event).
const SUBSCRIBED: Duration = Duration::from_millis(300);
/// Quiet time after which a name's episode is over (logged anew, delays reset).
const EPISODE_END: Duration = Duration::from_secs(60);

/// One name's recent repairs.
#[derive(Debug)]
struct Episode {
    recent: VecDeque<Instant>,
    delay: Duration,
    /// A check is scheduled (events meanwhile need nothing more).
    pending: bool,
    /// The episode's first repair was logged.
    announced: bool,
    /// The fight was logged.
    warned: bool,
    last: Instant,
}

impl Episode {
    fn new(now: Instant) -> Episode {
        Episode {
            recent: VecDeque::new(),
            delay: Duration::ZERO,
            pending: false,
            announced: false,
            warned: false,
            last: now,
        }
    }
}

/// The state of repairs across names.
#[derive(Default)]
pub struct Repairs {
    episodes: Mutex<HashMap<String, Episode>>,
    /// Repairs done, by what was wrong.
    counts: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Repairs {
    /// Repairs done so far, by what (`deleted`, `unpinned`, `repointed`, `relabelled`, `lease`,
    /// `reimported`).
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }

    fn count(&self, what: &'static str) {
        *self.counts.lock().unwrap().entry(what).or_default() += 1;
    }

    /// The names with a repair pending (waiting out a delay, or running).
    pub fn pending(&self) -> Vec<String> {
        self.episodes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.pending)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// How long the next check of `name` waits; `None` when one is pending already.
    fn schedule(&self, name: &str, now: Instant) -> Option<Duration> {
        let mut episodes = self.episodes.lock().unwrap();
        let e = episodes
            .entry(name.to_string())
            .or_insert_with(|| Episode::new(now));
        if e.pending {
            return None;
        }
        e.pending = true;
        Some(e.delay)
    }

    /// Notes the outcome of a check; returns whether to log the repair as news (the first of an
    /// episode) and whether the actor is now fought (delays start).
    fn done(&self, name: &str, repaired: bool, now: Instant) -> (bool, bool) {
        let mut episodes = self.episodes.lock().unwrap();
        let e = episodes
            .entry(name.to_string())
            .or_insert_with(|| Episode::new(now));
        e.pending = false;
        if !repaired {
            return (false, false);
        }
        if now.duration_since(e.last) > EPISODE_END {
            *e = Episode::new(now);
        }
        e.last = now;
        let first = !e.announced;
        e.announced = true;
        e.recent.push_back(now);
        while e
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            e.recent.pop_front();
        }
        let mut fighting = false;
        if e.recent.len() > FREE_REPAIRS {
            e.delay = (e.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
            fighting = !e.warned;
            e.warned = true;
        }
        (first, fighting)
    }
}

impl Daemon {
    /// Follows containerd's image events until shutdown, verifying every record after each
    /// (re)subscription and every `resync_seconds`.
    pub(super) async fn follow_events(self: Arc<Self>) {
        let resync = Duration::from_secs(self.cfg.resync_seconds);
        let mut first = true;
        loop {
            let Some(client) = self.connect().await else {
                return;
            };
            let mut events = match client.subscribe(&["^/images/"]).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to containerd's events; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Whatever happened while not subscribed (before the first subscription: since the
            // startup verification) is found by a full verification, once containerd surely has
            // the subscription (events meanwhile wait in the stream).
            tokio::time::sleep(SUBSCRIBED).await;
            let why = if first {
                "subscribed to containerd's events"
            } else {
                "reconnected to containerd"
            };
            self.resync(&client, why).await;
            self.following.store(true, Ordering::Relaxed);
            first = false;
            let mut ticker = (!resync.is_zero()).then(|| {
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                let tick = async {
                    match &mut ticker {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = tokio_stream::StreamExt::next(&mut events) => match ev {
                        Some(Ok(ev)) => self.on_event(&ev),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "the event subscription broke; subscribing again");
                            break;
                        }
                        None => {
                            tracing::info!("the event subscription ended (containerd restarted?); subscribing again");
                            break;
                        }
                    },
                    _ = tick => self.resync(&client, "periodic verification").await,
                }
                if self.cancelled() {
                    return;
                }
            }
            self.following.store(false, Ordering::Relaxed);
            self.importer.connection().lost();
        }
    }

    /// Whether the daemon follows containerd's events (see [`Daemon::follow_events`]).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    /// An image event: a name some present archive provides is checked (once, however many
    /// events arrive meanwhile).
    fn on_event(self: &Arc<Self>, ev: &Event) {
        let Some(name) = ev.image() else {
            return;
        };
        if !self.provides(name) || !self.startup_done() {
            return;
        }
        self.check_soon(name.to_string());
    }

    /// Schedules a check of `name`, delayed while another actor fights the repairs.
    pub(super) fn check_soon(self: &Arc<Self>, name: String) {
        let Some(delay) = self.repairs.schedule(&name, Instant::now()) else {
            return;
        };
        let d = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            d.restore(&name).await;
        });
    }

    /// Checks one name and restores it if needed.
    async fn restore(self: &Arc<Self>, name: &str) {
        let Some(client) = self.connect().await else {
            return;
        };
        let started = Instant::now();
        let result = self.assert_name(&client, name, None).await;
        let why = match &result {
            Ok(Change::Put(why)) => Some(*why),
            _ => None,
        };
        // Counted before the name stops being pending: a status that shows nothing restoring
        // has every finished repair in its counts.
        if let Some(why) = why {
            self.repairs.count(why.as_str());
            self.metrics.repaired(why.as_str());
        }
        let (first, fighting) = self.repairs.done(name, why.is_some(), Instant::now());
        match (&result, why) {
            (Ok(_), Some(why)) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let archive = self
                    .desired(name)
                    .map(|d| crate::escape::shown(&d.archive).to_string());
                let archive = archive.unwrap_or_default();
                if fighting {
                    tracing::warn!(image = %name, what = why.as_str(), "another actor keeps undoing the repair; repairing less often (at most every 30 s) while it goes on");
                } else if first {
                    tracing::info!(image = %name, %archive, what = why.as_str(), ms, "restored from the record");
                } else {
                    tracing::debug!(image = %name, what = why.as_str(), ms, "restored again");
                }
            }
            (Ok(_), None) => {}
            (Err(e), _) if e.class() == crate::error::Class::NotFound => {
                // The content is gone too: the archive is imported again, if it is there.
                if let Some(d) = self.desired(name) {
                    self.reimport(d.archive, &format!("{name}: {e}")).await;
                }
            }
            (Err(e), _) => {
                tracing::warn!(image = %name, error = %e, "could not restore the image; the next verification tries again");
            }
        }
    }

    /// Imports `archive` again because what containerd had of it is gone.
    async fn reimport(self: &Arc<Self>, archive: PathBuf, why: &str) {
        if archive.exists() {
            tracing::info!(archive = %crate::escape::shown(&archive), %why, "content is gone; importing the archive again");
            self.repairs.count("reimported");
            self.metrics.repaired("reimported");
            let d = self.clone();
            tokio::spawn(async move { d.reconcile(&archive, true).await });
        } else {
            tracing::error!(archive = %crate::escape::shown(&archive), %why, "content is gone and the archive was deleted after its import (intake directory): drop it again to restore its images");
            self.mark_failed(
                &archive,
                &format!("{why}; the archive was deleted after its import: drop it again"),
            );
        }
    }

    /// Counts repairs made from the records (at startup or a verification), by what was wrong.
    pub(super) fn count_repairs(&self, fixes: &[crate::state::verify::Fix]) {
        for f in fixes {
            self.repairs.count(f.what);
            self.metrics.repaired(f.what);
        }
    }

    /// Verifies every present archive's record against containerd, as at startup: what is
    /// missing is restored from the records (no archive read), and archives whose content is
    /// gone are imported again.
    pub(super) async fn resync(self: &Arc<Self>, client: &Client, why: &str) {
        self.importer.clean_leftovers(client).await;
        let snapshot = match Snapshot::take(client.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot verify the records");
                return;
            }
        };
        let mut repaired = 0;
        for record in self.present_records() {
            let won = self.won(&record);
            match self
                .importer
                .recall(client, &won, &snapshot, Repair::Yes)
                .await
            {
                Recalled::Stands => {}
                Recalled::Repaired(what) => {
                    self.count_repairs(&what);
                    repaired += what.len();
                }
                Recalled::Lost(w) => {
                    self.reimport(record.path.clone(), &w).await;
                }
            }
        }
        self.retry_and_resave();
        self.unpack_again(client).await;
        tracing::debug!(%why, repaired, "verified every record");
    }

    /// Archives whose images are not unpacked (it failed, or they were imported before
    /// unpacking was configured): unpacked now from containerd's content (no archive byte
    /// read), their records updated.
    async fn unpack_again(self: &Arc<Self>, client: &Client) {
        let Some(snapshotter) = self.cfg.unpack.clone() else {
            return;
        };
        let options = crate::unpack::Options {
            snapshotter,
            platforms: crate::unpack::plan::policy(&self.importer.options().plan.platforms),
        };
        for a in self.archives() {
            let Some(mut record) = a.record.clone() else {
                continue;
            };
            if record.unpacked_into == options.snapshotter
                || record.images.is_empty()
                || a.state != super::State::Imported
            {
                continue;
            }
            // What is prepared in flight is held by a lease of its own, which expires should
            // the daemon die meanwhile.
            let lease = format!(
                "{}{}-unpack",
                crate::labels::IMPORT_LEASE_PREFIX,
                crate::liveness::token()
            );
            if let Err(e) = client
                .create_lease(&lease, Default::default(), Some(Duration::from_secs(3600)))
                .await
            {
                tracing::warn!(error = %e, "cannot unpack again");
                return;
            }
            let leased = client.with_lease(Some(&lease));
            let report = crate::unpack::from_content(
                client,
                &leased,
                &options,
                &record.images,
                record.lease.as_deref(),
            )
            .await;
            let _ = client.delete_lease(&lease, false).await;
            let error = report.error().unwrap_or_default();
            if error.is_empty() {
                tracing::info!(archive = %crate::escape::shown(&record.path), images = report.images.len(), "unpacked at verification");
            } else if error != record.unpack_error {
                tracing::warn!(archive = %crate::escape::shown(&record.path), %error, "unpacking failed again");
            }
            let unpacked_into = if error.is_empty() {
                options.snapshotter.clone()
            } else {
                String::new()
            };
            if error != record.unpack_error || unpacked_into != record.unpacked_into {
                record.unpack_error = error;
                record.unpacked_into = unpacked_into;
                if let Err(e) = self.records().save(&record) {
                    tracing::warn!(error = %e, "cannot save the record");
                }
                self.set_state(
                    &record.path,
                    super::State::of(&record),
                    Some(Some(record.clone())),
                );
            }
        }
    }

    /// Imports that failed for a reason that may pass (containerd, a full disk) are tried again;
    /// records that could not be written (a full state directory) are written again.
    fn retry_and_resave(self: &Arc<Self>) {
        for a in self.archives() {
            let Some(record) = &a.record else { continue };
            let retryable = a.state == super::State::Failed
                && record.identity == crate::state::Identity::default()
                && a.path.exists();
            if retryable {
                tracing::info!(archive = %crate::escape::shown(&a.path), "trying the failed import again");
                let (d, path) = (self.clone(), a.path.clone());
                tokio::spawn(async move { d.reconcile(&path, false).await });
            } else if self.records().get(&record.path).as_ref() != Some(record) {
                match self.records().save(record) {
                    Ok(()) => {
                        tracing::info!(archive = %crate::escape::shown(&a.path), "state record written")
                    }
                    Err(e) => {
                        tracing::warn!(archive = %crate::escape::shown(&a.path), error = %e, "the state record still cannot be written")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_are_free_at_first_then_delayed_and_logged_once() {
        let r = Repairs::default();
        let t0 = Instant::now();
        let mut delays = Vec::new();
        let mut logs = Vec::new();
        for i in 0..8u64 {
            let now = t0 + Duration::from_millis(100 * i);
            delays.push(r.schedule("x", now).unwrap());
            // While a check is pending, another event schedules nothing.
            assert_eq!(r.schedule("x", now), None);
            logs.push(r.done("x", true, now));
        }
        assert_eq!(&delays[..4], &[Duration::ZERO; 4]);
        assert_eq!(delays[4], FIRST_DELAY);
        assert!(
            delays[5] > delays[4] && delays[7] <= MAX_DELAY,
            "{delays:?}"
        );
        // Logged as news once, as a fight once.
        assert_eq!(logs.iter().filter(|(first, _)| *first).count(), 1);
        assert_eq!(logs.iter().filter(|(_, fight)| *fight).count(), 1);
        // After a quiet minute the episode is over: free again.
        let later = t0 + Duration::from_secs(120);
        r.done("x", true, later);
        assert_eq!(r.schedule("x", later), Some(Duration::ZERO));
    }

    #[test]
    fn checks_that_find_nothing_are_not_repairs() {
        let r = Repairs::default();
        let t0 = Instant::now();
        for i in 0..20u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(r.schedule("y", now), Some(Duration::ZERO));
            assert_eq!(r.done("y", false, now), (false, false));
        }
        assert!(r.pending().is_empty());
    }
}
