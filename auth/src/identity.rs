//! Who is asking: made only from a verified token.

use std::collections::BTreeSet;

/// The caller, as its verified token says. Only [`crate::TokenVerifier`] makes one, so holding
/// an `Identity` means a signature, an issuer, an audience and a lifetime were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub(crate) user: String,
    pub(crate) org_id: String,
    pub(crate) workspaces: BTreeSet<String>,
    pub(crate) groups: BTreeSet<String>,
    pub(crate) roles: BTreeSet<String>,
    /// `exp`, Unix seconds.
    pub(crate) expires_at: i64,
    /// The token binding claim, when the token has one.
    pub(crate) binding: Option<String>,
}

impl Identity {
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn org_id(&self) -> &str {
        &self.org_id
    }
    /// The workspaces the token says the user belongs to.
    pub fn workspaces(&self) -> &BTreeSet<String> {
        &self.workspaces
    }
    pub fn groups(&self) -> &BTreeSet<String> {
        &self.groups
    }
    pub fn roles(&self) -> &BTreeSet<String> {
        &self.roles
    }
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}
