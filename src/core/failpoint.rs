//! Crash points for tests: `BOSUN_FAILPOINTS=name[,name...]` makes the process abort at the
//! named points, the way a SIGKILL or a node loss would stop it. They exist only in a build
//! with the cargo feature `failpoints` (the tests'); in any other build every point is a no-op
//! that reads nothing.

/// Write of `bosun.dev/create-pending` done, create not sent yet.
pub const AFTER_CREATE_PENDING: &str = "after-create-pending";
/// Create answered, new id not saved yet.
pub const BEFORE_SAVE_ID: &str = "before-save-id";

/// Aborts the process if `name` is among the configured failpoints.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if let Ok(points) = std::env::var("BOSUN_FAILPOINTS") {
        if points.split(',').any(|p| p.trim() == name) {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
}

/// Without the `failpoints` feature there are no crash points.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
