//! What workers leave behind. The manager is a child subreaper, so a
//! process a worker started and left running becomes the manager's child
//! once its parent ends; here it is adopted by a generation or killed.

use super::procs::{children_of, own_children, process_name, process_uid, signal_worker};
use super::{Manager, Phase, id};
use crate::logid::{Level, pd_log};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;

/// The most descendants `note_lineage` remembers (a fork bomb cannot grow
/// the manager without bound; past it, orphans are attributed by uid).
const LINEAGE_MAX: usize = 4096;

impl Manager {
    /// Without cgroups, each tick: notes the descendants of every worker
    /// and of every adopted orphan with their generation. A process that
    /// leaves its worker's session and process group (setsid, setpgid) is
    /// still its descendant; when its parent dies it becomes the manager's,
    /// and `adopt_orphans` gives it to the generation it came from (which
    /// kills it when it ends, after graceful-timeout at the latest) instead
    /// of guessing by uid. A process forked and orphaned between two ticks
    /// is not seen and falls back to the guess.
    pub(super) fn note_lineage(&mut self) {
        if self.cgroups.available() {
            return;
        }
        let roots = self
            .workers
            .iter()
            .map(|(pid, w)| (*pid, (w.group.clone(), w.generation)))
            .chain(self.orphans.iter().map(|(pid, home)| (*pid, home.clone())));
        let mut seen: HashMap<Pid, (String, u64)> = HashMap::new();
        for (root, home) in roots.collect::<Vec<_>>() {
            let mut frontier = children_of(root);
            while let Some(pid) = frontier.pop() {
                if seen.len() >= LINEAGE_MAX {
                    break;
                }
                if self.workers.contains_key(&pid) || seen.contains_key(&pid) {
                    continue;
                }
                frontier.extend(children_of(pid));
                seen.insert(pid, home.clone());
            }
        }
        // Known ones that still run keep their generation (they may be the
        // manager's children by now); the dead are forgotten.
        self.lineage.retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        for (pid, home) in seen {
            if self.lineage.len() >= LINEAGE_MAX && !self.lineage.contains_key(&pid) {
                break;
            }
            self.lineage.insert(pid, home);
        }
    }

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
            // cgroups, the lineage noted while its parent ran (a generation
            // that has ended takes nothing), else the generation serving
            // for its user takes it.
            let known = self.lineage.get(&pid).cloned();
            let home = match self.cgroups.of(pid) {
                Some(dir) => self.groups.iter().find_map(|(name, g)| {
                    g.generations
                        .iter()
                        .find(|x| x.cgroup.as_ref() == Some(&dir))
                        .map(|x| (name.clone(), x.id, x.plan.error_log.clone()))
                }),
                None if known.is_some() => known.and_then(|(name, id)| {
                    let gen_ = self.groups.get(&name)?.generations.iter().find(|x| x.id == id)?;
                    Some((name, id, gen_.plan.error_log.clone()))
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
                "killed {} process(es) left running by workers whose generation has ended or whose group no longer serves: {}",
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
