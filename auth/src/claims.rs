//! The claims an [`Identity`] is made of, read from a verified token's payload.
//!
//! The payload is scanned once; only the claims named in the configuration (and `exp` and the
//! binding claim) are parsed into values, every other claim is skipped without being built.
//! A claim this code uses that appears twice is refused (RFC 7519 §4 lets a parser refuse
//! duplicate names; taking one of two would let a token say two things).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::config::ClaimNames;
use crate::{AuthError, Identity};

const MAX_CLAIM_BYTES: usize = 256;
const MAX_CLAIM_ITEMS: usize = 1024;

/// The claims picked: user, organisation, workspaces, groups, roles, `exp`, binding.
const SLOTS: usize = 7;
type Picked = [Option<Value>; SLOTS];

/// Makes the identity from a verified payload (a JSON object). `binding` names the token
/// binding claim when binding is configured.
pub(crate) fn identity(payload: &str, names: &ClaimNames, binding: Option<&str>) -> Result<Identity, AuthError> {
    let wanted: [Option<&str>; SLOTS] =
        [Some(&names.user), Some(&names.org), Some(&names.workspaces), Some(&names.groups), Some(&names.roles), Some("exp"), binding];
    let mut picked: Picked = Default::default();
    serde_json::Deserializer::from_str(payload)
        .deserialize_map(Picker { wanted: &wanted, picked: &mut picked })
        .map_err(|e| AuthError::Invalid(format!("claims: {e}")))?;
    let [user, org, workspaces, groups, roles, exp, binding] = picked;
    let exp = exp.as_ref().and_then(Value::as_f64).ok_or_else(|| AuthError::Invalid("claim `exp` is not a number".into()))?;
    Ok(Identity {
        user: single(&names.user, user)?,
        org_id: single(&names.org, org)?,
        workspaces: set(&names.workspaces, workspaces)?,
        groups: set(&names.groups, groups)?,
        roles: set(&names.roles, roles)?,
        expires_at: exp as i64,
        binding: match binding {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
    })
}

fn single(name: &str, value: Option<Value>) -> Result<String, AuthError> {
    match value {
        Some(Value::String(s)) if valid_claim(&s) => Ok(s),
        Some(_) => Err(AuthError::Invalid(format!("claim `{name}` is not a usable string"))),
        None => Err(AuthError::Invalid(format!("claim `{name}` is missing"))),
    }
}

fn set(name: &str, value: Option<Value>) -> Result<BTreeSet<String>, AuthError> {
    let bad = || AuthError::Invalid(format!("claim `{name}` must be a string or an array of strings"));
    match value {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(s)) if valid_claim(&s) => Ok(BTreeSet::from([s])),
        Some(Value::Array(items)) if items.len() <= MAX_CLAIM_ITEMS => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) if valid_claim(&s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Identifiers from claims: non-empty, bounded, no control characters.
fn valid_claim(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_BYTES && !s.chars().any(char::is_control)
}

struct Picker<'a, 'n> {
    wanted: &'a [Option<&'n str>; SLOTS],
    picked: &'a mut Picked,
}

impl<'de> Visitor<'de> for Picker<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Name(name)) = map.next_key()? {
            let mut slots = (0..SLOTS).filter(|&i| self.wanted[i] == Some(&*name)).peekable();
            if slots.peek().is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let mut value = Some(map.next_value::<Value>()?);
            // Several settings may name the same claim; each gets the value (the last one
            // takes it, the others a copy).
            while let Some(i) = slots.next() {
                if self.picked[i].is_some() {
                    return Err(de::Error::custom(format_args!("claim `{name}` appears twice")));
                }
                self.picked[i] = if slots.peek().is_some() { value.clone() } else { value.take() };
            }
        }
        Ok(())
    }
}

/// A claim's name, borrowed from the payload unless it has escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ClaimNames {
        ClaimNames::default()
    }

    #[test]
    fn picks_the_configured_claims_and_skips_the_rest() {
        let payload = r#"{"iss":"x","sub":"alice","org_id":"acme","workspaces":["ws-b","ws-a"],"groups":"dev","exp":1700000000,"other":{"deep":[1,2,{"a":null}]},"cnf":"abc"}"#;
        let id = identity(payload, &names(), Some("cnf")).expect("identity");
        assert_eq!(id.user, "alice");
        assert_eq!(id.org_id, "acme");
        assert_eq!(id.workspaces, BTreeSet::from(["ws-a".to_owned(), "ws-b".to_owned()]));
        assert_eq!(id.groups, BTreeSet::from(["dev".to_owned()]));
        assert!(id.roles.is_empty());
        assert_eq!(id.expires_at, 1_700_000_000);
        assert_eq!(id.binding.as_deref(), Some("abc"));
        // Without binding configured, the binding claim is not read.
        assert_eq!(identity(payload, &names(), None).expect("identity").binding, None);
    }

    #[test]
    fn escaped_names_and_shared_claim_names_are_read() {
        // `\u0073ub` is `sub` written with an escape; the same claim may feed two settings.
        let n = ClaimNames { groups: "roles".into(), ..names() };
        let id = identity(r#"{"\u0073ub":"bob","org_id":"acme","roles":["a","b"],"exp":5}"#, &n, None).expect("identity");
        assert_eq!(id.user, "bob");
        assert_eq!(id.groups, id.roles);
        assert_eq!(id.roles.len(), 2);
    }

    #[test]
    fn refuses_what_is_missing_malformed_or_said_twice() {
        let n = names();
        let err = |p: &str| identity(p, &n, None).expect_err(p).to_string();
        assert!(err(r#"{"org_id":"acme","exp":5}"#).contains("`sub` is missing"));
        assert!(err(r#"{"sub":"","org_id":"acme","exp":5}"#).contains("`sub` is not a usable string"));
        assert!(err(r#"{"sub":"a\nb","org_id":"acme","exp":5}"#).contains("`sub` is not a usable string"));
        assert!(err(r#"{"sub":"alice","org_id":"acme","exp":"5"}"#).contains("`exp` is not a number"));
        assert!(err(r#"{"sub":"alice","org_id":"acme","workspaces":[1],"exp":5}"#).contains("`workspaces` must be"));
        assert!(err(r#"{"sub":"alice","org_id":"acme","workspaces":{"a":1},"exp":5}"#).contains("`workspaces` must be"));
        assert!(err(r#"{"sub":"alice","sub":"mallory","org_id":"acme","exp":5}"#).contains("`sub` appears twice"));
        assert!(err(r#"{"sub":"alice","\u0073ub":"mallory","org_id":"acme","exp":5}"#).contains("appears twice"));
        assert!(err(r#"["sub","alice"]"#).contains("claims"));
        let long = "w".repeat(MAX_CLAIM_BYTES + 1);
        assert!(err(&format!(r#"{{"sub":"{long}","org_id":"acme","exp":5}}"#)).contains("not a usable string"));
        let many = vec!["w"; MAX_CLAIM_ITEMS + 1];
        assert!(err(&serde_json::json!({"sub":"a","org_id":"o","exp":5,"groups":many}).to_string()).contains("`groups` must be"));
        // An unused claim may repeat, as JSON allows; only the claims read here must be single.
        assert!(identity(r#"{"x":1,"x":2,"sub":"alice","org_id":"acme","exp":5}"#, &n, None).is_ok());
    }
}
