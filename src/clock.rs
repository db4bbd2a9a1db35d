//! The one clock of the back office. Everything that needs "now" takes a [`Clock`], so tests
//! move time instead of sleeping. Times are stored in UTC and shown in JST.

use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime, UtcOffset};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

pub type SharedClock = Arc<dyn Clock>;

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until told to move.
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(at: OffsetDateTime) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(at)))
    }

    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap() = at;
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// Japan Standard Time. Asia/Tokyo has kept UTC+9 without daylight saving since 1951, so a
/// fixed offset is exact for every date the back office handles.
pub const JST: UtcOffset = match UtcOffset::from_hms(9, 0, 0) {
    Ok(offset) => offset,
    Err(_) => panic!("+09:00 is a valid offset"),
};

/// A time as staff read it: `2026-11-22 16:44:00 JST`.
pub fn show_jst(at: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] JST");
    at.to_offset(JST)
        .format(&format)
        .expect("every time formats")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn jst_is_nine_hours_ahead() {
        assert_eq!(
            show_jst(datetime!(2026-11-22 15:00 UTC)),
            "2026-11-23 00:00:00 JST"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(datetime!(2026-11-22 00:00 UTC));
        clock.advance(Duration::hours(1));
        assert_eq!(clock.now(), datetime!(2026-11-22 01:00 UTC));
    }
}
