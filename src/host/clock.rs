//! Wall-clock time as the parts exchange it: unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
