//! The claims of a token whose signature verified: the registered ones checked (RFC 7519
//! §4.1), and those an [`Identity`] is made of.
//!
//! The payload is scanned once; only the claims named in the configuration, the registered
//! claims and the binding claim are parsed into values, every other claim is skipped without
//! being built. A claim this code uses that appears twice is refused (RFC 7519 §4 lets a
//! parser refuse duplicate names; taking one of two would let a token say two things).
//!
//! The registered claims are checked as `jsonwebtoken::decode` (10.4) checks them with
//! `exp`, `iss` and `aud` required and `nbf` validated, so a token is refused here exactly
//! when it would be refused there (a test in `tests.rs` compares the two over hostile claims):
//! `exp` and `nbf` are numbers (never strings), `iss` and `aud` are a string or a list of
//! strings that includes the expected one. Doing it here saves parsing the payload twice and
//! the header twice more, which is a fifth of a cold verification.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use crate::config::ClaimNames;
use crate::{AuthError, Identity};

const MAX_CLAIM_BYTES: usize = 256;
const MAX_CLAIM_ITEMS: usize = 1024;

/// The claims picked: user, organisation, workspaces, groups, roles, binding, and the
/// registered `exp`, `nbf`, `iss`, `aud` and `sub`.
const SLOTS: usize = 11;
type Picked<'de> = [Option<Claim<'de>>; SLOTS];

/// What the registered claims must say.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// Unix seconds now.
    pub now: u64,
}

/// Checks the registered claims of a verified payload (a JSON object) and makes the identity
/// from it. `binding` names the token binding claim when binding is configured.
pub(crate) fn identity(payload: &str, names: &ClaimNames, binding: Option<&str>, expected: &Expected<'_>) -> Result<Identity, AuthError> {
    let wanted: [Option<&str>; SLOTS] = [
        Some(&names.user),
        Some(&names.org),
        Some(&names.workspaces),
        Some(&names.groups),
        Some(&names.roles),
        binding,
        Some("exp"),
        Some("nbf"),
        Some("iss"),
        Some("aud"),
        Some("sub"),
    ];
    let mut picked: Picked = Default::default();
    let mut de = serde_json::Deserializer::from_str(payload);
    de.deserialize_map(Picker { wanted: &wanted, picked: &mut picked }).and_then(|()| de.end()).map_err(|e| AuthError::Invalid(format!("claims: {e}")))?;
    let [user, org, workspaces, groups, roles, binding, exp, nbf, iss, aud, sub] = picked;
    // `jsonwebtoken` cannot read a payload whose `sub` is a list or an object.
    if matches!(sub, Some(Claim::Texts(_) | Claim::Other)) {
        return Err(AuthError::Invalid("claim `sub` is a list or an object".into()));
    }
    let exp = registered(exp, nbf, iss, aud, expected)?;
    Ok(Identity {
        user: single(&names.user, user)?,
        org_id: single(&names.org, org)?,
        workspaces: set(&names.workspaces, workspaces)?,
        groups: set(&names.groups, groups)?,
        roles: set(&names.roles, roles)?,
        expires_at: i64::try_from(exp).unwrap_or(i64::MAX),
        binding: match binding {
            Some(Claim::Text(s)) => Some(s.into_owned()),
            _ => None,
        },
    })
}

/// A registered claim as read: absent (or `null`), malformed, or a value.
enum Read<T> {
    Absent,
    Malformed,
    Parsed(T),
}

