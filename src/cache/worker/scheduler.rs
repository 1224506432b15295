//! Which job a free worker takes next: each source has queues of its own (work, lookups,
//! runs) and a cap on the workers it keeps busy at once, so a source whose database is slow
//! or frozen holds only its cap of workers while the others' jobs still find one. Sources
//! take turns (round robin); a take is one job of work, or the lookups (runs) of ONE source
//! already queued, to be sent in one round trip to its database.
//!
//! `Picker` is the plain decision, `Scheduler` the lock and wake-ups around it, so that the
//! picking is tested without threads.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Most lookups one worker takes at once; also the most keys in one batched query.
pub const MAX_BATCH: usize = 128;

/// Most runs one worker sends in one round trip: PostgreSQL runs them one after another, so
/// the last waits for all before it.
pub const MAX_PIPELINE: usize = 16;

/// How many workers each source may keep busy at once, for `workers` threads and the
/// sources' pool sizes: no more than its pool's connections (a worker then never waits in
/// `Pool::get`), and each other source keeps `max(1, workers / 2n)` workers to itself (8
/// workers, 2 sources: 6 each). One source: every worker, up to its pool's size.
pub fn caps(workers: usize, pool_sizes: &[usize]) -> Vec<usize> {
    let n = pool_sizes.len().max(1);
    let kept = (workers / (2 * n)).max(1);
    let share = workers.saturating_sub((n - 1) * kept).max(1);
    pool_sizes
        .iter()
        .map(|&pool| pool.min(share).max(1))
        .collect()
}

/// What a worker took: one job of work, or lookups (runs) of one source, in queue order.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<S, W, L, R> {
    Work(S, W),
    Lookups(S, Vec<L>),
    Runs(S, Vec<R>),
}

impl<S: Copy, W, L, R> Take<S, W, L, R> {
    pub fn source(&self) -> S {
        match self {
            Take::Work(source, _) | Take::Lookups(source, _) | Take::Runs(source, _) => *source,
        }
    }
}

struct Queues<S, W, L, R> {
    source: S,
    work: VecDeque<W>,
    lookups: VecDeque<L>,
    runs: VecDeque<R>,
    /// Workers running this source's jobs.
    busy: usize,
    cap: usize,
}

impl<S, W, L, R> Queues<S, W, L, R> {
    /// Empty queues of `source`, none of its jobs running.
    fn new(source: S, cap: usize) -> Self {
        Queues {
            source,
            work: VecDeque::new(),
            lookups: VecDeque::new(),
            runs: VecDeque::new(),
            busy: 0,
            cap,
        }
    }

    fn waiting(&self) -> usize {
        self.work.len() + self.lookups.len() + self.runs.len()
    }

    fn ready(&self) -> bool {
        self.busy < self.cap && self.waiting() > 0
    }
}

/// The queues of every source, and whose turn it is.
pub struct Picker<S, W, L, R> {
    sources: Vec<Queues<S, W, L, R>>,
    /// The source tried first by the next take.
    next_source: usize,
    /// The kind of job (work, lookups, runs) tried first by the next take: a source with all
    /// three queued serves each in turn, as the channels' `select!` did at random.
    next_kind: usize,
    /// Jobs each queue of a source holds at most.
    bound: usize,
}

impl<S: Copy + Eq, W, L, R> Picker<S, W, L, R> {
    /// Empty queues for `sources`, each with its cap, each queue holding `bound` jobs.
    pub fn new(sources: &[(S, usize)], bound: usize) -> Self {
        Picker {
            sources: (sources.iter())
                .map(|&(source, cap)| Queues::new(source, cap))
                .collect(),
            next_source: 0,
            next_kind: 0,
            bound,
        }
    }

    fn of(&mut self, source: S) -> Option<&mut Queues<S, W, L, R>> {
        self.sources
            .iter_mut()
            .find(|queues| queues.source == source)
    }

    /// Queues a job of work; hands it back when its source's queue is full (or the source
    /// unknown).
    pub fn push_work(&mut self, source: S, job: W) -> Result<(), W> {
        let bound = self.bound;
        match self.of(source) {
            Some(queues) => push(&mut queues.work, bound, job),
            None => Err(job),
        }
    }

    /// Like `push_work`, for a lookup.
    pub fn push_lookup(&mut self, source: S, job: L) -> Result<(), L> {
        let bound = self.bound;
        match self.of(source) {
            Some(queues) => push(&mut queues.lookups, bound, job),
            None => Err(job),
        }
    }

    /// Like `push_work`, for a run.
    pub fn push_run(&mut self, source: S, job: R) -> Result<(), R> {
        let bound = self.bound;
        match self.of(source) {
            Some(queues) => push(&mut queues.runs, bound, job),
            None => Err(job),
        }
    }

