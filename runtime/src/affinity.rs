//! Pinning the worker threads of a session's pool to CPUs, one worker per CPU.
//!
//! Kernels split each dispatch into one equal share per worker and the call waits for the
//! slowest share, so two workers time-sharing one CPU make a dispatch take twice as long
//! while another CPU idles. Linux's scheduler does that: it wakes a worker on the CPU of
//! the worker that woke it. On the 2-vCPU VM the benchmarks run on, a 256 x 256 sgemm
//! took both of its workgroups on one CPU in most calls of a run (84 GFLOP/s; pinned, 150).
//! OpenMP runtimes (`OMP_PROC_BIND`) and llama.cpp (`--cpu-mask`) bind their threads the
//! same way.
//!
//! Workers are pinned only when the pool has exactly as many workers as the process may
//! use CPUs: each then has a CPU of its own, and no choice is made of which CPUs. (A smaller
//! pool is left to the scheduler: several of them pinned to the same first CPUs would share
//! those while the others idle.) `MAX_PIN_THREADS=0` turns pinning off.

/// The CPUs the calling thread may run on, in increasing order (empty where unknown).
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is a plain bitmask (all zeros is a valid value); the kernel
        // fills in at most the size passed, and CPU_ISSET reads bits below CPU_SETSIZE.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

/// The CPU for each of `threads` workers, or `None` to leave them unpinned: one thread, a
/// thread count other than the number of allowed CPUs, or `MAX_PIN_THREADS=0`.
pub fn worker_cpus(threads: usize) -> Option<Vec<usize>> {
    if std::env::var("MAX_PIN_THREADS").is_ok_and(|v| v.trim() == "0") || threads < 2 {
        return None;
    }
    let cpus = allowed_cpus();
    (threads == cpus.len()).then_some(cpus)
}

/// Restricts the calling thread to `cpu`. Returns whether the kernel accepted it.
pub fn pin_current_thread(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        // SAFETY: as in `allowed_cpus`; `cpu` is below CPU_SETSIZE; pid 0 is this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_per_worker_or_none() {
        let cpus = allowed_cpus();
        assert_eq!(worker_cpus(1), None);
        if cfg!(target_os = "linux") {
            assert!(!cpus.is_empty());
        }
        if cpus.len() >= 2 {
            assert_eq!(worker_cpus(cpus.len()), Some(cpus.clone()));
            for other in [2, cpus.len() - 1, cpus.len() + 1].into_iter().filter(|t| *t != cpus.len()) {
                assert_eq!(worker_cpus(other), None, "{other} workers, {} CPUs", cpus.len());
            }
        }
    }
}
