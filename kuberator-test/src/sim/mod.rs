//! A deterministic simulator: a user's operator, on one thread with virtual time, against
//! the in-memory API server, where a seed decides the order in which requests are answered
//! and watch events delivered, the faults (a crash at a write, a write whose answer is lost,
//! conflicts and server errors, cut watches, events of one object coalesced, a relist after
//! lost events), the waits, and a workload of user actions. The same seed gives the same
//! trace, line for line, in any process; [`Run::reached`] says which of the states known to
//! hide bugs ([`Reached`]) a run reached.
//!
//! ```no_run
//! # use kuberator_test::sim::{Simulation, Workload};
//! # fn widget(index: usize) -> serde_json::Value { serde_json::json!({}) }
//! # fn demo(crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) {
//! Simulation::new("my_operator_survives_the_simulator")
//!     .crd(crd)
//!     .process(|client| async move { let _ = client; /* start the operator on `client` */ })
//!     .workload(Workload::json("example.com/v1", "Widget", "widgets", "sim", widget))
//!     .check(0..100);
//! # }
//! ```
//!
//! # What a run checks
//!
//! At every step: no object is cleaned up twice in one life of the process (a successful
//! `handle_cleanup`, by uid), every object the operator manages
//! (`app.kubernetes.io/managed-by`) has a controller owner, and the invariants given with
//! [`Simulation::always`]. At rest (the workload done, faults off, everything answered and
//! delivered, nothing changing for two virtual minutes): no object is left with a
//! `deletionTimestamp` (no finalizer stranded), every object the operator created has a
//! controller owner, each workload object's
//! `status.observedGeneration` is its generation, the invariants given with
//! [`Simulation::at_rest`]; and over ten more virtual minutes the operator changes no object
//! (a write that changes nothing, as a periodic requeue's, is allowed) and reconciles each
//! object at most ten times.

mod observe;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::Response;
use http_body_util::BodyExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;

use self::observe::Observer;
use self::wire::Pending;
use self::wire::Transport;
use self::wire::Wire;
use crate::memory::MemoryServer;
use crate::memory::ResponseBody;
use crate::memory::store;

/// Starts one life of the process on a client.
type Start = Arc<dyn Fn(kube::Client) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// A user's spec edit: the object as JSON, and a number drawn from the seed.
type Edit = Arc<dyn Fn(&mut Value, u64) + Send + Sync>;
/// An invariant over the server's objects.
type Check = Arc<dyn Fn(&World) -> Result<(), String> + Send + Sync>;

/// The operator, its API and its workload, and what must hold; [`Simulation::run`] runs one
/// seed, [`Simulation::check`] many.
#[derive(Clone)]
pub struct Simulation {
    name: String,
    crds: Vec<CustomResourceDefinition>,
    start: Option<Start>,
    workloads: Vec<Workload>,
    given: Vec<Value>,
    always: Vec<(String, Check)>,
    at_rest: Vec<(String, Check)>,
    steps: usize,
    faults: bool,
    status: bool,
}

/// What a user does while the operator runs: creates objects of one kind, edits their
/// specs, deletes them, and edits and deletes the operator's children by hand.
#[derive(Clone)]
pub struct Workload {
    api_version: String,
    kind: String,
    plural: String,
    namespace: String,
    make: Arc<dyn Fn(usize) -> Value + Send + Sync>,
    edit: Edit,
    objects: usize,
}

impl Workload {
    /// Objects of `kind` (`api_version`, `plural`) in `namespace`, the `index`th made by
    /// `make` as JSON (its `metadata.name` at least, and its spec). Up to 3 objects; the
    /// default edit sets `spec.simulatedEdit` to a number. The user never deletes the first
    /// object, so that a run ends with one to check at rest.
    pub fn json(
        api_version: &str,
        kind: &str,
        plural: &str,
        namespace: &str,
        make: impl Fn(usize) -> Value + Send + Sync + 'static,
    ) -> Self {
        Workload {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.to_owned(),
            make: Arc::new(make),
            edit: Arc::new(|object, draw| object["spec"]["simulatedEdit"] = json!(draw % 1000)),
            objects: 3,
        }
    }

    /// Objects of the custom resource `K`, made by `make`.
    pub fn of<K>(namespace: &str, make: impl Fn(usize) -> K + Send + Sync + 'static) -> Self
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let api_version = K::api_version(&()).into_owned();
        let kind = K::kind(&()).into_owned();
        let plural = K::plural(&()).into_owned();
        Self::json(&api_version, &kind, &plural, namespace, move |index| {
            let mut object = serde_json::to_value(make(index)).unwrap_or_default();
            object["apiVersion"] = json!(K::api_version(&()));
            object["kind"] = json!(K::kind(&()));
            object
        })
    }

    /// How a spec edit changes an object: `edit` gets it as JSON and a number drawn from
    /// the seed.
    #[must_use]
    pub fn edit(mut self, edit: impl Fn(&mut Value, u64) + Send + Sync + 'static) -> Self {
        self.edit = Arc::new(edit);
        self
    }

    /// At most `objects` objects created in a run.
    #[must_use]
    pub fn objects(mut self, objects: usize) -> Self {
        self.objects = objects;
        self
    }

    fn collection(&self) -> String {
        collection(&self.api_version, &self.plural, Some(&self.namespace))
    }

