//! A failing case made small: each step re-runs a smaller candidate on fresh servers and
//! keeps it if it still fails. First the failing statement alone (its failing variant) and
//! the writes up to the failure; then writes dropped (halves, quarters, ... single ones),
//! tables the statement does not need, rows, columns no write inserts, the LIMIT, and the
//! WHERE simplified (a subtree replaced by one of its children, an atom by TRUE).
//! Runs are bounded (`max_runs`): a shrink that runs out returns the smallest case so far.

use crate::statements::{Cond, Node, Stmt};
use crate::{Case, Failure, Outcome, RunOptions, Stats, run};

struct Shrinker {
    runs: usize,
    max_runs: usize,
    best: Case,
    failure: Failure,
}

impl Shrinker {
    /// Whether `candidate` still fails; if so it becomes the best.
    fn attempt(&mut self, mut candidate: Case) -> bool {
        if self.runs >= self.max_runs {
            return false;
        }
        self.runs += 1;
        let mut stats = Stats::default();
        let options = RunOptions {
            max_checks: usize::MAX,
            verbose: false,
        };
        match run(&candidate, &options, &mut stats) {
            Outcome::Failed(failure) => {
                // Writes after the failure are never run: drop them.
                let keep = failure.after_write.map_or(0, |w| w + 1);
                candidate.writes.truncate(keep);
                eprintln!(
                    "  shrink run {}: still fails ({} writes, {} rows)",
                    self.runs,
                    candidate.writes.len(),
                    candidate
                        .schema
                        .tables
                        .iter()
                        .filter(|t| !t.omitted)
                        .map(|t| t.rows.len())
                        .sum::<usize>()
                );
                self.best = candidate;
                self.failure = failure;
                true
            }
            Outcome::Passed | Outcome::Unrunnable(_) => false,
        }
    }

