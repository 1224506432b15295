//! Property tests of the rules: one generator (`generate`), two oracles. `oracle`: PostgreSQL
//! says what a WHERE makes of each row, and the verdicts must agree. `laws`: no server, the
//! rules held to laws of their own, thousands of cases a second.

mod generate;
mod laws;
mod oracle;
