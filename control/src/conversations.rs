//! The assistant's conversations, kept per user in the control database: a title and the
//! messages in order, each stored as the JSON the assistant wrote. Only their owner reads,
//! extends or deletes them; another user's conversation is not found.

use serde::Serialize;

use crate::db::{Cols, new_id, now_ms};
use crate::repo::Repo;
use crate::{ControlError, on_db};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Messages kept per conversation at most; older ones are compacted by the assistant.
pub const MAX_MESSAGES: i64 = 2_000;

impl Repo {
    pub async fn create_conversation(&self, org_id: &str, user: &str, title: &str) -> Result<Conversation, ControlError> {
        let now = now_ms();
        let title: String = title.chars().take(80).collect();
        let c = Conversation { id: new_id("conv"), title, created_at: now, updated_at: now };
        on_db!(self.db(), pool => {
            sqlx::query("INSERT INTO conversations (id, org_id, user_id, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)")
                .bind(&c.id).bind(org_id).bind(user).bind(&c.title).bind(now).execute(pool).await?;
        });
        Ok(c)
    }

    pub async fn conversation(&self, org_id: &str, user: &str, id: &str) -> Result<Conversation, ControlError> {
        let found = on_db!(self.db(), pool => sqlx::query("SELECT id, title, created_at, updated_at FROM conversations WHERE id = $1 AND org_id = $2 AND user_id = $3")
            .bind(id).bind(org_id).bind(user).fetch_optional(pool).await?
            .map(|r| Ok::<_, ControlError>(Conversation { id: r.text("id")?, title: r.text("title")?, created_at: r.int("created_at")?, updated_at: r.int("updated_at")? })).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "conversation", name: id.to_owned() })
    }

    pub async fn conversations(&self, org_id: &str, user: &str, limit: i64) -> Result<Vec<Conversation>, ControlError> {
        Ok(
            on_db!(self.db(), pool => sqlx::query("SELECT id, title, created_at, updated_at FROM conversations WHERE org_id = $1 AND user_id = $2 ORDER BY updated_at DESC, id DESC LIMIT $3")
            .bind(org_id).bind(user).bind(limit).fetch_all(pool).await?
            .iter().map(|r| Ok::<_, ControlError>(Conversation { id: r.text("id")?, title: r.text("title")?, created_at: r.int("created_at")?, updated_at: r.int("updated_at")? }))
            .collect::<Result<_, _>>()?),
        )
    }

    /// The stored messages (JSON texts), oldest first.
    pub async fn conversation_messages(&self, conversation: &Conversation) -> Result<Vec<String>, ControlError> {
        Ok(on_db!(self.db(), pool => sqlx::query("SELECT message FROM conversation_messages WHERE conversation_id = $1 ORDER BY seq LIMIT $2")
            .bind(&conversation.id).bind(MAX_MESSAGES).fetch_all(pool).await?
            .iter().map(|r| r.text("message")).collect::<Result<_, _>>()?))
    }

    /// Appends `messages` (JSON texts) in one transaction.
    pub async fn append_messages(&self, conversation: &Conversation, messages: &[String]) -> Result<(), ControlError> {
        let now = now_ms();
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let next = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS n FROM conversation_messages WHERE conversation_id = $1").bind(&conversation.id).fetch_one(&mut *tx).await?.int("n")?;
            for (i, m) in messages.iter().enumerate() {
                sqlx::query("INSERT INTO conversation_messages (conversation_id, seq, message, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&conversation.id).bind(next + 1 + i as i64).bind(m).bind(now).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2").bind(now).bind(&conversation.id).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn delete_conversation(&self, org_id: &str, user: &str, id: &str) -> Result<(), ControlError> {
        let c = self.conversation(org_id, user, id).await?;
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM conversation_messages WHERE conversation_id = $1").bind(&c.id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM conversations WHERE id = $1").bind(&c.id).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// What a proposed write action is, as the assistant hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Proposal<'a> {
    pub org_id: &'a str,
    pub user: &'a str,
    pub conversation_id: &'a str,
    pub tool: &'a str,
    pub arguments: &'a serde_json::Value,
    pub action: &'a str,
    pub ttl_ms: i64,
}

/// A write action the assistant proposed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub id: String,
    pub conversation_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    /// The exact action, as shown to the user.
    pub action: String,
    /// `pending`, `approved` (then `executed` or `failed`), `denied` or `expired`.
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub result: String,
    pub created_at: i64,
    pub expires_at: i64,
}