    fn is_mine(&self, object: &Value) -> bool {
        object["kind"] == self.kind.as_str()
            && object["apiVersion"] == self.api_version.as_str()
            && object["metadata"]["namespace"] == self.namespace.as_str()
    }
}

/// The server's objects at one moment, as a client sees them.
#[derive(Debug)]
pub struct World {
    objects: Vec<Value>,
}

impl World {
    /// Every object, by kind and then namespace and name.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// The objects of `K`.
    pub fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        self.objects
            .iter()
            .filter(|object| {
                object["kind"] == K::kind(&()).as_ref()
                    && object["apiVersion"] == K::api_version(&()).as_ref()
            })
            .filter_map(|object| serde_json::from_value(object.clone()).ok())
            .collect()
    }
}

/// One run of one seed.
#[derive(Debug, Clone)]
pub struct Run {
    /// The seed.
    pub seed: u64,
    /// One line per step: what the simulator did.
    pub trace: Vec<String>,
    /// What failed, and at which step; `None` when every check held.
    pub failure: Option<Failure>,
    /// The states known to hide bugs that the run reached.
    pub reached: std::collections::BTreeSet<Reached>,
    /// The draws the run made, which [`Simulation::check`] shrinks.
    draws: Vec<u64>,
}

/// A state known to hide operator bugs, which a run reached: [`Run::reached`], and how many
/// seeds reached each in [`Summary::reached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reached {
    /// The process crashed right after a write it made reached the server.
    CrashAfterWrite,
    /// A write was done and its answer lost: the process saw an error.
    LostAnswer,
    /// Events of one object were coalesced: the process saw only the newest.
    Coalesced,
    /// The server's history was compacted while events were undelivered: the process had to
    /// relist.
    Relist,
    /// A child deleted by the garbage collector (its parent gone) was seen gone before the
    /// parent was: a reconcile of the parent can start from a cache that still holds it,
    /// finalizer and all, after its cleanup ran.
    ChildGoneBeforeParent,
    /// A child was deleted by hand while the process's watch of its kind was down, and the
    /// process then listed that kind: only the relist shows it gone.
    RelistAfterHandDelete,
}

impl std::fmt::Display for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reached::CrashAfterWrite => "a crash right after a write",
            Reached::LostAnswer => "a write whose answer was lost",
            Reached::Coalesced => "events of one object coalesced",
            Reached::Relist => "a relist after compacted history",
            Reached::ChildGoneBeforeParent => {
                "a child's garbage-collected DELETED delivered before its parent's"
            }
            Reached::RelistAfterHandDelete => "a child deleted by hand during a watch outage, then a relist",
        })
    }
}

/// A check that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which check: `cleanup once`, `controller owner`, `stranded finalizer`, `converged`,
    /// `at rest`, `came to rest`, `process exited`, or the name of one of yours.
    pub check: String,
    /// What it found.
    pub message: String,
    /// The step it failed at.
    pub step: usize,
}

/// What [`Simulation::check`] ran.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds a second.
    pub seeds_per_second: f64,
    /// How many seeds reached each state known to hide bugs.
    pub reached: std::collections::BTreeMap<Reached, u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seeds passed, {:.1} seeds/s", self.seeds, self.seeds_per_second)?;
        for (state, seeds) in &self.reached {
            write!(f, "; {state}: {seeds}")?;
        }
        Ok(())
    }
}

impl Simulation {
    /// A simulation named after the test that runs it (the replay command names it).
    pub fn new(name: &str) -> Self {
        Simulation {
            name: name.to_owned(),
            crds: Vec::new(),
            start: None,
            workloads: Vec::new(),
            given: Vec::new(),
            always: Vec::new(),
            at_rest: Vec::new(),
            steps: 300,
            faults: true,
            status: true,
        }
    }

    /// Installs `crd` before the operator starts.
    #[must_use]
    pub fn crd(mut self, crd: CustomResourceDefinition) -> Self {
        self.crds.push(crd);
        self
    }

    /// The process: `start` runs one life of it on the client it is given (a crash drops
    /// it, a restart calls `start` again), for a derived operator
    /// `kuberator::Operators::new().with(MyOperator::default()).start(client, None::<std::future::Pending<()>>)`.
    #[must_use]
    pub fn process<F>(mut self, start: impl Fn(kube::Client) -> F + Send + Sync + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.start = Some(Arc::new(move |client| Box::pin(start(client))));
        self
    }

