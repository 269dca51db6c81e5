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