    /// Room left in `source`'s work queue.
    pub fn work_room(&self, source: S) -> usize {
        self.sources
            .iter()
            .find(|queues| queues.source == source)
            .map_or(0, |queues| self.bound - queues.work.len())
    }

    /// Jobs each queue holds at most.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Jobs waiting for a worker, every source's.
    pub fn waiting(&self) -> usize {
        self.sources.iter().map(Queues::waiting).sum()
    }

    /// Whether a free worker would find a job to take.
    pub fn ready(&self) -> bool {
        self.sources.iter().any(Queues::ready)
    }

    /// The next job for a free worker, counted busy for its source until `done`: from the
    /// first source in turn with a job queued and fewer busy workers than its cap.
    pub fn take(&mut self) -> Option<Take<S, W, L, R>> {
        let n = self.sources.len();
        let index = (0..n)
            .map(|i| (self.next_source + i) % n)
            .find(|&i| self.sources[i].ready())?;
        self.next_source = (index + 1) % n;
        let queues = &mut self.sources[index];
        queues.busy += 1;
        let source = queues.source;
        for k in 0..3 {
            let kind = (self.next_kind + k) % 3;
            let taken = match kind {
                0 => queues.work.pop_front().map(|job| Take::Work(source, job)),
                1 if !queues.lookups.is_empty() => {
                    Some(Take::Lookups(source, drain(&mut queues.lookups, MAX_BATCH)))
                }
                2 if !queues.runs.is_empty() => {
                    Some(Take::Runs(source, drain(&mut queues.runs, MAX_PIPELINE)))
                }
                _ => None,
            };
            if taken.is_some() {
                self.next_kind = (kind + 1) % 3;
                return taken;
            }
        }
        unreachable!("a ready source has a job queued")
    }

    /// Up to `most` more lookups of `source`, for a worker that took some already.
    pub fn more_lookups(&mut self, source: S, most: usize) -> Vec<L> {
        self.of(source)
            .map_or_else(Vec::new, |queues| drain(&mut queues.lookups, most))
    }

    /// Up to `most` more runs of `source`, for a worker that took some already.
    pub fn more_runs(&mut self, source: S, most: usize) -> Vec<R> {
        self.of(source)
            .map_or_else(Vec::new, |queues| drain(&mut queues.runs, most))
    }

    /// Gives each source of `caps` its cap, with empty queues for one not known yet (a source
    /// added at run time). A source left out keeps its queues and cap: one removed may still
    /// have a job a worker takes, answered with its error.
    pub fn set_caps(&mut self, caps: &[(S, usize)]) {
        for &(source, cap) in caps {
            match self.of(source) {
                Some(queues) => queues.cap = cap,
                None => self.sources.push(Queues::new(source, cap)),
            }
        }
    }

    /// A worker finished what it took of `source`.
    pub fn done(&mut self, source: S) {
        if let Some(queues) = self.of(source) {
            queues.busy -= 1;
        }
    }
}

fn push<T>(queue: &mut VecDeque<T>, bound: usize, job: T) -> Result<(), T> {
    if queue.len() >= bound {
        return Err(job);
    }
    queue.push_back(job);
    Ok(())
}

fn drain<T>(queue: &mut VecDeque<T>, most: usize) -> Vec<T> {
    let count = queue.len().min(most);
    queue.drain(..count).collect()
}

/// The `Picker` shared by the main thread (which queues) and the workers (which take).
pub struct Scheduler<S, W, L, R> {
    state: Mutex<State<S, W, L, R>>,
    /// Signalled when a job is queued, or more are ready than the worker that took one.
    ready: Condvar,
}

struct State<S, W, L, R> {
    picker: Picker<S, W, L, R>,
    /// No more jobs come: workers take what is queued, then end.
    closed: bool,
}

