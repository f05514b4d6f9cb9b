//! Size, memory and run-time limits, checked once when a lattice, flow, trainer or run is
//! set up and before anything large is allocated: counts that multiply are multiplied with
//! overflow checks, the memory a setup would need is compared with the memory available,
//! and runs whose work estimate is absurd are refused. Every refusal is an
//! [`Error::InvalidParameter`] naming the parameter (as a runcard key) and giving the
//! estimate, so that a mistyped size fails at once with a readable message instead of
//! aborting on allocation or running for months.
//!
//! The bounds are a [`Limits`] value: the memory available (read from the system, see
//! [`available_memory`]) and two work bounds, [`MAX_SITE_UPDATES`] for Markov chains and
//! [`MAX_MULTIPLY_ADDS`] for training. Each can be overridden for the whole process with
//! [`set_limits`], or by the environment variables [`MEMORY_BUDGET_ENV`],
//! [`MAX_SITE_UPDATES_ENV`] and [`MAX_MULTIPLY_ADDS_ENV`].
//!
//! Memory estimates count the large buffers only (fields, batches, parameters and their
//! optimiser state, stored series, network activations), so they are lower bounds: a
//! refused setup surely does not fit. They are compared with a margin, [`MEMORY_MARGIN`]
//! of the smallest room the system leaves (free memory, a cgroup limit, `ulimit -v`), so
//! that an accepted setup does not run out of memory for what the estimates leave out.

use std::sync::Mutex;

use crate::error::{Error, Result};

/// Work bound of a Markov chain run, in site updates: 10¹⁴. A site update is one
/// single-site Metropolis proposal, one site of one molecular-dynamics step, or one site of
/// a flow proposal. At the ≈ 4·10⁸ leapfrog site·steps per second of one core measured for
/// this crate that is about three days; local sweeps (≈ 4·10⁷ site updates per second) take
/// about a month.
pub const MAX_SITE_UPDATES: u128 = 100_000_000_000_000;

/// Work bound of a training run, in multiply-adds of the networks' forward and backward
/// passes: 10¹⁷, about two months at 2·10¹⁰ multiply-adds per second.
pub const MAX_MULTIPLY_ADDS: u128 = 100_000_000_000_000_000;

/// Memory assumed available when the system does not say (no `/proc/meminfo`): 16 GiB.
pub const FALLBACK_MEMORY: u64 = 16 << 30;

/// Environment variable overriding the memory budget, in bytes.
pub const MEMORY_BUDGET_ENV: &str = "LATFLOW_MEMORY_BUDGET";
/// Environment variable overriding [`MAX_SITE_UPDATES`].
pub const MAX_SITE_UPDATES_ENV: &str = "LATFLOW_MAX_SITE_UPDATES";
/// Environment variable overriding [`MAX_MULTIPLY_ADDS`].
pub const MAX_MULTIPLY_ADDS_ENV: &str = "LATFLOW_MAX_MULTIPLY_ADDS";

/// The bounds every size and work check compares against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory a setup may use ([`available_memory`] unless set).
    pub memory_bytes: u128,
    /// Site updates a Markov chain run may make.
    pub max_site_updates: u128,
    /// Multiply-adds a training run may make.
    pub max_multiply_adds: u128,
}

static OVERRIDE: Mutex<Option<Limits>> = Mutex::new(None);

impl Limits {
    /// The limits in force: those set by [`set_limits`], otherwise the environment
    /// variables' values where set and the system's available memory and the default work
    /// bounds otherwise. A variable that is set but not a positive whole number is an
    /// error naming it.
    pub fn current() -> Result<Limits> {
        if let Some(limits) = *OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(limits);
        }
        Ok(Limits {
            memory_bytes: env_value(MEMORY_BUDGET_ENV)?
                .unwrap_or_else(|| u128::from(available_memory())),
            max_site_updates: env_value(MAX_SITE_UPDATES_ENV)?.unwrap_or(MAX_SITE_UPDATES),
            max_multiply_adds: env_value(MAX_MULTIPLY_ADDS_ENV)?.unwrap_or(MAX_MULTIPLY_ADDS),
        })
    }
}

