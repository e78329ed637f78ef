//! The Task Center: `TaskServer`, dispatcher, runners, the task database and the `zbs-taskd` and `zbs-task` binaries; built in the TaskServer and Task Center issues.
