//! What workers leave behind. The manager is a child subreaper, so a
//! process a worker started and left running becomes the manager's child
//! once its parent ends; here it is adopted by a generation or killed.

use super::procs::{own_children, process_name, process_uid, signal_worker};
use super::{Manager, Phase, id};
use crate::logid::{Level, pd_log};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

impl Manager {
    /// The manager is a child subreaper: a process a worker started and
    /// left behind (daemonised, in a session of its own, out of the
    /// worker's process group) becomes the manager's child once its parent
    /// ends. Such an orphan lives as long as the serving generation of a
    /// group of its user (it may be a legitimate background job), and is
    /// killed when that generation ends; one that belongs to no such
    /// generation is killed at once.
    pub(super) fn adopt_orphans(&mut self) {
        let mut killed = Vec::new();
        for pid in own_children() {
            if self.workers.contains_key(&pid) || self.orphans.contains_key(&pid) {
                continue;
            }
            // Its cgroup says which generation it comes from; without
            // cgroups, the generation serving for its user takes it.
            let home = match self.cgroups.of(pid) {
                Some(dir) => self.groups.iter().find_map(|(name, g)| {
                    g.generations
                        .iter()
                        .find(|x| x.cgroup.as_ref() == Some(&dir))
                        .map(|x| (name.clone(), x.id, x.plan.error_log.clone()))
                }),
                None => {
                    let uid = process_uid(pid);
                    self.groups.iter().find_map(|(name, g)| {
                        g.generations
                            .iter()
                            .find(|x| x.phase == Phase::Serving && Some(x.plan.uid) == uid)
                            .map(|x| (name.clone(), x.id, x.plan.error_log.clone()))
                    })
                }
            };
            let what = process_name(pid);
            match home {
                Some((group, generation, log)) => {
                    pd_log!(level: Level::Notice, id::ORPHAN, group = %group, log = %log, "pid {pid} ({what}), left running by a worker, now belongs to the manager; it ends with generation {generation}");
                    self.orphans.insert(pid, (group, generation));
                }
                None => {
                    signal_worker(pid, Signal::SIGKILL);
                    killed.push(format!("{pid} ({what})"));
                }
            }
        }
        // One line a round, however many: a fork bomb does not flood the log.
        if !killed.is_empty() {
            pd_log!(
                id::ORPHAN,
                "killed {} process(es) left running by workers whose group no longer serves: {}",
                killed.len(),
                killed.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }

    /// Kills what the workers of a generation left running.
    pub(super) fn kill_orphans_of(&mut self, name: &str, gen_id: u64, log: &str) {
        let theirs: Vec<Pid> =
            self.orphans.iter().filter(|(_, (g, id))| g == name && *id == gen_id).map(|(p, _)| *p).collect();
        for pid in theirs {
            self.orphans.remove(&pid);
            let what = process_name(pid);
            signal_worker(pid, Signal::SIGKILL);
            pd_log!(id::ORPHAN, group = %name, log = %log, "killed pid {pid} ({what}), left running by a worker of generation {gen_id}, which has ended");
        }
    }
}