/// Sets the limits for the whole process (`None` returns to the system's and the
/// environment's).
pub fn set_limits(limits: Option<Limits>) {
    *OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()) = limits;
}

/// The value of the environment variable `name`: `None` when unset, an error naming it
/// when set to anything but a positive whole number (digits only, e.g. `8000000000`).
fn env_value(name: &str) -> Result<Option<u128>> {
    let text = match std::env::var(name) {
        Ok(text) => text,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Error::param(
                name,
                "the environment variable is not valid text",
            ));
        }
    };
    let trimmed = text.trim();
    match trimmed.parse::<u128>() {
        Ok(value) if value > 0 && trimmed.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(value)),
        _ => Err(Error::param(
            name,
            format!(
                "the environment variable must be a positive whole number (digits only), got \
                 `{}`",
                trimmed.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// The share of the room left by the system that a setup may plan to fill: the estimates
/// count the large buffers only (see the module's notes), so four fifths of the room is
/// used, one fifth left for what they do not count. An explicit [`MEMORY_BUDGET_ENV`] is
/// taken as given.
pub const MEMORY_MARGIN: (u64, u64) = (4, 5);

/// Bytes of memory a setup of this process may plan to use: the smallest room the system
/// leaves — `MemAvailable` of `/proc/meminfo`, the room under a cgroup memory limit (v2
/// `memory.max` − `memory.current`, or v1 `memory.limit_in_bytes` − `memory.usage_in_bytes`)
/// and the room under the address-space limit (`ulimit -v`, `RLIMIT_AS`, less the address
/// space the process maps already) — times [`MEMORY_MARGIN`]; [`FALLBACK_MEMORY`] where
/// none can be read.
pub fn available_memory() -> u64 {
    let room = [meminfo_available(), cgroup_room(), address_space_room()]
        .into_iter()
        .flatten()
        .min();
    match room {
        Some(bytes) => bytes / MEMORY_MARGIN.1 * MEMORY_MARGIN.0,
        None => FALLBACK_MEMORY,
    }
}

/// A number in the file at `path` (`None` when missing or not a number, e.g. `max`).
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value in kB of the line `key` of a `/proc` status file, in bytes.
fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.lines().find_map(|line| line.strip_prefix(key))?;
    let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `MemAvailable` of `/proc/meminfo`.
fn meminfo_available() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemAvailable:")
}

/// The room under the process's cgroup memory limit (v2, else v1).
fn cgroup_room() -> Option<u64> {
    let room = |limit: &str, usage: &str| {
        read_number(limit).map(|max| max.saturating_sub(read_number(usage).unwrap_or(0)))
    };
    room("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current").or_else(|| {
        room(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        )
    })
}

/// The room under the address-space limit (`ulimit -v`): the soft `RLIMIT_AS` less the
/// address space mapped already (`VmSize` of `/proc/self/status`); `None` when unlimited.
#[cfg(unix)]
fn address_space_room() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let mapped = proc_kib("/proc/self/status", "VmSize:").unwrap_or(0);
    // `rlim_t` is u64 on the usual systems, another width on some.
    #[allow(clippy::useless_conversion)]
    Some(
        u64::try_from(limit.rlim_cur)
            .unwrap_or(u64::MAX)
            .saturating_sub(mapped),
    )
}

#[cfg(not(unix))]
fn address_space_room() -> Option<u64> {
    None
}

/// `bytes` in the largest binary unit that keeps the number at least 1 (e.g. `"1.5 GiB"`).
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A count as the user reads it: exact below 10⁶, otherwise like `3.2e14`.
pub fn format_count(count: u128) -> String {
    if count < 1_000_000 {
        count.to_string()
    } else {
        format!("{:.1e}", count as f64)
    }
}

/// The product of `factors` as a `usize`; an overflow is an error naming `name` and saying
/// what the product counts (`what`, e.g. `"lattice sites"`).
pub fn checked_product(name: &str, what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| {
            Error::param(
                name,
                format!(
                    "the number of {what}, {}, does not fit in a {}-bit integer",
                    factors
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(" × "),
                    usize::BITS
                ),
            )
        })
}