fn approval_of(r: &impl Cols) -> Result<Approval, ControlError> {
    Ok(Approval {
        id: r.text("id")?,
        conversation_id: r.text("conversation_id")?,
        tool: r.text("tool")?,
        arguments: serde_json::from_str(&r.text("arguments")?).unwrap_or(serde_json::Value::Null),
        action: r.text("action")?,
        status: r.text("status")?,
        result: r.text("result")?,
        created_at: r.int("created_at")?,
        expires_at: r.int("expires_at")?,
    })
}

impl Repo {
    pub async fn propose(&self, p: &Proposal<'_>) -> Result<Approval, ControlError> {
        let Proposal { org_id, user, conversation_id, tool, arguments, action, ttl_ms } = *p;
        let now = now_ms();
        let a = Approval {
            id: new_id("appr"),
            conversation_id: conversation_id.to_owned(),
            tool: tool.to_owned(),
            arguments: arguments.clone(),
            action: action.to_owned(),
            status: "pending".into(),
            result: String::new(),
            created_at: now,
            expires_at: now + ttl_ms,
        };
        on_db!(self.db(), pool => {
            sqlx::query("INSERT INTO approvals (id, org_id, user_id, conversation_id, tool, arguments, action, status, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)")
                .bind(&a.id).bind(org_id).bind(user).bind(conversation_id).bind(tool).bind(arguments.to_string()).bind(action).bind(now).bind(a.expires_at)
                .execute(pool).await?;
        });
        Ok(a)
    }

    pub async fn approval(&self, org_id: &str, user: &str, id: &str) -> Result<Approval, ControlError> {
        let found = on_db!(self.db(), pool => sqlx::query("SELECT id, conversation_id, tool, arguments, action, status, result, created_at, expires_at FROM approvals WHERE id = $1 AND org_id = $2 AND user_id = $3")
            .bind(id).bind(org_id).bind(user).fetch_optional(pool).await?.map(|r| approval_of(&r)).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "approval", name: id.to_owned() })
    }

    /// Moves a pending approval to `status` if it is still pending and not expired (one
    /// decision wins; an expired one becomes `expired`). Returns it as decided.
    pub async fn decide(&self, org_id: &str, user: &str, id: &str, status: &str) -> Result<Approval, ControlError> {
        let a = self.approval(org_id, user, id).await?;
        let now = now_ms();
        if a.status == "pending" && now > a.expires_at {
            on_db!(self.db(), pool => {
                sqlx::query("UPDATE approvals SET status = 'expired', decided_at = $1 WHERE id = $2 AND status = 'pending'").bind(now).bind(id).execute(pool).await?;
            });
            return Err(ControlError::Conflict(format!("approval `{id}` expired; ask the assistant again")));
        }
        let done = on_db!(self.db(), pool => sqlx::query("UPDATE approvals SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'pending' AND expires_at >= $2")
            .bind(status).bind(now).bind(id).execute(pool).await?.rows_affected());
        if done == 0 {
            return Err(ControlError::Conflict(format!("approval `{id}` is {} already", a.status)));
        }
        Ok(Approval { status: status.to_owned(), ..a })
    }

    pub async fn record_outcome(&self, id: &str, status: &str, result: &str) -> Result<(), ControlError> {
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE approvals SET status = $1, result = $2 WHERE id = $3").bind(status).bind(result).bind(id).execute(pool).await?;
        });
        Ok(())
    }
}
