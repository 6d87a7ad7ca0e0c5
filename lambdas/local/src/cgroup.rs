//! Lambda gives a function CPU in proportion to its memory: one vCPU at
//! 1,769 MB. Locally each process instance gets a CPU cgroup with that
//! quota: `cpu.max` on cgroup v2, `cpu.cfs_quota_us` on v1, whichever is
//! mounted (root only). Where neither can be used, instances run
//! unthrottled and [`CpuLimiter::detect`] says why, once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::MB_PER_VCPU;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period the quota is a share of. Short, so the share holds over
/// a short call too: with the kernel's default 100 ms, a 20 ms call at
/// 1,024 MB (a 58 ms quota) would run at a whole core, unthrottled.
/// Lambda does not publish its period; 20 ms keeps even 128 MB's quota
/// (1.4 ms) above the kernel's minimum.
const PERIOD_US: u64 = 20_000;
/// The kernel's smallest quota.
const MIN_QUOTA_US: u64 = 1_000;

/// The CFS quota per period giving `memory_mb`'s share of a core.
pub fn quota_us(memory_mb: u32) -> u64 {
    (PERIOD_US * u64::from(memory_mb) / u64::from(MB_PER_VCPU)).max(MIN_QUOTA_US)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Creates one CPU cgroup per instance under a group of this host's own.
#[derive(Debug)]
pub struct CpuLimiter {
    group: Option<(Version, PathBuf)>,
    /// Why CPU is not limited, when it is not.
    pub unavailable: Option<String>,
}

impl CpuLimiter {
    /// No limits (the setting is off).
    pub fn off(reason: &str) -> Self {
        Self {
            group: None,
            unavailable: Some(reason.to_owned()),
        }
    }

    /// Finds a usable CPU controller and makes this host's group in it.
    pub fn detect(host: &str) -> Self {
        match Self::make_group(host) {
            Ok(group) => Self {
                group: Some(group),
                unavailable: None,
            },
            Err(reason) => Self::off(&reason),
        }
    }

    fn make_group(host: &str) -> Result<(Version, PathBuf), String> {
        let root = Path::new(CGROUP_ROOT);
        let (version, parent) = if fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "cpu"))
        {
            // v2: children get the cpu controller only if the parent hands it down.
            fs::write(root.join("cgroup.subtree_control"), "+cpu")
                .map_err(|e| format!("cannot enable the cpu controller in {CGROUP_ROOT}: {e}"))?;
            (Version::V2, root.to_owned())
        } else if let Some(dir) = ["cpu", "cpu,cpuacct"]
            .iter()
            .map(|name| root.join(name))
            .find(|dir| dir.join("cpu.cfs_quota_us").is_file())
        {
            (Version::V1, dir)
        } else {
            return Err(format!(
                "no cgroup CPU controller under {CGROUP_ROOT} (neither v2 cpu.max nor v1 cpu.cfs_quota_us)"
            ));
        };
        let group = parent.join(host);
        fs::create_dir_all(&group)
            .map_err(|e| format!("cannot create {} (needs root): {e}", group.display()))?;
        if version == Version::V2 {
            fs::write(group.join("cgroup.subtree_control"), "+cpu").map_err(|e| {
                format!(
                    "cannot enable the cpu controller in {}: {e}",
                    group.display()
                )
            })?;
        }
        Ok((version, group))
    }

    /// Moves `pid` into a new cgroup named `instance` with `memory_mb`'s
    /// share of CPU. `None` when limits are unavailable.
    pub fn limit(&self, instance: &str, pid: u32, memory_mb: u32) -> io::Result<Option<Cgroup>> {
        let Some((version, group)) = &self.group else {
            return Ok(None);
        };
        let dir = group.join(instance);
        fs::create_dir(&dir)?;
        let cgroup = Cgroup { dir };
        let quota = quota_us(memory_mb);
        match version {
            Version::V2 => fs::write(cgroup.dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))?,
            Version::V1 => {
                fs::write(cgroup.dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                fs::write(cgroup.dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            }
        }
        fs::write(cgroup.dir.join("cgroup.procs"), pid.to_string())?;
        Ok(Some(cgroup))
    }

    /// Removes this host's group (its instances must have exited).
    pub fn remove(&self) {
        if let Some((_, group)) = &self.group {
            if let Ok(entries) = fs::read_dir(group) {
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        let _ = fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = fs::remove_dir(group);
        }
    }
}

/// One instance's cgroup; removed once its process has exited.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    pub fn remove(self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_follows_memory() {
        assert_eq!(quota_us(MB_PER_VCPU), PERIOD_US);
        assert_eq!(quota_us(2 * MB_PER_VCPU), 2 * PERIOD_US);
        assert_eq!(quota_us(128), 1_447);
        assert_eq!(quota_us(1), MIN_QUOTA_US);
    }
}
