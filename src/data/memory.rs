//! How much memory this process may still use, for refusing a data matrix that cannot fit
//! before anything is allocated. The figures come from `sysinfo`: the machine's available
//! memory (Linux's `MemAvailable`) and, where the process runs in a container, its cgroup's
//! limit and usage (cgroup v1's `memory.limit_in_bytes` / `memory.usage_in_bytes`, or v2's
//! `memory.max` / `memory.current`). Only the combining rule is ours.

use std::path::Path;
use sysinfo::{Disks, MemoryRefreshKind, System};

/// A cgroup's memory limit and what its processes use now, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cgroup {
    limit: u64,
    usage: u64,
}

/// Memory this process may still use: the machine's available memory, lowered to its cgroup's
/// remaining room when the cgroup (cgroup v1 or v2) has a limit. `None` where the system does
/// not say.
pub fn available_memory_bytes() -> Option<u64> {
    let mut sys = System::new();
    sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    let total = sys.total_memory();
    if total == 0 {
        // sysinfo reads nothing here (no /proc, or a system it does not know); its
        // `cgroup_limits` would panic on a zero total.
        return None;
    }
    // sysinfo reports the limit already lowered to the machine's total, and the room left
    // under it: the usage is the difference.
    let cgroup = sys.cgroup_limits().map(|c| Cgroup {
        limit: c.total_memory,
        usage: c.total_memory.saturating_sub(c.free_memory),
    });
    Some(remaining(sys.available_memory(), total, cgroup))
}

/// Free space on the file system that holds `path` (or the nearest folder above it that
/// exists), from `sysinfo`'s list of mounted disks; `None` where the system does not say.
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    let place = path
        .ancestors()
        .find_map(|p| std::fs::canonicalize(p).ok())?;
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| place.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(sysinfo::Disk::available_space)
}

/// The smaller of the machine's `available` memory and the room left under the cgroup's limit.
///
/// A limit no lower than the machine's `total` is no limit: cgroup v1 writes "unlimited" as
/// 9223372036854771712 (`i64::MAX` rounded down to a page), v2 as `max`. Such a cgroup must not
/// lower the figure to `total − usage`, because its usage counts page cache that
/// `MemAvailable` rightly counts as reclaimable.
fn remaining(available: u64, total: u64, cgroup: Option<Cgroup>) -> u64 {
    match cgroup {
        Some(Cgroup { limit, usage }) if limit < total => {
            available.min(limit.saturating_sub(usage))
        }
        _ => available,
    }
}

/// Images of `features` bytes that fit in one chunk: half the memory available (or `limit`,
/// when given, if smaller) holds the chunk's bytes and the passes that classify or train on it.
///
/// # Errors
/// [`crate::Error::Config`] when the budget cannot hold a single image.
pub fn images_per_chunk(features: usize, limit: Option<u64>) -> crate::Result<usize> {
    let available = available_memory_bytes().map(|m| m / 2);
    let budget = match (limit, available) {
        (Some(l), Some(a)) => l.min(a),
        (Some(l), None) => l,
        (None, Some(a)) => a,
        (None, None) => u64::MAX,
    };
    let per_image = 2 * features.max(1) as u64;
    if budget < per_image {
        return Err(crate::Error::Config(format!(
            "--memory-limit {budget} bytes cannot hold one image ({per_image} bytes with its \
             scaled copy); give at least that"
        )));
    }
    Ok(usize::try_from(budget / per_image).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    /// cgroup v1's `memory.limit_in_bytes` when no limit is set.
    const V1_UNLIMITED: u64 = 9_223_372_036_854_771_712;

    #[test]
    fn a_cgroup_limit_lowers_the_figure_to_the_room_left_under_it() {
        let cgroup = Cgroup {
            limit: 4 * GIB,
            usage: GIB,
        };
        assert_eq!(remaining(20 * GIB, 24 * GIB, Some(cgroup)), 3 * GIB);
    }

    #[test]
    fn the_machine_figure_wins_when_it_is_the_smaller() {
        let cgroup = Cgroup {
            limit: 8 * GIB,
            usage: 2 * GIB,
        };
        assert_eq!(remaining(GIB, 24 * GIB, Some(cgroup)), GIB);
    }

    #[test]
    fn a_cgroup_over_its_limit_leaves_no_room() {
        let cgroup = Cgroup {
            limit: 4 * GIB,
            usage: 5 * GIB,
        };
        assert_eq!(remaining(20 * GIB, 24 * GIB, Some(cgroup)), 0);
    }

    #[test]
    fn an_unlimited_cgroup_leaves_the_machine_figure() {
        // Usage counts page cache: total − usage (21 GiB here) would undercount.
        let v1 = Cgroup {
            limit: V1_UNLIMITED,
            usage: 3 * GIB,
        };
        assert_eq!(remaining(22 * GIB, 24 * GIB, Some(v1)), 22 * GIB);
        // sysinfo hands the limit over already lowered to the machine's total.
        let clamped = Cgroup {
            limit: 24 * GIB,
            usage: 3 * GIB,
        };
        assert_eq!(remaining(22 * GIB, 24 * GIB, Some(clamped)), 22 * GIB);
        assert_eq!(remaining(22 * GIB, 24 * GIB, None), 22 * GIB);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_figure_is_known_and_at_most_the_machines_memory_on_linux() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        let available = available_memory_bytes().expect("Linux says how much memory is free");
        assert!(available > 0);
        assert!(
            available <= total_kib * 1024,
            "{available} bytes available, more than MemTotal's {total_kib} KiB"
        );
    }
}