    fn writes(&mut self) {
        let mut chunk = self.best.writes.len().max(1);
        while chunk >= 1 && self.runs < self.max_runs {
            let mut i = 0;
            while i < self.best.writes.len() && self.runs < self.max_runs {
                let mut candidate = self.best.clone();
                let end = (i + chunk).min(candidate.writes.len());
                candidate.writes.drain(i..end);
                if !self.attempt(candidate) {
                    i += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }

    fn tables(&mut self) {
        let needed: Vec<usize> = self
            .best
            .statements
            .iter()
            .flat_map(|s| s.tables.clone())
            .collect();
        for ti in 0..self.best.schema.tables.len() {
            let schema = &self.best.schema;
            let is_view_table = schema
                .views
                .iter()
                .enumerate()
                .any(|(vi, v)| v.table == ti && needed.contains(&(schema.tables.len() + vi)));
            let is_parent = schema
                .tables
                .iter()
                .any(|t| !t.omitted && t.parent == Some(ti));
            if needed.contains(&ti) || is_view_table || is_parent || schema.tables[ti].omitted {
                continue;
            }
            let mut candidate = self.best.clone();
            candidate.schema.tables[ti].omitted = true;
            let name = candidate.schema.tables[ti].name.clone();
            candidate.writes.retain(|w| !w.sql.contains(&name));
            self.attempt(candidate);
        }
    }

    fn rows(&mut self) {
        for ti in 0..self.best.schema.tables.len() {
            loop {
                let n = self.best.schema.tables[ti].rows.len();
                if n == 0 || self.best.schema.tables[ti].omitted {
                    break;
                }
                let mut none = self.best.clone();
                none.schema.tables[ti].rows.clear();
                if self.attempt(none) {
                    break;
                }
                let mut half = self.best.clone();
                half.schema.tables[ti].rows.truncate(n / 2);
                if n < 2 || !self.attempt(half) {
                    break;
                }
            }
        }
    }

    /// Columns that neither the statement names nor any write inserts into their table.
    fn columns(&mut self) {
        let (text, _) = self.best.statements[0].render(0, true);
        for ti in 0..self.best.schema.tables.len() {
            let t = &self.best.schema.tables[ti];
            if t.omitted
                || self
                    .best
                    .writes
                    .iter()
                    .any(|w| w.sql.contains(&format!("INSERT INTO {}", t.name)))
                || !t.kid_rows.is_empty()
                || self.best.schema.views.iter().any(|v| v.table == ti)
            {
                continue;
            }
            let unneeded: Vec<String> = t
                .columns
                .iter()
                .filter(|c| !text.contains(&c.name))
                .map(|c| c.name.clone())
                .collect();
            if unneeded.is_empty() {
                continue;
            }
            let mut candidate = self.best.clone();
            let table = &mut candidate.schema.tables[ti];
            let all: Vec<String> = table.all_columns().into_iter().map(|(n, _)| n).collect();
            let keep: Vec<bool> = all.iter().map(|n| !unneeded.contains(n)).collect();
            for row in &mut table.rows {
                let mut k = keep.iter();
                row.retain(|_| *k.next().unwrap());
            }
            table.columns.retain(|c| !unneeded.contains(&c.name));
            candidate
                .writes
                .retain(|w| !unneeded.iter().any(|c| w.sql.contains(c.as_str())));
            self.attempt(candidate);
        }
    }

    fn statement(&mut self) {
        let stmt = self.best.statements[0].clone();
        if stmt.limited() {
            let mut candidate = self.best.clone();
            candidate.statements[0].tail.clear();
            if self.attempt(candidate) {
                return self.statement();
            }
        }
        for (at, node) in stmt.body.iter().enumerate() {
            let Node::Where(cond) = node else { continue };
            for simpler in simplifications(cond) {
                let mut candidate = self.best.clone();
                candidate.statements[0].body[at] = Node::Where(simpler);
                if self.attempt(candidate) {
                    // Start again from the simpler statement.
                    return self.statement();
                }
                if self.runs >= self.max_runs {
                    return;
                }
            }
        }
    }
}

/// Each condition one step simpler than `c`.
fn simplifications(c: &Cond) -> Vec<Cond> {
    match c {
        Cond::True => Vec::new(),
        Cond::Atom(_) => vec![Cond::True],
        Cond::Not(inner) => {
            let mut out = vec![(**inner).clone()];
            out.extend(
                simplifications(inner)
                    .into_iter()
                    .map(|s| Cond::Not(Box::new(s))),
            );
            out
        }
        Cond::And(cs) | Cond::Or(cs) => {
            let mut out: Vec<Cond> = cs.clone();
            for (i, child) in cs.iter().enumerate() {
                for s in simplifications(child) {
                    let mut cs2 = cs.clone();
                    cs2[i] = s;
                    out.push(if matches!(c, Cond::And(_)) {
                        Cond::And(cs2)
                    } else {
                        Cond::Or(cs2)
                    });
                }
            }
            out
        }
    }
}

/// The statement with only one variant's parameters.
fn only_variant(s: &Stmt, variant: usize) -> Stmt {
    fn nodes(ns: &[Node], v: usize) -> Vec<Node> {
        ns.iter()
            .map(|n| match n {
                Node::Sql(s) => Node::Sql(s.clone()),
                Node::Param(values) => Node::Param(vec![values[v].clone()]),
                Node::Where(c) => Node::Where(cond(c, v)),
            })
            .collect()
    }
    fn cond(c: &Cond, v: usize) -> Cond {
        match c {
            Cond::True => Cond::True,
            Cond::Atom(ns) => Cond::Atom(nodes(ns, v)),
            Cond::And(cs) => Cond::And(cs.iter().map(|c| cond(c, v)).collect()),
            Cond::Or(cs) => Cond::Or(cs.iter().map(|c| cond(c, v)).collect()),
            Cond::Not(c) => Cond::Not(Box::new(cond(c, v))),
        }
    }
    Stmt {
        body: nodes(&s.body, variant),
        tail: nodes(&s.tail, variant),
        variants: 1,
        ..s.clone()
    }
}

/// The smallest case found that still fails, with its failure; None when the failure did
/// not repeat on fresh servers.
pub fn shrink(case: &Case, failure: &Failure, max_runs: usize) -> Option<(Case, Failure)> {
    if max_runs == 0 {
        return None;
    }
    let mut first = case.clone();
    if failure.statement < case.statements.len() {
        first.statements = vec![only_variant(
            &case.statements[failure.statement],
            failure.variant,
        )];
    } else {
        first.statements.clear();
    }
    first
        .writes
        .truncate(failure.after_write.map_or(0, |w| w + 1));
    let mut shrinker = Shrinker {
        runs: 0,
        max_runs,
        best: first.clone(),
        failure: failure.clone(),
    };
    eprintln!("shrinking (at most {max_runs} runs on fresh servers)...");
    if !shrinker.attempt(first) {
        return None;
    }
    shrinker.writes();
    shrinker.tables();
    if !shrinker.best.statements.is_empty() {
        shrinker.statement();
        shrinker.columns();
    }
    shrinker.rows();
    eprintln!("shrinking took {} runs", shrinker.runs);
    Some((shrinker.best, shrinker.failure))
}
