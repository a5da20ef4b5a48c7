//! The daemon's one key-expiry timer: a `timerfd` on `CLOCK_REALTIME`,
//! armed to an absolute wall-clock time (`TFD_TIMER_ABSTIME`) with
//! `TFD_TIMER_CANCEL_ON_SET`.
//!
//! Wall clock, not a monotonic sleep: an expiry is a date, and the machine
//! may be suspended, or its clock stepped (NTP at boot), between arming and
//! firing. An absolute realtime timer fires when the wall clock reaches the
//! time however it gets there, and `CANCEL_ON_SET` wakes the daemon once
//! when the clock is set, so it looks again — one wake-up per step, never a
//! loop. Disarmed (no managed key expires), it causes no wake-up at all.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

use crate::error::{Error, IoContext, Result};

/// The shortest time between two firings for deadlines that are already
/// past: a handler that keeps answering "due now" cannot spin the loop.
const MIN_REFIRE: Duration = Duration::from_secs(1);

pub struct ExpiryTimer {
    fd: AsyncFd<OwnedFd>,
    /// What the timer is armed to (`None`: disarmed).
    armed: Option<SystemTime>,
    /// When a deadline at or before "now" was last armed.
    last_past: Option<Instant>,
    /// How many times the timer was armed (tests count these).
    arms: u64,
}

fn os_error(what: &str) -> Error {
    Error::Io {
        context: format!("key expiry timer: {what}"),
        source: std::io::Error::last_os_error(),
    }
}

impl ExpiryTimer {
    /// A disarmed timer. Must be called inside the runtime.
    pub fn new() -> Result<ExpiryTimer> {
        // SAFETY: plain syscall; the descriptor is owned from here on.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(os_error("timerfd_create"));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the descriptor, which stays open (and
        // the same file) for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)
            .ctx(|| "key expiry timer: registering with the runtime".into())?;
        Ok(ExpiryTimer {
            fd,
            armed: None,
            last_past: None,
            arms: 0,
        })
    }

    /// Arm the timer to `deadline`, or disarm it with `None`. Arming to
    /// what it is armed to already does nothing.
    pub fn set(&mut self, deadline: Option<SystemTime>) -> Result<()> {
        let deadline = deadline.map(|t| {
            let now = SystemTime::now();
            if t > now {
                return t;
            }
            let recent = self.last_past.is_some_and(|i| i.elapsed() < MIN_REFIRE);
            self.last_past = Some(Instant::now());
            if recent {
                now + MIN_REFIRE
            } else {
                t
            }
        });
        if deadline == self.armed {
            return Ok(());
        }
        let value = match deadline {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            Some(t) => {
                let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                // A zero it_value would disarm: the earliest time is 1 ns.
                let d = d.max(Duration::from_nanos(1));
                libc::timespec {
                    tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
                }
            }
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: valid descriptor and itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(os_error("timerfd_settime"));
        }
        self.armed = deadline;
        self.arms += 1;
        Ok(())
    }

    /// What the timer is armed to.
    pub fn armed(&self) -> Option<SystemTime> {
        self.armed
    }

    /// How many times the timer has been (re)armed or disarmed.
    pub fn arms(&self) -> u64 {
        self.arms
    }

    /// Wait until the timer fires, or the wall clock is set; forever when
    /// disarmed. Cancel-safe (used in `select!`).
    pub async fn fired(&mut self) -> Result<()> {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        loop {
            let mut guard = self.fd.readable().await.map_err(|e| Error::Io {
                context: "key expiry timer: waiting".into(),
                source: e,
            })?;
            let mut buf = [0u8; 8];
            // SAFETY: valid descriptor and an 8-byte buffer, as timerfd wants.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n >= 0 {
                // One-shot: fired, so no longer armed.
                self.armed = None;
                return Ok(());
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                // The clock was set: the caller looks at the time again
                // and arms afresh.
                Some(libc::ECANCELED) => {
                    self.armed = None;
                    return Ok(());
                }
                Some(libc::EINTR) => {}
                _ => return Err(os_error("read")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_armed_timer_fires_at_its_wall_clock_time() {
        let mut t = ExpiryTimer::new().unwrap();
        let at = SystemTime::now() + Duration::from_millis(200);
        t.set(Some(at)).unwrap();
        t.fired().await.unwrap();
        assert!(SystemTime::now() >= at, "fired before its time");
        assert_eq!(t.armed(), None);
    }

    #[tokio::test]
    async fn a_disarmed_timer_never_fires() {
        let mut t = ExpiryTimer::new().unwrap();
        t.set(Some(SystemTime::now() + Duration::from_secs(3600)))
            .unwrap();
        t.set(None).unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), t.fired()).await;
        assert!(r.is_err(), "a disarmed timer fired");
    }

    #[tokio::test]
    async fn deadlines_in_the_past_fire_at_most_once_a_second() {
        // A handler that keeps saying "due long ago" (a clock stepped back
        // past it, a removal that cannot succeed): the loop must not spin.
        let mut t = ExpiryTimer::new().unwrap();
        let start = Instant::now();
        let mut fires = 0;
        while start.elapsed() < Duration::from_secs(2) {
            t.set(Some(UNIX_EPOCH + Duration::from_secs(1))).unwrap();
            t.fired().await.unwrap();
            fires += 1;
        }
        // At most one per MIN_REFIRE (plus the first, immediate one); load
        // can only make it fewer.
        assert!(fires <= 4, "{fires} firings in 2 s");
    }

    #[tokio::test]
    async fn arming_to_the_same_time_again_is_not_a_new_timer() {
        let mut t = ExpiryTimer::new().unwrap();
        let at = SystemTime::now() + Duration::from_secs(3600);
        t.set(Some(at)).unwrap();
        t.set(Some(at)).unwrap();
        t.set(None).unwrap();
        t.set(None).unwrap();
        assert_eq!(t.arms(), 2);
    }
}
