//! Following a traced command's processes in the kernel (`portrace -- CMD`): where the
//! task tracepoints keep the fields the kernel programs read (from their tracefs `format`
//! files), and how many processes the kernel's traced set holds.
//!
//! The kernel program keeps a set of the command's live processes. `task:task_newtask`
//! (in the creating task, before the new one can run) adds each process a member starts,
//! and tells threads apart by their clone flags; `sched:sched_process_exit` removes a
//! process when its last thread exits. A socket is marked as the command's when its owner
//! is learned, so its later transitions stay the command's after the process is gone.

use std::path::Path;

use portrace_ebpf::TaskLayout;

/// The traced set never holds more than this many processes, whatever `kernel.pid_max`
/// says: the kernel allocates the map's buckets up front (16 bytes each).
pub const MAX_TRACED: u32 = 65_536;

pub const NEWTASK_FORMAT: &str = "events/task/task_newtask/format";
pub const EXIT_FORMAT: &str = "events/sched/sched_process_exit/format";

/// The task layout from the text of `task_newtask`'s format and, if readable,
/// `sched_process_exit`'s. An exit record without `group_dead` leaves exits unfollowed.
pub fn task_layout(newtask: &str, exit: Option<&str>) -> Result<TaskLayout, String> {
    let field = |name: &str, sizes: &[u64]| -> Result<u16, String> {
        match crate::tracefs::field_position(newtask, name) {
            Some((offset, size)) if sizes.contains(&size) => u16::try_from(offset)
                .ok()
                .filter(|&o| u64::from(o) + size <= crate::tracefs::MAX_RECORD)
                .ok_or_else(|| format!("task:task_newtask's field '{name}' lies past the end of a record ({offset})")),
            Some((_, size)) => Err(format!("task:task_newtask's field '{name}' is {size} bytes; portrace reads {sizes:?}")),
            None => Err(format!("task:task_newtask has no field '{name}'")),
        }
    };
    let exit_group_dead = exit
        .and_then(|text| crate::tracefs::field_position(text, "group_dead"))
        .filter(|&(offset, size)| size == 1 && offset > 0 && offset < crate::tracefs::MAX_RECORD)
        .map_or(0, |(offset, _)| offset as u16);
    Ok(TaskLayout { newtask_pid: field("pid", &[4])?, newtask_flags: field("clone_flags", &[8])?, exit_group_dead, _pad: 0 })
}

/// Reads the task layout under a tracefs root; the error says why the command cannot be
/// followed.
pub fn read_task_layout(tracefs: &Path) -> anyhow::Result<TaskLayout> {
    let path = tracefs.join(NEWTASK_FORMAT);
    let newtask = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}): portrace follows a command's processes with the task:task_newtask \
             tracepoint, which this kernel does not offer",
            path.display()
        )
    })?;
    let exit = std::fs::read_to_string(tracefs.join(EXIT_FORMAT)).ok();
    task_layout(&newtask, exit.as_deref()).map_err(|e| anyhow::anyhow!("cannot follow the command's processes: {e}"))
}

/// The traced set's capacity from `kernel.pid_max`: every possible pid up to
/// [`MAX_TRACED`], so with the default pid_max (32768) it can never be full. A set that
/// fills anyway is counted and reported, never silently wrong.
pub fn traced_capacity(pid_max: Option<&str>) -> u32 {
    pid_max
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map_or(MAX_TRACED, |n| n.clamp(1024, MAX_TRACED))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWTASK: &str = include_str!("../testdata/format/linux-6.18-task_newtask.format");
    const EXIT: &str = include_str!("../testdata/format/linux-6.18-sched_process_exit.format");

    #[test]
    fn reads_this_kernels_layout() {
        let l = task_layout(NEWTASK, Some(EXIT)).unwrap();
        assert_eq!((l.newtask_pid, l.newtask_flags, l.exit_group_dead), (8, 32, 32));
    }

    #[test]
    fn an_exit_record_without_group_dead_leaves_exits_unfollowed() {
        let old_exit = EXIT.replace("\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n", "");
        assert_ne!(old_exit, EXIT, "the fixture has the field");
        assert_eq!(task_layout(NEWTASK, Some(&old_exit)).unwrap().exit_group_dead, 0);
        assert_eq!(task_layout(NEWTASK, None).unwrap().exit_group_dead, 0);
    }

    #[test]
    fn a_newtask_record_portrace_cannot_read_is_refused_by_field() {
        let no_flags = NEWTASK.replace("clone_flags", "flags");
        assert_eq!(task_layout(&no_flags, None).unwrap_err(), "task:task_newtask has no field 'clone_flags'");
        let small = NEWTASK.replace("u64 clone_flags;\toffset:32;\tsize:8;", "u32 clone_flags;\toffset:32;\tsize:4;");
        assert!(task_layout(&small, None).unwrap_err().contains("'clone_flags' is 4 bytes"));
    }

    #[test]
    fn capacity_follows_pid_max_within_bounds() {
        assert_eq!(traced_capacity(Some("32768\n")), 32_768);
        assert_eq!(traced_capacity(Some("4194304")), MAX_TRACED);
        assert_eq!(traced_capacity(Some("300")), 1024);
        assert_eq!(traced_capacity(None), MAX_TRACED);
        assert_eq!(traced_capacity(Some("lots")), MAX_TRACED);
    }
}
