//! A request split into parts that run on several workers at once (a large MULTIREAD): each
//! part delivers its rows, and the last one to finish answers the client.

use super::jobs::{Combine, Rows};
use crate::error::Error;
use crate::requests::blocked::{BlockedClient, contained, error_completion};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Gather {
    remaining: AtomicUsize,
    state: Mutex<State>,
}

struct State {
    client: Option<BlockedClient>,
    results: Vec<Option<Result<Rows, Error>>>,
    join: Option<Combine>,
}

impl Gather {
    pub fn new(client: BlockedClient, parts: usize, join: Combine) -> Gather {
        Gather {
            remaining: AtomicUsize::new(parts),
            state: Mutex::new(State {
                client: Some(client),
                results: (0..parts).map(|_| None).collect(),
                join: Some(join),
            }),
        }
    }

    /// Notes that a worker started a part (the first one ends the client's queue time).
    pub fn part_started(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = state.client.as_mut() {
            client.picked();
        }
    }

    /// Records part `index`'s result; the last part joins them all and answers the client
    /// (with the first error, if any part failed).
    pub fn deliver(&self, index: usize, result: Result<Rows, Error>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.results[index] = Some(result);
        if self.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let results: Result<Vec<Rows>, Error> = state
            .results
            .drain(..)
            .map(|r| r.expect("every part delivered"))
            .collect();
        let join = state.join.take().expect("joined once");
        let client = state.client.take().expect("answered once");
        drop(state);
        let completion = match results {
            Ok(parts) => contained(|| Ok(join(parts))),
            Err(e) => error_completion(e),
        };
        client.answer(completion);
    }
}
