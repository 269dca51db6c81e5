//! Control operations: workspaces (vCluster lifecycle, plans, quotas), functions and backups.
//! Not built yet.