impl<S: Copy + Eq, W, L, R> Scheduler<S, W, L, R> {
    pub fn new(sources: &[(S, usize)], bound: usize) -> Self {
        Scheduler {
            state: Mutex::new(State {
                picker: Picker::new(sources, bound),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// The queues, to queue jobs or read figures; a job queued must be followed by `wake`.
    pub fn lock(&self) -> SchedulerGuard<'_, S, W, L, R> {
        SchedulerGuard(self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wakes a worker for a job queued.
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// The next job for a worker, after it finished what it took of `finished`; waits for
    /// one. None once closed and every queue is empty.
    pub fn next(&self, finished: Option<S>) -> Option<Take<S, W, L, R>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(source) = finished {
            state.picker.done(source);
        }
        loop {
            if let Some(taken) = state.picker.take() {
                // More ready than this worker: another takes them (one wake-up per job
                // queued may have been spent on a take that found several).
                if state.picker.ready() {
                    self.ready.notify_one();
                }
                return Some(taken);
            }
            if state.closed && state.picker.waiting() == 0 {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Lets the workers end once every queued job is taken.
    pub fn close(&self) {
        self.lock().0.closed = true;
        self.ready.notify_all();
    }
}

/// The scheduler's queues, locked.
pub struct SchedulerGuard<'a, S, W, L, R>(MutexGuard<'a, State<S, W, L, R>>);

impl<S, W, L, R> std::ops::Deref for SchedulerGuard<'_, S, W, L, R> {
    type Target = Picker<S, W, L, R>;

    fn deref(&self) -> &Self::Target {
        &self.0.picker
    }
}

impl<S, W, L, R> std::ops::DerefMut for SchedulerGuard<'_, S, W, L, R> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0.picker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestPicker = Picker<u8, &'static str, u32, u32>;

    fn taken(picker: &mut TestPicker) -> Vec<Take<u8, &'static str, u32, u32>> {
        std::iter::from_fn(|| picker.take()).collect()
    }

    #[test]
    fn caps_follow_the_formula() {
        assert_eq!(caps(8, &[8]), vec![8]);
        assert_eq!(caps(8, &[4]), vec![4]);
        assert_eq!(caps(8, &[8, 8]), vec![6, 6]);
        assert_eq!(caps(8, &[8, 3]), vec![6, 3]);
        assert_eq!(caps(8, &[8, 8, 8]), vec![6, 6, 6]);
        assert_eq!(caps(8, &[8, 8, 8, 8]), vec![5, 5, 5, 5]);
        assert_eq!(caps(1, &[1, 1]), vec![1, 1]);
        assert_eq!(caps(2, &[2, 2, 2]), vec![1, 1, 1]);
    }

    #[test]
    fn a_source_added_later_gets_queues_and_caps_change() {
        let mut picker = TestPicker::new(&[(0, 2)], 100);
        assert!(picker.push_work(1, "early").is_err());
        picker.set_caps(&[(0, 1), (1, 1)]);
        for source in [0, 0, 1, 1] {
            picker.push_work(source, "job").unwrap();
        }
        // One each: the caps fell to 1 and the new source takes its turn.
        assert_eq!(
            taken(&mut picker),
            vec![Take::Work(0, "job"), Take::Work(1, "job")]
        );
        picker.done(0);
        picker.done(1);
        picker.set_caps(&[(0, 2)]);
        // Source 1, left out, keeps its queue and cap.
        assert_eq!(
            taken(&mut picker),
            vec![Take::Work(0, "job"), Take::Work(1, "job")]
        );
    }

    #[test]
    fn scheduler_round_robin_and_caps() {
        let mut picker = TestPicker::new(&[(0, 2), (1, 2), (2, 2)], 100);
        for source in [0, 0, 0, 1, 2, 2] {
            picker.push_work(source, "w").unwrap();
        }
        // Each source in turn, then again, until each is at its cap.
        let order: Vec<u8> = taken(&mut picker).iter().map(Take::source).collect();
        assert_eq!(order, vec![0, 1, 2, 0, 2]);
        // Source 0's third job waits for one of its two workers.
        assert_eq!(picker.waiting(), 1);
        assert!(!picker.ready());
        picker.done(1);
        assert_eq!(picker.take(), None);
        picker.done(0);
        assert_eq!(picker.take(), Some(Take::Work(0, "w")));
        assert_eq!(picker.waiting(), 0);
    }

    #[test]
    fn a_capped_source_leaves_workers_to_others() {
        // 8 workers, 2 sources: a frozen source holds at most 6; its jobs pile up, and the
        // other's still find a worker.
        let capped = caps(8, &[8, 8]);
        let mut picker = TestPicker::new(&[(0, capped[0]), (1, capped[1])], 100);
        for _ in 0..20 {
            picker.push_work(0, "frozen").unwrap();
        }
        let mut busy = 0;
        while let Some(take) = picker.take() {
            assert_eq!(take.source(), 0);
            busy += 1;
        }
        assert_eq!(busy, 6);
        picker.push_work(1, "healthy").unwrap();
        picker.push_work(1, "healthy").unwrap();
        picker.push_work(1, "healthy").unwrap();
        // The frozen source's turns come round again only while it is under its cap.
        picker.done(0);
        assert_eq!(picker.take(), Some(Take::Work(1, "healthy")));
        assert_eq!(picker.take(), Some(Take::Work(0, "frozen")));
        assert_eq!(picker.take(), Some(Take::Work(1, "healthy")));
        assert_eq!(picker.take(), Some(Take::Work(1, "healthy")));
        assert_eq!(picker.take(), None);
        assert_eq!(picker.waiting(), 13);
    }

    #[test]
    fn one_source_takes_each_queue_in_order() {
        let mut picker = TestPicker::new(&[(0, 8)], 100);
        for job in ["a", "b", "c"] {
            picker.push_work(0, job).unwrap();
        }
        picker.push_lookup(0, 1).unwrap();
        picker.push_run(0, 10).unwrap();
        // Kinds in turn, each queue first in first out.
        assert_eq!(
            taken(&mut picker),
            vec![
                Take::Work(0, "a"),
                Take::Lookups(0, vec![1]),
                Take::Runs(0, vec![10]),
                Take::Work(0, "b"),
                Take::Work(0, "c"),
            ]
        );
    }

    #[test]
    fn lookups_and_runs_are_taken_in_batches_of_one_source() {
        let mut picker = TestPicker::new(&[(0, 8), (1, 8)], 1000);
        for i in 0..200 {
            picker.push_lookup(i as u8 % 2, i).unwrap();
            picker.push_run(i as u8 % 2, i).unwrap();
        }
        let Some(Take::Lookups(0, lookups)) = picker.take() else {
            panic!("source 0's lookups first");
        };
        assert_eq!(lookups, (0..200).step_by(2).collect::<Vec<_>>());
        let Some(Take::Runs(1, runs)) = picker.take() else {
            panic!("then source 1's runs");
        };
        assert_eq!(runs, (1..33).step_by(2).collect::<Vec<_>>());
        assert_eq!(runs.len(), MAX_PIPELINE);
        assert_eq!(picker.more_runs(1, 2), vec![33, 35]);
        assert_eq!(picker.more_lookups(0, 5), Vec::<u32>::new());
        let Some(Take::Runs(0, runs)) = picker.take() else {
            panic!("source 0's runs");
        };
        assert_eq!(runs, (0..32).step_by(2).collect::<Vec<_>>());
        let Some(Take::Lookups(1, lookups)) = picker.take() else {
            panic!("source 1's lookups");
        };
        assert_eq!(lookups.len(), 100);
        let mut big = TestPicker::new(&[(0, 8)], 1000);
        for i in 0..300 {
            big.push_lookup(0, i).unwrap();
        }
        let Some(Take::Lookups(0, lookups)) = big.take() else {
            panic!("lookups");
        };
        assert_eq!(lookups, (0..MAX_BATCH as u32).collect::<Vec<_>>());
    }

    #[test]
    fn each_queue_of_a_source_holds_at_most_the_bound() {
        let mut picker = TestPicker::new(&[(0, 8), (1, 8)], 2);
        assert_eq!(picker.work_room(0), 2);
        picker.push_work(0, "a").unwrap();
        picker.push_work(0, "b").unwrap();
        assert_eq!(picker.push_work(0, "c"), Err("c"));
        assert_eq!(picker.work_room(0), 0);
        // The other queues, and the other source's, have their own room.
        picker.push_lookup(0, 1).unwrap();
        picker.push_lookup(0, 2).unwrap();
        assert_eq!(picker.push_lookup(0, 3), Err(3));
        picker.push_run(0, 1).unwrap();
        picker.push_run(0, 2).unwrap();
        assert_eq!(picker.push_run(0, 3), Err(3));
        picker.push_work(1, "d").unwrap();
        assert_eq!(picker.waiting(), 7);
        // An unknown source's job is handed back.
        assert_eq!(picker.push_work(9, "e"), Err("e"));
        assert!(picker.take().is_some());
        assert_eq!(picker.work_room(0), 1);
    }

    /// Threads that wait in `next` are woken by a job queued, and end once closed and
    /// drained.
    #[test]
    fn workers_wait_for_jobs_and_end_when_closed() {
        let scheduler: Scheduler<u8, u32, u32, u32> = Scheduler::new(&[(0, 4)], 100);
        let done = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut finished = None;
                    while let Some(take) = scheduler.next(finished) {
                        let Take::Work(source, job) = take else {
                            panic!("only work queued");
                        };
                        done.fetch_add(job, std::sync::atomic::Ordering::SeqCst);
                        finished = Some(source);
                    }
                });
            }
            for job in 1..=100 {
                scheduler.lock().push_work(0, job).unwrap();
                scheduler.wake();
            }
            scheduler.close();
        });
        assert_eq!(done.into_inner(), 5050);
    }
}
