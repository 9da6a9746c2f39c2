//! The unpacking of one import (or one retry) as it runs: what is known so far, which chains can
//! be committed now, and at most [`APPLIES_IN_FLIGHT`] of them being committed at a time.
//!
//! A chain is committed as soon as its layer blob is in the namespace and its parent chain is
//! committed, while the archive is still read. In direct mode the layer's blob is staged, not in
//! the namespace: it is claimed on its own for that ([`crate::store::Staging::claim_now`]), a
//! batch at a time, until the plan is known; from then on the record step claims what is left,
//! and the chains waiting for those blobs go on once it is done ([`Input::Recorded`]).

use super::apply::{self, Committed};
use super::plan::{self, Early, Node, Target};
use super::UnpackError;
use crate::containerd::Client;
use crate::digest::Digest;
use crate::platform::PlatformPolicy;
use crate::store::{ContentStore, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Chains committed at the same time: independent chains (images that share no more than their
/// base) are applied in parallel, up to this many.
pub const APPLIES_IN_FLIGHT: usize = 3;

/// What the scheduler hears.
pub enum Input {
    /// A blob is in the store.
    Stored(Digest, u64),
    /// A JSON document of the archive.
    Document(Digest, Vec<u8>),
    /// The plan is made: these targets and no others. No blob is claimed from now on; the
    /// sender hears once no claim is in flight any more (the record step may then claim).
    Plan(Vec<Target>, oneshot::Sender<()>),
    /// Every blob the plan needs is in the namespace.
    Recorded,
}

/// Where a chain stands.
#[derive(Debug, Clone)]
pub enum State {
    /// Being committed.
    Running,
    /// Committed.
    Done(Committed),
    /// It could not be committed, and why (shared by the chains above it).
    Failed(Arc<UnpackError>),
}

/// What the scheduler leaves: every chain's state and which blobs were applied for which diff
/// IDs.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The chains, by chain ID.
    pub states: HashMap<Digest, State>,
    /// The graph of the plan's targets.
    pub nodes: BTreeMap<Digest, Node>,
    /// Layer blobs applied now, with their diff IDs.
    pub applied: Vec<(Digest, Digest)>,
}

/// The scheduler of one import.
pub struct Scheduler {
    client: Client,
    snapshotter: String,
    policy: PlatformPolicy,
    /// The store, when its blobs must be claimed before the differ can read them.
    staging: Option<Arc<dyn ContentStore>>,
    /// Prefix of the chain lock keys: containerd, namespace and snapshotter.
    lock_prefix: String,
    early: Early,
    stored: HashMap<Digest, u64>,
    visible: HashSet<Digest>,
    claiming: HashSet<Digest>,
    /// Claims are made until the plan is known.
    claims_open: bool,
    /// Every blob is in the namespace.
    all_visible: bool,
    planned: Option<Vec<Target>>,
    nodes: BTreeMap<Digest, Node>,
    states: HashMap<Digest, State>,
    running: JoinSet<(Digest, Digest, Result<Committed, apply::ApplyError>)>,
    claims: JoinSet<(Vec<Digest>, Result<(), StoreError>)>,
    waiting_quiet: Vec<oneshot::Sender<()>>,
    applied: Vec<(Digest, Digest)>,
}

impl Scheduler {
    /// A scheduler committing chains in `snapshotter` through `client` (under the import's
    /// lease), for the platforms `policy` selects; `staging` is the store when it stages blobs.
    pub fn new(
        client: Client,
        snapshotter: &str,
        policy: PlatformPolicy,
        staging: Option<Arc<dyn ContentStore>>,
    ) -> Scheduler {
        let lock_prefix = format!(
            "{}|{}|{snapshotter}|",
            crate::escape::shown(&client.address()),
            client.namespace()
        );
        Scheduler {
            client,
            snapshotter: snapshotter.to_string(),
            policy,
            staging: staging.filter(|s| s.staging().is_some()),
            lock_prefix,
            early: Early::default(),
            stored: HashMap::new(),
            visible: HashSet::new(),
            claiming: HashSet::new(),
            claims_open: true,
            all_visible: false,
            planned: None,
            nodes: BTreeMap::new(),
            states: HashMap::new(),
            running: JoinSet::new(),
            claims: JoinSet::new(),
            waiting_quiet: Vec::new(),
            applied: Vec::new(),
        }
    }

    /// Runs until the input ends and nothing is left to commit.
    pub async fn run(mut self, mut input: mpsc::UnboundedReceiver<Input>) -> Outcome {
        let mut open = true;
        loop {
            self.schedule();
            if !open && self.running.is_empty() && self.claims.is_empty() {
                break;
            }
            tokio::select! {
                i = input.recv(), if open => match i {
                    Some(i) => self.take(i),
                    None => open = false,
                },
                Some(r) = self.running.join_next(), if !self.running.is_empty() => {
                    let (chain, blob, result) = r.expect("unpack task panicked");
                    let state = match result {
                        Ok(c) => {
                            if c == Committed::Applied {
                                let diff_id = self.nodes.get(&chain).map(|n| n.diff_id.clone());
                                self.applied.push((blob, diff_id.unwrap_or_else(|| chain.clone())));
                            }
                            State::Done(c)
                        }
                        Err(e) => State::Failed(Arc::new(e.into())),
                    };
                    self.states.insert(chain, state);
                }
                Some(r) = self.claims.join_next(), if !self.claims.is_empty() => {
                    let (batch, result) = r.expect("claim task panicked");
                    for d in &batch {
                        self.claiming.remove(d);
                    }
                    match result {
                        Ok(()) => self.visible.extend(batch),
                        // Left to the record step, which claims (or reports) it again.
                        Err(e) => tracing::warn!(error = %e, "claiming layers early failed; they are unpacked after the record step"),
                    }
                    if self.claims.is_empty() {
                        for w in self.waiting_quiet.drain(..) {
                            let _ = w.send(());
                        }
                    }
                }
            }
        }
        Outcome {
            states: self.states,
            nodes: self.nodes,
            applied: self.applied,
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Stored(d, size) => {
                self.stored.insert(d, size);
            }
            Input::Document(d, json) => {
                if self.planned.is_none() {
                    self.early.document(&d, &json);
                }
            }
            Input::Plan(targets, quiet) => {
                self.planned = Some(targets);
                self.claims_open = false;
                if self.claims.is_empty() {
                    let _ = quiet.send(());
                } else {
                    self.waiting_quiet.push(quiet);
                }
            }
            Input::Recorded => self.all_visible = true,
        }
        let targets = match &self.planned {
            Some(t) => t.clone(),
            None => self.early.targets(&self.policy, &self.stored),
        };
        self.nodes = plan::graph(&targets);
    }

    /// Whether the differ can read `blob` from the namespace now.
    fn is_visible(&self, blob: &Digest) -> bool {
        self.all_visible
            || self.visible.contains(blob)
            || (self.staging.is_none() && self.stored.contains_key(blob))
    }

    /// Starts what can start: a batch of claims, and chains whose blob is visible and whose
    /// parent is committed. Chains whose parent failed fail too.
    fn schedule(&mut self) {
        if self.claims_open && self.claims.is_empty() {
            if let Some(store) = self.staging.clone() {
                let batch: Vec<Digest> = self
                    .nodes
                    .values()
                    .filter_map(|n| n.blob.as_ref())
                    .map(|b| b.digest.clone())
                    .filter(|d| {
                        self.stored.contains_key(d)
                            && !self.visible.contains(d)
                            && !self.claiming.contains(d)
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if !batch.is_empty() {
                    self.claiming.extend(batch.iter().cloned());
                    let client = self.client.clone();
                    self.claims.spawn_blocking(move || {
                        let staging = store.staging().expect("a staging store");
                        let result = staging.claim_now(client.as_ref(), &batch);
                        (batch, result)
                    });
                }
            }
        }
        let mut failed = Vec::new();
        let mut ready = Vec::new();
        for node in self.nodes.values() {
            if self.states.contains_key(&node.chain) {
                continue;
            }
            let parent = node.parent.as_ref().map(|p| self.states.get(p));
            match parent {
                Some(Some(State::Failed(e))) => {
                    failed.push((node.chain.clone(), UnpackError::Parent(e.clone())));
                    continue;
                }
                Some(Some(State::Done(_))) | None => {}
                Some(_) => continue,
            }
            let Some(blob) = &node.blob else { continue };
            if self.is_visible(&blob.digest) {
                ready.push(node.clone());
            }
        }
        for (chain, e) in failed {
            self.states.insert(chain, State::Failed(Arc::new(e)));
        }
        for node in ready {
            if self.running.len() >= APPLIES_IN_FLIGHT {
                break;
            }
            let blob = node.blob.clone().expect("ready nodes have a blob");
            self.states.insert(node.chain.clone(), State::Running);
            let (client, snapshotter) = (self.client.clone(), self.snapshotter.clone());
            let key = format!("{}{}", self.lock_prefix, node.chain);
            self.running.spawn(async move {
                let _one = apply::lock(key).await;
                let r = apply::commit(client.as_ref(), &snapshotter, &node, &blob).await;
                (node.chain.clone(), blob.digest.clone(), r)
            });
        }
    }
}