/// A NumericDate (`exp`, `nbf`): a non-negative number, a fraction rounded. `null` is
/// malformed, not absent, as `jsonwebtoken` reads it.
fn numeric_date(v: Option<Claim<'_>>) -> Read<u64> {
    match v {
        None => Read::Absent,
        Some(Claim::Whole(u)) => Read::Parsed(u),
        Some(Claim::Fraction(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Read::Parsed(f.round() as u64),
        Some(_) => Read::Malformed,
    }
}

/// `iss` or `aud`: a string or a list of strings, and whether it names `want`.
fn names_one(v: Option<Claim<'_>>, want: &str) -> Read<bool> {
    match v {
        None | Some(Claim::Null) => Read::Absent,
        Some(Claim::Text(s)) => Read::Parsed(s == want),
        Some(Claim::Texts(items)) => Read::Parsed(items.iter().any(|i| i == want)),
        Some(_) => Read::Malformed,
    }
}

/// Checks `exp`, `nbf`, `iss` and `aud`, in `jsonwebtoken`'s order; returns `exp`.
fn registered(
    exp: Option<Claim<'_>>,
    nbf: Option<Claim<'_>>,
    iss: Option<Claim<'_>>,
    aud: Option<Claim<'_>>,
    expected: &Expected<'_>,
) -> Result<u64, AuthError> {
    let invalid = |why: &str| AuthError::Invalid(why.to_owned());
    let (exp, nbf, iss, aud) = (numeric_date(exp), numeric_date(nbf), names_one(iss, expected.issuer), names_one(aud, expected.audience));
    let Read::Parsed(exp) = exp else { return Err(invalid("claim `exp` is missing or not a number")) };
    let Read::Parsed(iss) = iss else { return Err(invalid("claim `iss` is missing or not a string")) };
    let Read::Parsed(aud) = aud else { return Err(invalid("claim `aud` is missing or not a string")) };
    let nbf = match nbf {
        Read::Malformed => return Err(invalid("claim `nbf` is not a number")),
        Read::Absent => None,
        Read::Parsed(n) => Some(n),
    };
    if exp < expected.now.saturating_sub(expected.leeway) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|n| n > expected.now.saturating_add(expected.leeway)) {
        return Err(invalid("the token is not valid yet (`nbf`)"));
    }
    if !iss {
        return Err(invalid("the token is from another issuer (`iss`)"));
    }
    if !aud {
        return Err(invalid("the token is for another audience (`aud`)"));
    }
    Ok(exp)
}

fn single(name: &str, value: Option<Claim<'_>>) -> Result<String, AuthError> {
    match value {
        Some(Claim::Text(s)) if valid_claim(&s) => Ok(s.into_owned()),
        Some(_) => Err(AuthError::Invalid(format!("claim `{name}` is not a usable string"))),
        None => Err(AuthError::Invalid(format!("claim `{name}` is missing"))),
    }
}

fn set(name: &str, value: Option<Claim<'_>>) -> Result<BTreeSet<String>, AuthError> {
    let bad = || AuthError::Invalid(format!("claim `{name}` must be a string or an array of strings"));
    match value {
        None | Some(Claim::Null) => Ok(BTreeSet::new()),
        Some(Claim::Text(s)) if valid_claim(&s) => Ok(BTreeSet::from([s.into_owned()])),
        Some(Claim::Texts(items)) if items.len() <= MAX_CLAIM_ITEMS => {
            items.into_iter().map(|s| if valid_claim(&s) { Ok(s.into_owned()) } else { Err(bad()) }).collect()
        }
        Some(_) => Err(bad()),
    }
}

/// Identifiers from claims: non-empty, bounded, no control characters.
fn valid_claim(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_BYTES && !s.chars().any(char::is_control)
}

struct Picker<'a, 'n, 'de> {
    wanted: &'a [Option<&'n str>; SLOTS],
    picked: &'a mut Picked<'de>,
}

impl<'de> Visitor<'de> for Picker<'_, '_, 'de> {
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
            let mut value = Some(map.next_value::<Claim<'de>>()?);
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
        match d.deserialize_str(Reader { nested: false })? {
            Claim::Text(s) => Ok(Name(s)),
            _ => Err(de::Error::custom("a claim name is a string")),
        }
    }
}

/// A picked claim's value, in the shapes claims take; strings are borrowed from the payload
/// unless they have escapes, and nothing else is built.
#[derive(Clone)]
enum Claim<'de> {
    Null,
    Text(Cow<'de, str>),
    Whole(u64),
    Fraction(f64),
    /// A list of strings only.
    Texts(Vec<Cow<'de, str>>),
    /// A negative number or a boolean.
    Scalar,
    /// An object, or a list with a non-string in it.
    Other,
}

impl<'de> de::Deserialize<'de> for Claim<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reader { nested: false })
    }
}

/// Reads a [`Claim`]; `nested` for an item of a list, which is a string or [`Claim::Other`].
struct Reader {
    nested: bool,
}

impl<'de> Visitor<'de> for Reader {
    type Value = Claim<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Claim<'de>, E> {
        Ok(Claim::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Claim<'de>, E> {
        Ok(Claim::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Claim<'de>, E> {
        Ok(if self.nested { Claim::Other } else { Claim::Null })
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Claim<'de>, E> {
        Ok(if self.nested { Claim::Other } else { Claim::Whole(n) })
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Claim<'de>, E> {
        Ok(if self.nested { Claim::Other } else { Claim::Fraction(n) })
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Claim<'de>, E> {
        // Only negative numbers come here: never a time, never a name.
        Ok(if self.nested { Claim::Other } else { Claim::Scalar })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Claim<'de>, E> {
        Ok(if self.nested { Claim::Other } else { Claim::Scalar })
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Claim<'de>, A::Error> {
        if self.nested {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Claim::Other);
        }
        let mut items = Vec::new();
        let mut only_text = true;
        while let Some(item) = seq.next_element_seed(Reader { nested: true })? {
            match item {
                Claim::Text(s) if only_text => items.push(s),
                _ => only_text = false,
            }
        }
        Ok(if only_text { Claim::Texts(items) } else { Claim::Other })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claim<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Claim::Other)
    }
}

