//! Which CPUs a process runs on (Linux): `lambdex bench pipeline --pin`
//! gives the coordinator one core and the local functions the others, so
//! "on one core" is measured as a fact and neither process's threads get in
//! the other's way.

/// Why the CPUs could not be set.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    #[error("pinning to CPUs needs Linux")]
    Unsupported,
    #[error("cannot pin to CPUs: {0}")]
    System(String),
    #[error("pinning needs at least 2 CPUs to run on, and this process may use {0}")]
    TooFewCpus(usize),
}

/// The CPUs this process may run on, lowest first.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Result<Vec<usize>, AffinityError> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(system)?;
    Ok((0..CpuSet::count())
        .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
        .collect())
}

/// The first allowed CPU for the coordinator, the rest for its functions.
pub fn split_cpus() -> Result<(usize, Vec<usize>), AffinityError> {
    let cpus = allowed_cpus()?;
    match cpus.split_first() {
        Some((first, rest)) if !rest.is_empty() => Ok((*first, rest.to_vec())),
        _ => Err(AffinityError::TooFewCpus(cpus.len())),
    }
}

/// Pins every thread of this process to `cpus`. Threads started later
/// inherit the set from the thread that starts them, so the listing is
/// repeated until it finds no thread left unpinned.
#[cfg(target_os = "linux")]
pub fn pin_process(cpus: &[usize]) -> Result<(), AffinityError> {
    use std::collections::BTreeSet;

    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(*cpu).map_err(system)?;
    }
    let mut pinned = BTreeSet::new();
    loop {
        let threads = std::fs::read_dir("/proc/self/task")
            .map_err(system)?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|tid| !pinned.contains(tid))
            .collect::<Vec<_>>();
        if threads.is_empty() {
            return Ok(());
        }
        for tid in threads {
            // A thread that ended meanwhile is no longer there to pin.
            match sched_setaffinity(Pid::from_raw(tid), &set) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(error) => return Err(system(error)),
            }
            pinned.insert(tid);
        }
    }
}

#[cfg(target_os = "linux")]
fn system(error: impl std::fmt::Display) -> AffinityError {
    AffinityError::System(error.to_string())
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Result<Vec<usize>, AffinityError> {
    Err(AffinityError::Unsupported)
}

#[cfg(not(target_os = "linux"))]
pub fn pin_process(_cpus: &[usize]) -> Result<(), AffinityError> {
    Err(AffinityError::Unsupported)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_process_pinned_to_one_cpu_then_runs_there_alone() {
        // The whole test process is pinned for a moment (the tests running
        // beside this one slow down, nothing more), then given its CPUs back.
        let before = allowed_cpus().expect("the CPUs");
        let first = before[0];
        pin_process(&[first]).expect("pinned");
        assert_eq!(allowed_cpus().expect("the CPUs"), vec![first]);
        // A thread started now inherits the set.
        let inherited = std::thread::spawn(allowed_cpus)
            .join()
            .expect("the thread ends")
            .expect("the CPUs");
        assert_eq!(inherited, vec![first]);
        pin_process(&before).expect("restored");
        assert_eq!(allowed_cpus().expect("the CPUs"), before);
    }
}