    /// What the user does; several workloads (of several kinds) take turns, as the seed
    /// draws them.
    #[must_use]
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workloads.push(workload);
        self
    }

    /// An object on the server before the process starts (a Secret the operator reads, a
    /// namespace of its own), as JSON with `apiVersion`, `kind` and `metadata.name` at least.
    #[must_use]
    pub fn given(mut self, object: Value) -> Self {
        self.given.push(object);
        self
    }

    /// An invariant checked after every step.
    #[must_use]
    pub fn always(
        mut self,
        name: &str,
        check: impl Fn(&World) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.always.push((name.to_owned(), Arc::new(check)));
        self
    }

    /// An invariant checked once the run is at rest.
    #[must_use]
    pub fn at_rest(
        mut self,
        name: &str,
        check: impl Fn(&World) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.at_rest.push((name.to_owned(), Arc::new(check)));
        self
    }

    /// Steps before the run comes to rest (300 by default).
    #[must_use]
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// No faults: only the order of answers and events, waits and the workload.
    #[must_use]
    pub fn without_faults(mut self) -> Self {
        self.faults = false;
        self
    }

    /// The workload's objects need not carry `status.observedGeneration` at rest.
    #[must_use]
    pub fn without_status(mut self) -> Self {
        self.status = false;
        self
    }

    /// Runs one seed.
    ///
    /// # Panics
    ///
    /// When no process was given.
    pub fn run(&self, seed: u64) -> Run {
        self.run_draws(seed, Draws::random(seed), self.steps)
    }

    /// Runs `seeds` (or only `KUBERATOR_SIM_SEED`, or the first `KUBERATOR_SIM_SEEDS` of them);
    /// on the first failure, shrinks it to fewer steps and faults and panics with its trace
    /// and the command that replays it.
    ///
    /// # Panics
    ///
    /// When a seed fails.
    pub fn check(&self, seeds: std::ops::Range<u64>) -> Summary {
        let seeds = match std::env::var("KUBERATOR_SIM_SEED").ok().and_then(|seed| seed.parse::<u64>().ok()) {
            Some(seed) => seed..seed + 1,
            None => {
                match std::env::var("KUBERATOR_SIM_SEEDS").ok().and_then(|count| count.parse::<u64>().ok()) {
                    Some(count) => seeds.start..seeds.start + count,
                    None => seeds,
                }
            }
        };
        let started = std::time::Instant::now();
        let count = seeds.end - seeds.start;
        let mut reached = std::collections::BTreeMap::new();
        for seed in seeds {
            let run = self.run(seed);
            if run.failure.is_some() {
                let shrunk = self.shrink(&run);
                panic!("{}", self.explain(&(run, shrunk)));
            }
            for state in run.reached {
                *reached.entry(state).or_default() += 1;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        Summary { seeds: count, seeds_per_second: count as f64 / seconds.max(1e-9), reached }
    }

    /// Runs `seed`; when it fails, the run and the shrunk run.
    pub fn find(&self, seed: u64) -> Option<(Run, Run)> {
        let run = self.run(seed);
        run.failure.is_some().then(|| {
            let shrunk = self.shrink(&run);
            (run, shrunk)
        })
    }

    fn explain(&self, (run, shrunk): &(Run, Run)) -> String {
        let failure = shrunk.failure.as_ref().or(run.failure.as_ref()).expect("a failed run");
        format!(
            "seed {} failed `{}` at step {}: {}\nreplay: KUBERATOR_SIM_SEED={} cargo test {}\nshrunk from {} to {} steps:\n{}",
            run.seed,
            failure.check,
            failure.step,
            failure.message,
            run.seed,
            self.name,
            run.trace.len(),
            shrunk.trace.len(),
            abridged(&shrunk.trace)
        )
    }

    /// Fewer steps (halved while the same check still fails, then searched between), and
    /// draws set to their first (most benign) choice, while the same check still fails.
    fn shrink(&self, run: &Run) -> Run {
        let Some(failure) = &run.failure else { return run.clone() };
        let same =
            |candidate: &Run| candidate.failure.as_ref().is_some_and(|found| found.check == failure.check);
        let mut best = run.clone();
        // At most 50 runs, and 20 seconds.
        let mut budget = 50;
        let started = std::time::Instant::now();
        // Fewer steps before the rest: halved while the same check still fails, then the
        // draws of the steps kept.
        let mut steps = (failure.step + 1).min(self.steps);
        let mut fewer = steps / 2;
        while fewer > 0 && budget > 0 && started.elapsed() < Duration::from_secs(20) {
            budget -= 1;
            let candidate = self.run_draws(run.seed, Draws::replay(run.draws.clone()), fewer);
            if same(&candidate) {
                (best, steps) = (candidate, fewer);
                fewer /= 2;
            } else {
                fewer = (fewer + steps) / 2;
                if fewer + 1 >= steps {
                    break;
                }
            }
        }
        let mut index = best.draws.len();
        while index > 0 && budget > 0 && started.elapsed() < Duration::from_secs(20) {
            index -= 1;
            if best.draws[index] == 0 {
                continue;
            }
            let mut draws = best.draws.clone();
            draws[index] = 0;
            budget -= 1;
            let candidate = self.run_draws(run.seed, Draws::replay(draws), steps);
            if same(&candidate) {
                best = candidate;
                index = index.min(best.draws.len());
            }
        }
        best
    }

    fn run_draws(&self, seed: u64, draws: Draws, steps: usize) -> Run {
        let start = self.start.clone().expect("Simulation::process names the operator to run");
        let mut world = Sim::new(self, seed, draws, start);
        let failure = world.drive(steps).err();
        world.finish();
        Run { seed, trace: world.trace, failure, reached: world.reached, draws: world.draws.taken }
    }
}

/// The numbers a run draws: from its seed, or replayed (and then 0 past the end).
struct Draws {
    state: Option<u64>,
    replay: Vec<u64>,
    taken: Vec<u64>,
}

impl Draws {
    fn random(seed: u64) -> Self {
        Draws { state: Some(seed ^ 0x5EED_5EED_5EED_5EED), replay: Vec::new(), taken: Vec::new() }
    }

    fn replay(draws: Vec<u64>) -> Self {
        Draws { state: None, replay: draws, taken: Vec::new() }
    }

    fn next(&mut self) -> u64 {
        let draw = match &mut self.state {
            Some(state) => store::split_mix(state),
            None => self.replay.get(self.taken.len()).copied().unwrap_or(0),
        };
        self.taken.push(draw);
        draw
    }

    /// One of `weights`, by weight; the first for a draw of 0.
    fn pick(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return 0;
        }
        let mut point = self.next() % total;
        for (index, weight) in weights.iter().enumerate() {
            if point < *weight {
                return index;
            }
            point -= weight;
        }
        weights.len() - 1
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Answer(usize),
    Deliver(usize),
    Act,
    Wait(Duration),
    Fail(usize, u16),
    LoseAnswer(usize),
    Crash(usize),
    Cut(usize),
    Coalesce(usize),
    Relist,
}

/// Midnight, 1 January 2030: where virtual time starts.
const EPOCH_SECONDS: i64 = 1_893_456_000;

/// One process life: its runtime, on this thread, with a paused clock.
struct Life {
    runtime: tokio::runtime::Runtime,
    process: tokio::task::JoinHandle<()>,
}

struct Sim<'a> {
    simulation: &'a Simulation,
    server: MemoryServer,
    wire: Arc<Mutex<Wire>>,
    start: Start,
    life: Option<Life>,
    lives: u32,
    observer: Observer,
    _subscriber: tracing::subscriber::DefaultGuard,
    draws: Draws,
    trace: Vec<String>,
    elapsed: Duration,
    step: usize,
    /// Objects each workload created.
    created: Vec<usize>,
    writes: u64,
    /// The uids of the objects the process created.
    made: std::collections::BTreeSet<String>,
    reached: std::collections::BTreeSet<Reached>,
    /// The uids of the children the user deleted.
    deleted_by_hand: std::collections::BTreeSet<String>,
    /// The plurals of children deleted by hand while no watch of them was open, until the
    /// process lists them.
    deleted_unwatched: std::collections::BTreeSet<String>,
    /// The uids of the objects the process has been shown, by a list or a watch event.
    shown: std::collections::BTreeSet<String>,
}