impl<'de> de::DeserializeSeed<'de> for Reader {
    type Value = Claim<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Claim<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ClaimNames {
        ClaimNames::default()
    }

    const NOW: Expected<'static> = Expected { issuer: "x", audience: "dp", leeway: 0, now: 1 };

    /// `identity` of `payload`, with the issuer and audience it lacks added.
    fn identity(payload: &str, names: &ClaimNames, binding: Option<&str>) -> Result<Identity, AuthError> {
        let mut p = payload.to_owned();
        for (claim, value) in [("iss", "x"), ("aud", "dp")] {
            if p.starts_with('{') && !p.contains(&format!(r#""{claim}""#)) {
                p.insert_str(1, &format!(r#""{claim}":"{value}","#));
            }
        }
        super::identity(&p, names, binding, &NOW)
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
        assert!(err(r#"{"sub":"alice","org_id":"acme","exp":"5"}"#).contains("`exp` is missing or not a number"));
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

    #[test]
    fn registered_claims_are_checked_as_jsonwebtoken_checks_them() {
        let n = names();
        let at = |now: u64, leeway: u64, p: &str| super::identity(p, &n, None, &Expected { issuer: "x", audience: "dp", leeway, now });
        let base = r#""sub":"a","org_id":"o","iss":"x","aud":"dp""#;
        let p = |rest: &str| format!("{{{base},{rest}}}");
        // exp: a number, a fraction rounded; the leeway counts.
        assert_eq!(at(100, 0, &p(r#""exp":100"#)).expect("exp = now").expires_at, 100);
        assert_eq!(at(100, 0, &p(r#""exp":99.5"#)).expect("rounded up").expires_at, 100);
        assert!(matches!(at(100, 0, &p(r#""exp":99"#)), Err(AuthError::Expired)));
        assert!(at(100, 5, &p(r#""exp":95"#)).is_ok());
        for bad in [r#""exp":"200""#, r#""exp":-1"#, r#""exp":1e30"#, r#""exp":null"#, r#""exp":[200]"#, r#""exp":true"#, r#""x":1"#] {
            assert!(at(100, 0, &p(bad)).expect_err(bad).to_string().contains("`exp`"), "{bad}");
        }
        // nbf: optional, a number when present, in the future refused beyond the leeway.
        assert!(at(100, 0, &p(r#""exp":200,"nbf":100"#)).is_ok());
        assert!(at(100, 0, &p(r#""exp":200,"nbf":null"#)).is_err());
        assert!(at(100, 0, &p(r#""exp":200,"nbf":101"#)).expect_err("nbf").to_string().contains("not valid yet"));
        assert!(at(100, 1, &p(r#""exp":200,"nbf":101"#)).is_ok());
        assert!(at(100, 0, &p(r#""exp":200,"nbf":"1""#)).expect_err("nbf string").to_string().contains("`nbf`"));
        // iss and aud: a string or a list of strings naming ours.
        let q = |iss: &str, aud: &str| format!(r#"{{"sub":"a","org_id":"o","exp":200,"iss":{iss},"aud":{aud}}}"#);
        assert!(at(100, 0, &q(r#"["y","x"]"#, r#"["dp"]"#)).is_ok());
        for (iss, aud) in
            [(r#""y""#, r#""dp""#), (r#""x""#, r#""dq""#), ("[]", r#""dp""#), (r#""x""#, "[]"), (r#"["x",1]"#, r#""dp""#), ("1", r#""dp""#), (r#""x""#, "null")]
        {
            assert!(at(100, 0, &q(iss, aud)).is_err(), "{iss} {aud}");
        }
        // A doubled registered claim, and anything after the object, are refused.
        assert!(at(100, 0, &p(r#""exp":200,"exp":300"#)).expect_err("twice").to_string().contains("twice"));
        assert!(at(100, 0, &format!("{{{base},\"exp\":200}} x")).is_err());
        assert!(at(100, 0, &format!("{{{base},\"exp\":200}} ")).is_ok());
    }
}
