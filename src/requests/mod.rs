//! One request's life on the event loop: the reply it gets (`reply`, built anywhere and sent
//! on the main thread), the client blocked while a worker answers it (`blocked`: exactly one
//! answer, by the worker or its deadline), and its end recorded (`tracked`: latency, slowlog,
//! `slow` and `error` events).

pub mod blocked;
pub mod reply;
pub mod tracked;