impl<'a> Sim<'a> {
    fn new(simulation: &'a Simulation, seed: u64, draws: Draws, start: Start) -> Self {
        store::set_deterministic(Some(store::Deterministic {
            state: seed,
            now: jiff::Timestamp::from_second(EPOCH_SECONDS).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        }));
        fastrand::seed(seed);
        kuberator::backoff::seed_jitter(Some(seed));
        let observer = Observer::default();
        let subscriber = tracing_subscriber::registry().with(observer.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        let server = MemoryServer::with_bookmarks_every(Duration::from_secs(24 * 3600));
        let mut sim = Sim {
            simulation,
            server,
            wire: Arc::new(Mutex::new(Wire::default())),
            start,
            life: None,
            lives: 0,
            observer,
            _subscriber: guard,
            draws,
            trace: Vec::new(),
            elapsed: Duration::ZERO,
            step: 0,
            created: vec![0; simulation.workloads.len()],
            writes: 0,
            made: std::collections::BTreeSet::new(),
            reached: std::collections::BTreeSet::new(),
            deleted_by_hand: std::collections::BTreeSet::new(),
            deleted_unwatched: std::collections::BTreeSet::new(),
            shown: std::collections::BTreeSet::new(),
        };
        let mut namespaces: Vec<&str> =
            simulation.workloads.iter().map(|workload| workload.namespace.as_str()).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            for crd in &simulation.crds {
                let body = serde_json::to_vec(crd).unwrap_or_default();
                sim.server
                    .answer(post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body))
                    .await;
            }
            for namespace in namespaces.into_iter().filter(|namespace| *namespace != "default") {
                let body = serde_json::to_vec(
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
                )
                .unwrap_or_default();
                sim.server.answer(post("/api/v1/namespaces", body)).await;
            }
            for object in &simulation.given {
                let path = self_link(&sim.server, object);
                let collection = path.rsplit_once('/').map_or(path.as_str(), |(collection, _)| collection);
                let response =
                    sim.server.answer(post(collection, serde_json::to_vec(object).unwrap_or_default())).await;
                assert!(
                    response.status().is_success(),
                    "the simulation's given {} could not be created: {}",
                    describe(object),
                    response.status()
                );
            }
        });
        sim.begin_life();
        sim
    }

    fn begin_life(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime with a paused clock");
        let transport = Transport { wire: Arc::clone(&self.wire), server: self.server.clone() };
        // The client's buffer runs as a task of this life.
        let entered = runtime.enter();
        let client = kube::Client::new(transport, "default");
        let process = tokio::spawn((self.start)(client));
        drop(entered);
        self.lives += 1;
        self.observer.with(|seen| seen.cleanups.clear());
        self.shown.clear();
        self.life = Some(Life { runtime, process });
        self.settle(Duration::from_millis(1));
    }

    fn crash(&mut self) {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner).clear();
        // Dropping the runtime drops every task of the process: it is gone, mid-write or not.
        if let Some(life) = self.life.take() {
            drop(life.process);
            life.runtime.shutdown_background();
        }
        self.begin_life();
    }

    /// Lets the process run until every task of it waits, `by` of virtual time later.
    fn settle(&mut self, by: Duration) {
        if let Some(life) = &self.life {
            life.runtime.block_on(async move { tokio::time::sleep(by).await });
        }
        self.elapsed += by;
        let now = jiff::Timestamp::from_second(EPOCH_SECONDS).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            + jiff::SignedDuration::try_from(self.elapsed).unwrap_or_default();
        store::set_now(now);
        self.wire.lock().unwrap_or_else(PoisonError::into_inner).sort();
    }

    fn say(&mut self, what: impl std::fmt::Display) {
        let millis = self.elapsed.as_millis();
        self.trace.push(format!("{:>5} {:>7}.{:03}s {what}", self.step, millis / 1000, millis % 1000));
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        match &self.life {
            Some(life) => life.runtime.block_on(future),
            None => {
                tokio::runtime::Builder::new_current_thread().build().expect("a runtime").block_on(future)
            }
        }
    }

    /// The steps, then rest; the first check that fails.
    fn drive(&mut self, steps: usize) -> Result<(), Failure> {
        for step in 0..steps {
            self.step = step;
            self.one_step(true)?;
            self.check_always()?;
        }
        self.step = steps;
        self.rest()
    }

    fn one_step(&mut self, faults: bool) -> Result<(), Failure> {
        let faults = faults && self.simulation.faults;
        // A watch reopened before the process listed: it sees the delete as an event.
        {
            let wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
            self.deleted_unwatched.retain(|plural| !wire.pipes.iter().any(|pipe| pipe.watches(plural)));
        }
        let (pending, writes, pipes): (usize, Vec<usize>, Vec<usize>) = {
            let wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
            let writes = wire
                .pending
                .iter()
                .enumerate()
                .filter(|(_, pending)| pending.is_write())
                .map(|(index, _)| index)
                .collect();
            let pipes = wire
                .pipes
                .iter()
                .enumerate()
                .filter(|(_, pipe)| !pipe.arrived.is_empty())
                .map(|(index, _)| index)
                .collect();
            (wire.pending.len(), writes, pipes)
        };
        let mut options: Vec<(u64, Choice)> = Vec::new();
        options.extend((0..pending).map(|index| (10, Choice::Answer(index))));
        options.extend(pipes.iter().map(|index| (10, Choice::Deliver(*index))));
        if self.actions_left() {
            options.push((3, Choice::Act));
        }
        options.push((2, Choice::Wait(Duration::from_millis(10))));
        options.push((2, Choice::Wait(Duration::from_secs(1))));
        options.push((1, Choice::Wait(Duration::from_secs(30))));
        if faults {
            for index in 0..pending {
                options.push((1, Choice::Fail(index, 500)));
                options.push((1, Choice::Fail(index, 429)));
            }
            for index in &writes {
                options.push((1, Choice::Fail(*index, 409)));
                options.push((1, Choice::LoseAnswer(*index)));
                if self.lives < 4 {
                    options.push((1, Choice::Crash(*index)));
                }
            }
            let (open, coalescing): (usize, Vec<usize>) = {
                let wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
                let coalescing = wire
                    .pipes
                    .iter()
                    .enumerate()
                    .filter(|(_, pipe)| pipe.can_coalesce())
                    .map(|(index, _)| index)
                    .collect();
                (wire.pipes.len(), coalescing)
            };
            options.extend((0..open).map(|index| (1, Choice::Cut(index))));
            options.extend(coalescing.into_iter().map(|index| (2, Choice::Coalesce(index))));
            if open > 0 {
                options.push((1, Choice::Relist));
            }
        }
        let weights: Vec<u64> = options.iter().map(|(weight, _)| *weight).collect();
        let choice = options[self.draws.pick(&weights)].1;
        if std::env::var_os("KUBERATOR_SIM_DEBUG").is_some() {
            let wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
            let waiting: Vec<String> = wire.pending.iter().map(Pending::describe).collect();
            let watches: Vec<String> = wire
                .pipes
                .iter()
                .map(|pipe| format!("{}#{}:{}", pipe.key.0, pipe.key.1, pipe.arrived.len()))
                .collect();
            drop(wire);
            self.say(format!("  waiting {waiting:?}; watches {watches:?}"));
        }
        self.take(choice)
    }

    fn actions_left(&self) -> bool {
        !self.simulation.workloads.is_empty()
    }

    fn take(&mut self, choice: Choice) -> Result<(), Failure> {
        match choice {
            Choice::Answer(index) => {
                let pending = self.remove_pending(index);
                let what = pending.describe();
                if pending.key.0 == "GET" {
                    let path = pending.request.uri().path().to_owned();
                    let before = self.deleted_unwatched.len();
                    self.deleted_unwatched.retain(|plural| !path.ends_with(&format!("/{plural}")));
                    if self.deleted_unwatched.len() < before {
                        self.reached.insert(Reached::RelistAfterHandDelete);
                    }
                }
                let response = self.execute(&pending);
                self.say(format!("answer {what}: {}", response.status().as_u16()));
                pending.answer(response);
            }
            Choice::Fail(index, code) => {
                let pending = self.remove_pending(index);
                self.say(format!("fail {} with {code}", pending.describe()));
                pending.answer(status(code));
            }
            Choice::LoseAnswer(index) => {
                let pending = self.remove_pending(index);
                let done = self.execute(&pending).status().as_u16();
                self.reached.insert(Reached::LostAnswer);
                self.say(format!("do {} ({done}), answer 504 (the answer is lost)", pending.describe()));
                pending.answer(status(504));
            }
            Choice::Crash(index) => {
                let pending = self.remove_pending(index);
                let done = self.execute(&pending).status().as_u16();
                self.reached.insert(Reached::CrashAfterWrite);
                self.say(format!("do {} ({done}), then crash the process; restart", pending.describe()));
                drop(pending);
                self.crash();
                return Ok(());
            }
            Choice::Deliver(index) => {
                let delivered =
                    self.wire.lock().unwrap_or_else(PoisonError::into_inner).pipes[index].deliver_one();
                let (summary, event) = delivered.unwrap_or_default();
                if let Some(uid) = event["object"]["metadata"]["uid"].as_str() {
                    self.shown.insert(uid.to_owned());
                }
                if self.parent_still_there(&event) {
                    self.reached.insert(Reached::ChildGoneBeforeParent);
                }
                self.say(format!("deliver {summary}"));
            }
            Choice::Coalesce(index) => {
                let mut wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
                let pipe = &mut wire.pipes[index];
                let dropped = pipe.coalesce();
                let uri = pipe.key.0.split('?').next().unwrap_or_default().to_owned();
                drop(wire);
                self.reached.insert(Reached::Coalesced);
                self.say(format!(
                    "coalesce the events of {uri}: {dropped} older events of the same objects dropped"
                ));
            }
            Choice::Cut(index) => {
                let mut wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
                let pipe = &mut wire.pipes[index];
                let lost = pipe.arrived.len();
                let uri = pipe.key.0.split('?').next().unwrap_or_default().to_owned();
                pipe.cut();
                drop(wire);
                self.say(format!("cut the watch of {uri} ({lost} events undelivered)"));
            }
            Choice::Relist => {
                let lost: usize = {
                    let mut wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
                    let lost = wire.pipes.iter().map(|pipe| pipe.arrived.len()).sum();
                    for pipe in &mut wire.pipes {
                        pipe.cut();
                    }
                    lost
                };
                self.server.expire_resource_versions();
                if lost > 0 {
                    self.reached.insert(Reached::Relist);
                }
                self.say(format!(
                    "cut every watch and compact history: {lost} events lost, a relist must recover them"
                ));
            }
            Choice::Act => self.act(),
            Choice::Wait(by) => {
                self.settle(by);
                self.say(format!("wait {by:?}"));
                return self.process_alive();
            }
        }
        self.settle(Duration::from_millis(1));
        self.process_alive()
    }

    fn process_alive(&self) -> Result<(), Failure> {
        match &self.life {
            Some(life) if life.process.is_finished() => {
                Err(self.failure("process exited", "the operator's process ended on its own"))
            }
            _ => Ok(()),
        }
    }

    fn remove_pending(&mut self, index: usize) -> Pending {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner).pending.remove(index)
    }

    fn execute(&mut self, pending: &Pending) -> Response<ResponseBody> {
        if pending.is_write() {
            self.writes += 1;
        }
        let request = pending.request.clone();
        let server = self.server.clone();
        let (parts, body) = self.block_on(async move {
            let (parts, body) = server.answer(request).await.into_parts();
            (parts, body.collect().await.map(|body| body.to_bytes()).unwrap_or_default())
        });
        if let Ok(list) = serde_json::from_slice::<Value>(&body)
            && let Some(items) = list["items"].as_array()
        {
            let uids = items.iter().filter_map(|item| item["metadata"]["uid"].as_str());
            self.shown.extend(uids.map(str::to_owned));
        }
        // What the process made: each must have an owner at rest.
        if parts.status == http::StatusCode::CREATED
            && let Ok(object) = serde_json::from_slice::<Value>(&body)
            && object["metadata"]["uid"].is_string()
        {
            self.made.insert(object["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
        }
        Response::from_parts(parts, http_body_util::Full::new(body).boxed_unsync())
    }

    /// One user action: create the next object, edit or delete one, or delete a child.
    fn act(&mut self) {
        if self.simulation.workloads.is_empty() {
            return;
        }
        let workloads = self.simulation.workloads.len();
        let turn = if workloads == 1 { 0 } else { (self.draws.next() % workloads as u64) as usize };
        let workload = self.simulation.workloads[turn].clone();
        let objects = self.server.snapshot();
        let mine: Vec<&Value> = objects.iter().filter(|object| workload.is_mine(object)).collect();
        // The first object is never deleted: the run ends with one to check at rest.
        let first = (workload.make)(0)["metadata"]["name"].clone();
        let deletable: Vec<&Value> =
            mine.iter().copied().filter(|object| object["metadata"]["name"] != first).collect();
        let children: Vec<&Value> = objects.iter().filter(|object| controller_of(object).is_some()).collect();
        let weights = [
            u64::from(self.created[turn] < workload.objects) * 4,
            u64::from(!mine.is_empty()) * 3,
            u64::from(!deletable.is_empty()) * 2,
            u64::from(!children.is_empty()),
            u64::from(!children.is_empty()),
        ];
        if weights.iter().all(|weight| *weight == 0) {
            self.say("nothing for the user to do".to_owned());
            return;
        }
        let collection = workload.collection();
        let (what, request) = match self.draws.pick(&weights) {
            0 => {
                let object = (workload.make)(self.created[turn]);
                self.created[turn] += 1;
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                (
                    format!("user creates {} {name}", workload.kind),
                    post(&collection, serde_json::to_vec(&object).unwrap_or_default()),
                )
            }
            1 => {
                let mut object = mine[(self.draws.next() % mine.len() as u64) as usize].clone();
                (workload.edit)(&mut object, self.draws.next());
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                let body = serde_json::to_vec(&object).unwrap_or_default();
                (
                    format!("user edits the spec of {} {name}", workload.kind),
                    request("PUT", &format!("{collection}/{name}"), body),
                )
            }
            2 => {
                let object = deletable[(self.draws.next() % deletable.len() as u64) as usize];
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                (
                    format!("user deletes {} {name}", workload.kind),
                    request("DELETE", &format!("{collection}/{name}"), Vec::new()),
                )
            }
            3 => {
                let child = children[(self.draws.next() % children.len() as u64) as usize];
                let path = self_link(&self.server, child);
                self.deleted_by_hand.insert(child["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
                let plural = self.plural_of(child);
                let shown = child["metadata"]["uid"].as_str().is_some_and(|uid| self.shown.contains(uid));
                let watched = !shown
                    || self
                        .wire
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pipes
                        .iter()
                        .any(|pipe| pipe.watches(&plural));
                if !watched {
                    self.deleted_unwatched.insert(plural);
                }
                (format!("user deletes the child {}", describe(child)), request("DELETE", &path, Vec::new()))
            }
            _ => {
                // A hand edit of what the operator keeps: its first data value, or a label.
                let mut child = children[(self.draws.next() % children.len() as u64) as usize].clone();
                let path = self_link(&self.server, &child);
                let edit = self.draws.next() % 1000;
                match child["data"].as_object().and_then(|data| data.keys().next().cloned()) {
                    Some(key) => child["data"][&key] = json!(format!("edited by hand {edit}")),
                    None => child["metadata"]["labels"]["sim.kuberator.dev/edited"] = json!(edit.to_string()),
                }
                let body = serde_json::to_vec(&child).unwrap_or_default();
                (format!("user edits the child {} by hand", describe(&child)), request("PUT", &path, body))
            }
        };
        let server = self.server.clone();
        let code = self.block_on(async move { server.answer(request).await.status().as_u16() });
        self.say(format!("{what}: {code}"));
    }

    /// Whether `event` is the DELETED of a child the garbage collector removed (not the user)
    /// while its controller's own DELETED still waits undelivered.
    fn parent_still_there(&self, event: &Value) -> bool {
        let object = &event["object"];
        let Some(owner) = controller_of(object) else { return false };
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
        event["type"] == "DELETED"
            && !self.deleted_by_hand.contains(uid)
            && self
                .wire
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pipes
                .iter()
                .any(|pipe| pipe.holds("DELETED", owner))
    }

    fn plural_of(&self, object: &Value) -> String {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        self.server.plural_of(api_version, kind).unwrap_or_default()
    }

    fn world(&self) -> World {
        World { objects: self.server.snapshot() }
    }

    fn failure(&self, check: &str, message: impl Into<String>) -> Failure {
        Failure { check: check.to_owned(), message: message.into(), step: self.step }
    }

    fn check_always(&mut self) -> Result<(), Failure> {
        if let Some(twice) = self.observer.with(|seen| seen.twice.take()) {
            return Err(self.failure(
                "cleanup once",
                format!("handle_cleanup succeeded twice in one life of the process for {twice}"),
            ));
        }
        let world = self.world();
        for object in world.objects() {
            if object["metadata"]["labels"]["app.kubernetes.io/managed-by"].is_string()
                && controller_of(object).is_none()
            {
                return Err(
                    self.failure("controller owner", format!("{} has no controller owner", describe(object)))
                );
            }
        }
        for (name, check) in &self.simulation.always {
            check(&world).map_err(|message| self.failure(name, message))?;
        }
        Ok(())
    }

    /// Faults off: answers and delivers everything until nothing changes for two virtual
    /// minutes; then the checks at rest, and ten more minutes with no write.
    fn rest(&mut self) -> Result<(), Failure> {
        // At rest: nothing waiting, nothing to deliver, and no change on the server for two
        // minutes (a retry that keeps failing changes nothing: the checks below judge it).
        let mut version = self.state_version();
        let mut changed = self.elapsed;
        let resting = self.elapsed;
        loop {
            if self.elapsed - resting > Duration::from_secs(300) {
                return Err(self.failure(
                    "came to rest",
                    "the operator still changed objects five virtual minutes after the user stopped and the faults ended: a hot loop?",
                ));
            }
            let (pending, arrived) = {
                let wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
                (!wire.pending.is_empty(), wire.pipes.iter().position(|pipe| !pipe.arrived.is_empty()))
            };
            if pending {
                self.take(Choice::Answer(0))?;
            } else if let Some(index) = arrived {
                self.take(Choice::Deliver(index))?;
            } else if self.elapsed - changed >= Duration::from_secs(120) {
                break;
            } else {
                self.settle(Duration::from_secs(1));
            }
            self.check_always()?;
            let now = self.state_version();
            if now != version {
                (version, changed) = (now, self.elapsed);
            }
        }
        self.say("at rest".to_owned());
        let world = self.world();
        for object in world.objects() {
            if object["metadata"]["deletionTimestamp"].is_string() {
                return Err(self.failure(
                    "stranded finalizer",
                    format!(
                        "{} is being deleted and still has finalizers {}",
                        describe(object),
                        object["metadata"]["finalizers"]
                    ),
                ));
            }
        }
        for object in world.objects() {
            let made = object["metadata"]["uid"].as_str().is_some_and(|uid| self.made.contains(uid));
            let workload = self.simulation.workloads.iter().any(|workload| workload.is_mine(object));
            if made && !workload && controller_of(object).is_none() && object["kind"] != "Lease" {
                return Err(self.failure(
                    "controller owner",
                    format!(
                        "{} was made by the operator and has no controller owner: it outlives its parent",
                        describe(object)
                    ),
                ));
            }
        }
        if self.simulation.status {
            let workloads = &self.simulation.workloads;
            let mine = |object: &&Value| workloads.iter().any(|workload| workload.is_mine(object));
            for object in world.objects().iter().filter(mine) {
                let observed = object["status"]["observedGeneration"].as_i64();
                if observed != object["metadata"]["generation"].as_i64() {
                    return Err(self.failure(
                        "converged",
                        format!(
                            "{} is at generation {} and its status observed {observed:?}",
                            describe(object),
                            object["metadata"]["generation"]
                        ),
                    ));
                }
            }
        }
        for (name, check) in &self.simulation.at_rest {
            check(&world).map_err(|message| self.failure(name, message))?;
        }
        let (writes, reconciles, version) =
            (self.writes, self.observer.with(|seen| seen.reconciles), self.state_version());
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(600) {
            let pending = !self.wire.lock().unwrap_or_else(PoisonError::into_inner).pending.is_empty();
            if pending {
                self.take(Choice::Answer(0))?;
            } else {
                self.settle(Duration::from_secs(5));
                waited += Duration::from_secs(5);
            }
        }
        let (more_writes, more_reconciles) =
            (self.writes - writes, self.observer.with(|seen| seen.reconciles) - reconciles);
        let objects = world.objects().len() as u64;
        // A write that changes nothing (a periodic requeue writing the same status) is no
        // change: the server keeps the resourceVersion and sends no event.
        let changed = self.state_version() != version;
        if changed || more_reconciles > 10 * objects {
            return Err(self.failure(
                "at rest",
                format!(
                    "{more_writes} writes ({}) and {more_reconciles} reconciles in ten minutes with nothing to do",
                    if changed { "changing objects" } else { "changing nothing" }
                ),
            ));
        }
        self.say(format!(
            "ten quiet minutes: {more_reconciles} reconciles, {more_writes} writes that changed nothing"
        ));
        Ok(())
    }

    /// The newest resourceVersion of any object but an Event: what the operator's work
    /// changes (its Events about a retry that keeps failing do not count).
    fn state_version(&self) -> u64 {
        let objects = self.server.snapshot();
        let versions = objects.iter().filter(|object| object["kind"] != "Event");
        let version = |object: &Value| {
            object["metadata"]["resourceVersion"].as_str().and_then(|version| version.parse().ok())
        };
        versions.filter_map(version).max().unwrap_or_default()
    }

    fn finish(&mut self) {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if let Some(life) = self.life.take() {
            drop(life.process);
            life.runtime.shutdown_background();
        }
        store::set_deterministic(None);
        kuberator::backoff::seed_jitter(None);
    }
}

/// At most the first 300 and the last 100 lines of `trace` (a hot loop's rest is long).
fn abridged(trace: &[String]) -> String {
    const HEAD: usize = 300;
    const TAIL: usize = 100;
    if trace.len() <= HEAD + TAIL {
        return trace.join("\n");
    }
    format!(
        "{}\n      ... {} lines left out (replay the seed, or read Run::trace)\n{}",
        trace[..HEAD].join("\n"),
        trace.len() - HEAD - TAIL,
        trace[trace.len() - TAIL..].join("\n")
    )
}

/// The uid of `object`'s controller owner.
fn controller_of(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|owner| owner["controller"] == true)
        .and_then(|owner| owner["uid"].as_str())
}

/// `Kind namespace/name`.
fn describe(object: &Value) -> String {
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    match metadata["namespace"].as_str() {
        Some(namespace) => format!("{} {namespace}/{name}", object["kind"].as_str().unwrap_or_default()),
        None => format!("{} {name}", object["kind"].as_str().unwrap_or_default()),
    }
}

/// The path of the objects of `plural` (`api_version`), in `namespace` or cluster-wide.
fn collection(api_version: &str, plural: &str, namespace: Option<&str>) -> String {
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match namespace {
        Some(namespace) => format!("{base}/namespaces/{namespace}/{plural}"),
        None => format!("{base}/{plural}"),
    }
}

/// The path of one object, under the plural the server serves its kind as.
fn self_link(server: &MemoryServer, object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let plural =
        server.plural_of(api_version, object["kind"].as_str().unwrap_or_default()).unwrap_or_default();
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    format!("{}/{name}", collection(api_version, &plural, metadata["namespace"].as_str()))
}

fn request(method: &str, path: &str, body: Vec<u8>) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap_or_default()
}

fn post(path: &str, body: Vec<u8>) -> Request<Bytes> {
    request("POST", path, body)
}

/// An error answer with `code`, as the real server words it.
fn status(code: u16) -> Response<ResponseBody> {
    let (reason, message) = match code {
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        504 => ("Timeout", "Timeout: request did not complete within the allotted timeout"),
        _ => ("InternalError", "Internal error occurred: simulated"),
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap_or_default()
}