/// Refuses `bytes` of memory for `what` when they exceed the memory available, naming the
/// parameter `name` that sets the size and both amounts.
pub fn check_memory(name: &str, what: &str, bytes: u128) -> Result<()> {
    let available = Limits::current()?.memory_bytes;
    if bytes <= available {
        return Ok(());
    }
    Err(memory_error(name, what, bytes, available))
}

/// One part of a setup's memory: the parameter that sets its size, what it is, its bytes.
pub type MemoryPart<'a> = (&'a str, &'a str, u128);

/// Refuses a setup whose `parts` together exceed the memory available; the error names the
/// parameter of the largest part, what that part is, and the total.
pub fn check_memory_parts(parts: &[MemoryPart<'_>]) -> Result<()> {
    let total = parts.iter().fold(0u128, |acc, p| acc.saturating_add(p.2));
    let available = Limits::current()?.memory_bytes;
    match parts.iter().max_by_key(|p| p.2) {
        Some(&(name, what, bytes)) if total > available => {
            let what = if parts.len() > 1 {
                format!(
                    "{what} ({}) with the rest of the setup",
                    format_bytes(bytes)
                )
            } else {
                what.to_string()
            };
            Err(memory_error(name, &what, total, available))
        }
        _ => Ok(()),
    }
}

/// The error [`check_memory`] gives: `what` would need `bytes`, only `available` are there.
pub fn memory_error(name: &str, what: &str, bytes: u128, available: u128) -> Error {
    Error::param(
        name,
        format!(
            "{what} would need at least {} of memory, but only {} is available \
             (override with {MEMORY_BUDGET_ENV}=<bytes>)",
            format_bytes(bytes),
            format_bytes(available)
        ),
    )
}

/// Refuses a Markov chain run of `site_updates` (see [`MAX_SITE_UPDATES`]) when it exceeds
/// the bound, naming the parameter `name` that makes it long.
pub fn check_site_updates(name: &str, site_updates: u128) -> Result<()> {
    let bound = Limits::current()?.max_site_updates;
    if site_updates <= bound {
        return Ok(());
    }
    Err(Error::param(
        name,
        format!(
            "the run would make about {} site updates, more than the {} this library runs \
             (months of computing; override with {MAX_SITE_UPDATES_ENV}=<count>)",
            format_count(site_updates),
            format_count(bound)
        ),
    ))
}

/// Refuses a training run of `multiply_adds` (see [`MAX_MULTIPLY_ADDS`]) when it exceeds
/// the bound, naming the parameter `name` that makes it long.
pub fn check_multiply_adds(name: &str, multiply_adds: u128) -> Result<()> {
    let bound = Limits::current()?.max_multiply_adds;
    if multiply_adds <= bound {
        return Ok(());
    }
    Err(Error::param(
        name,
        format!(
            "training would make about {} multiply-adds, more than the {} this library runs \
             (months of computing; override with {MAX_MULTIPLY_ADDS_ENV}=<count>)",
            format_count(multiply_adds),
            format_count(bound)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_counts_read_well() {
        assert_eq!(format_bytes(512), "512 bytes");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_count(12), "12");
        assert_eq!(format_count(320_000_000_000_000), "3.2e14");
    }

    #[test]
    fn products_overflow_into_errors() {
        assert_eq!(checked_product("n", "values", &[3, 4]).unwrap(), 12);
        let e = checked_product("n", "values", &[usize::MAX, 2]).unwrap_err();
        assert!(e.to_string().contains("`n`"), "{e}");
    }

    #[test]
    fn the_system_reports_some_memory() {
        assert!(available_memory() > 0);
        // The margin: at most four fifths of the free memory.
        if let Some(free) = meminfo_available() {
            assert!(available_memory() <= free / 5 * 4, "{}", available_memory());
        }
    }
}
