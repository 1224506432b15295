//! Panics never unwind into Redis (that would abort the server): every command handler,
//! worker job and callback Redis makes runs through `catch`, or `guard`/`contain` where
//! there is no error to reply. The panic hook set at load has logged the panic.

use super::Error;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`; a panic becomes an internal error that says what panicked.
///
/// Inline, so each command's copy sits beside it: a hit runs through here, and left to
/// where the crate's code units fall, a GET hit paid two calls more (+160 instructions,
/// measured at #53 step 2).
#[inline]
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panic_error)
}

/// `catch` for work that returns a Result: a panic is one more error.
pub fn catch_result<R>(f: impl FnOnce() -> Result<R, Error>) -> Result<R, Error> {
    catch(f).and_then(|result| result)
}

fn panic_error(panic: Box<dyn Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::internal(format!(
        "internal error ({what}); the request was abandoned, Redis is unaffected; please report it"
    ))
}

/// Runs `f` for a callback Redis made into pgcache (a timer, a notification, a blocked
/// client's reply, INFO): a panic must not unwind into Redis. Its duration feeds
/// `longest_callback_us`, the stall probe of STATS.
pub fn guard<R: Default>(what: &'static str, f: impl FnOnce() -> R) -> R {
    guard_since(std::time::Instant::now(), what, f)
}

/// `guard` for a callback that read the clock as it started (and uses the reading itself).
pub fn guard_since<R: Default>(
    started: std::time::Instant,
    what: &'static str,
    f: impl FnOnce() -> R,
) -> R {
    let result = contain(what, f);
    crate::stall::callback_took(what, started.elapsed());
    result
}

/// Like `guard`, for a part of a callback or command that must not take the rest down with
/// it (an event delivery after the reply went out); not timed, since what encloses it is.
pub fn contain<R: Default>(what: &'static str, f: impl FnOnce() -> R) -> R {
    catch(f).unwrap_or_else(|_| {
        redis_module::logging::log_warning(format!(
            "pgcache: internal error in {what}; it was abandoned, Redis is unaffected; please report it"
        ));
        R::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_error_naming_it() {
        let e = catch(|| panic!("boom")).unwrap_err();
        assert!(e.is_internal());
        assert!(e.message().contains("boom"), "{e}");
        assert_eq!(catch(|| 7).unwrap(), 7);
        assert!(
            catch_result(|| Err::<(), _>(Error::timeout("t")))
                .unwrap_err()
                .is_timeout()
        );
    }
}
