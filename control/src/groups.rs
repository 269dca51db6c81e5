//! Workspace groups: hierarchical, a member of a group is also in every group above it (what
//! the OIDC `groups` claim carries, as `<workspace>:<group>`).

use serde::Serialize;

use crate::db::{Cols, is_unique_violation, new_id, now_ms};
use crate::model::Workspace;
use crate::repo::{Actor, AuditEntry, Repo, audit};
use crate::{ControlError, on_db};

/// The two groups every workspace has; they cannot be deleted.
pub const BUILT_IN: [&str; 2] = ["WSAdmins", "WSUsers"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub parent: Option<String>,
    pub members: Vec<String>,
}

/// A group name: letters, digits and `-`, like the built-in ones.
pub fn check_group_name(name: &str) -> Result<(), ControlError> {
    let ok = !name.is_empty() && name.len() <= 40 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(()) } else { Err(ControlError::Invalid { field: "name", message: "1–40 letters, digits and `-`".into() }) }
}

impl Repo {
    /// The groups `user` is in within a workspace, flattened: each group and all its
    /// ancestors (what the OIDC `groups` claim carries, as `<workspace>:<group>`).
    pub async fn groups_of(&self, workspace_id: &str, user: &str) -> Result<Vec<String>, ControlError> {
        let all: Vec<(String, String, Option<String>)> = on_db!(self.db(), pool => sqlx::query("SELECT id, name, parent_id FROM workspace_groups WHERE workspace_id = $1")
            .bind(workspace_id).fetch_all(pool).await?
            .iter().map(|r| Ok::<_, ControlError>((r.text("id")?, r.text("name")?, r.opt_text("parent_id")?))).collect::<Result<_, _>>()?);
        let direct: Vec<String> = on_db!(self.db(), pool => sqlx::query("SELECT m.group_id FROM group_members m JOIN workspace_groups g ON g.id = m.group_id WHERE g.workspace_id = $1 AND m.user_id = $2")
            .bind(workspace_id).bind(user).fetch_all(pool).await?
            .iter().map(|r| r.text("group_id")).collect::<Result<_, _>>()?);
        let mut out = std::collections::BTreeSet::new();
        for start in direct {
            let mut at = Some(start);
            // The depth bound stops a cycle (which the API never makes) from looping.
            for _ in 0..64 {
                let Some(id) = at.take() else { break };
                let Some((_, name, parent)) = all.iter().find(|(g, _, _)| *g == id) else { break };
                if !out.insert(name.clone()) {
                    break;
                }
                at = parent.clone();
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The workspace `name` if `id` may see it, with the caller's groups in it: organisation
    /// admins (`admin_role`) see all of their organisation's, members those their token names
    /// or whose groups they are in. Anything else is `NotFound`, exactly like a missing one.
    pub async fn visible_workspace(&self, id: &auth::Identity, admin_role: &str, name: &str) -> Result<(Workspace, Vec<String>), ControlError> {
        let hidden = || ControlError::NotFound { kind: "workspace", name: name.to_owned() };
        crate::model::check_name("workspace", name, 40).map_err(|_| hidden())?;
        let ws = self.workspace(id.org_id(), name).await?;
        // Admins and members the token names see it without asking the groups.
        if id.has_role(admin_role) || id.workspaces().contains(name) {
            return Ok((ws, Vec::new()));
        }
        let groups = self.groups_of(&ws.id, id.user()).await?;
        if groups.is_empty() { Err(hidden()) } else { Ok((ws, groups)) }
    }

    /// The workspace's groups with their parents and direct members, by name.
    pub async fn groups(&self, ws: &Workspace) -> Result<Vec<Group>, ControlError> {
        let rows: Vec<(String, String, Option<String>)> = on_db!(self.db(), pool => sqlx::query("SELECT g.id, g.name, p.name AS parent FROM workspace_groups g LEFT JOIN workspace_groups p ON p.id = g.parent_id WHERE g.workspace_id = $1 ORDER BY g.name")
            .bind(&ws.id).fetch_all(pool).await?
            .iter().map(|r| Ok::<_, ControlError>((r.text("id")?, r.text("name")?, r.opt_text("parent")?))).collect::<Result<_, _>>()?);
        let members: Vec<(String, String)> = on_db!(self.db(), pool => sqlx::query("SELECT m.group_id, m.user_id FROM group_members m JOIN workspace_groups g ON g.id = m.group_id WHERE g.workspace_id = $1 ORDER BY m.user_id")
            .bind(&ws.id).fetch_all(pool).await?
            .iter().map(|r| Ok::<_, ControlError>((r.text("group_id")?, r.text("user_id")?))).collect::<Result<_, _>>()?);
        Ok(rows
            .into_iter()
            .map(|(id, name, parent)| Group { name, parent, members: members.iter().filter(|(g, _)| *g == id).map(|(_, u)| u.clone()).collect() })
            .collect())
    }

    async fn group_id(&self, ws: &Workspace, name: &str) -> Result<String, ControlError> {
        let id = on_db!(self.db(), pool => sqlx::query("SELECT id FROM workspace_groups WHERE workspace_id = $1 AND name = $2").bind(&ws.id).bind(name).fetch_optional(pool).await?.map(|r| r.text("id")).transpose()?);
        id.ok_or_else(|| ControlError::NotFound { kind: "group", name: name.to_owned() })
    }

    /// A new group under `parent` (default `WSUsers`): its members are in the parent too.
    pub async fn create_group(&self, actor: &Actor<'_>, ws: &Workspace, name: &str, parent: Option<&str>) -> Result<Group, ControlError> {
        check_group_name(name)?;
        let parent = parent.unwrap_or("WSUsers");
        let parent_id = self
            .group_id(ws, parent)
            .await
            .map_err(|_| ControlError::Invalid { field: "parent", message: format!("no group `{parent}` in workspace `{}`", ws.name) })?;
        let g = Group { name: name.to_owned(), parent: Some(parent.to_owned()), members: Vec::new() };
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO workspace_groups (id, workspace_id, name, parent_id, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(new_id("grp")).bind(&ws.id).bind(name).bind(&parent_id).bind(now_ms())
                .execute(&mut *tx).await
                .map_err(|e| if is_unique_violation(&e) { ControlError::AlreadyExists { kind: "group", name: name.to_owned() } } else { e.into() })?;
            audit!(tx, &AuditEntry::new(actor, &ws.name, "group.create", &format!("workspaces/{}/groups/{name}", ws.name), None, serde_json::to_value(&g).ok()));
            tx.commit().await?;
            Ok(g)
        })
    }

    /// Deletes a group without subgroups (its memberships go with it).
    pub async fn delete_group(&self, actor: &Actor<'_>, ws: &Workspace, name: &str) -> Result<(), ControlError> {
        if BUILT_IN.contains(&name) {
            return Err(ControlError::Conflict(format!("`{name}` is built in and stays")));
        }
        let id = self.group_id(ws, name).await?;
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let children = sqlx::query("SELECT COUNT(*) AS n FROM workspace_groups WHERE parent_id = $1").bind(&id).fetch_one(&mut *tx).await?.int("n")?;
            if children > 0 {
                return Err(ControlError::Conflict(format!("group `{name}` has subgroups; delete or move them first")));
            }
            sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(&id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM workspace_groups WHERE id = $1").bind(&id).execute(&mut *tx).await?;
            audit!(tx, &AuditEntry::new(actor, &ws.name, "group.delete", &format!("workspaces/{}/groups/{name}", ws.name), Some(serde_json::json!({ "name": name })), None));
            tx.commit().await?;
            Ok(())
        })
    }

    /// Adds (`true`) or removes `user` as a direct member of the group.
    pub async fn set_member(&self, actor: &Actor<'_>, ws: &Workspace, group: &str, user: &str, member: bool) -> Result<(), ControlError> {
        let ok = !user.is_empty() && user.len() <= 200 && !user.chars().any(char::is_control);
        if !ok {
            return Err(ControlError::Invalid { field: "user", message: "1–200 characters, no control characters".into() });
        }
        let id = self.group_id(ws, group).await?;
        let resource = format!("workspaces/{}/groups/{group}/members/{user}", ws.name);
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let changed = if member {
                sqlx::query("INSERT INTO group_members (group_id, user_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (group_id, user_id) DO NOTHING")
                    .bind(&id).bind(user).bind(now_ms()).execute(&mut *tx).await?.rows_affected()
            } else {
                if group == "WSAdmins" {
                    let left = sqlx::query("SELECT COUNT(*) AS n FROM group_members WHERE group_id = $1 AND user_id <> $2").bind(&id).bind(user).fetch_one(&mut *tx).await?.int("n")?;
                    if left == 0 {
                        return Err(ControlError::Conflict("a workspace keeps at least one member of WSAdmins".into()));
                    }
                }
                sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2").bind(&id).bind(user).execute(&mut *tx).await?.rows_affected()
            };
            if changed > 0 {
                let (action, before, after) = if member { ("group.member_add", None, Some(serde_json::json!({ "user": user }))) } else { ("group.member_remove", Some(serde_json::json!({ "user": user })), None) };
                audit!(tx, &AuditEntry::new(actor, &ws.name, action, &resource, before, after));
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_names_are_plain() {
        for good in ["WSAdmins", "team-a", "SRE2"] {
            assert!(super::check_group_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a:b", "ws/x", &"g".repeat(41)] {
            assert!(super::check_group_name(bad).is_err(), "{bad}");
        }
    }
}
