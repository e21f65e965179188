//! [`Jid`]: who a message goes to.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wq_core::ValidationError;

/// A WhatsApp address: a user (`5511999999999@s.whatsapp.net`), a group
/// (`...@g.us`), a LID (`...@lid`), a newsletter or the status broadcast.
///
/// [`Jid::parse`] also takes a bare phone number in any common notation
/// (`+55 (11) 99999-9999`) and makes it a user JID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Jid(Arc<str>);

const USER_SERVERS: [&str; 2] = ["s.whatsapp.net", "c.us"];
const OTHER_SERVERS: [&str; 4] = ["g.us", "lid", "newsletter", "broadcast"];

impl Jid {
    /// Parses a JID or a phone number.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.trim();
        let bad = |why: &str| ValidationError::new("to", format!("`{input}` {why}"));
        match s.split_once('@') {
            None => {
                let digits = phone_digits(s).map_err(|why| bad(&why))?;
                Ok(Self(format!("{digits}@s.whatsapp.net").into()))
            }
            Some((user, server)) => {
                let user_only = user.split_once(':').map_or(user, |(u, _device)| u);
                if USER_SERVERS.contains(&server) {
                    phone_digits(user_only).map_err(|why| bad(&why))?;
                } else if OTHER_SERVERS.contains(&server) {
                    let ok = !user_only.is_empty()
                        && user_only.len() <= 64
                        && user_only
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == '-' || c.is_ascii_alphabetic());
                    if !ok {
                        return Err(bad("has an invalid user part"));
                    }
                } else {
                    return Err(bad(
                        "has an unknown server (expected s.whatsapp.net, c.us, g.us, lid, newsletter or broadcast)",
                    ));
                }
                Ok(Self(format!("{user}@{server}").into()))
            }
        }
    }

    /// The JID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@` (the phone number for users), without a device suffix.
    pub fn user(&self) -> &str {
        let user = self.0.split_once('@').map_or(&*self.0, |(u, _)| u);
        user.split_once(':').map_or(user, |(u, _)| u)
    }

    /// The part after `@`.
    pub fn server(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, s)| s)
    }

    /// Whether this is a group chat.
    pub fn is_group(&self) -> bool {
        self.server() == "g.us"
    }
}

/// Normalizes a phone number to E.164 digits (8 to 15, no leading zero).
pub(crate) fn phone_digits(s: &str) -> Result<String, String> {
    let mut digits = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return Err(format!("is not a phone number (unexpected `{c}`)")),
        }
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(format!(
            "is not a phone number ({} digits; E.164 allows 8 to 15)",
            digits.len()
        ));
    }
    if digits.starts_with('0') {
        return Err("is not a phone number in international form (leading 0)".into());
    }
    Ok(digits)
}

impl TryFrom<String> for Jid {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Jid::parse(&s)
    }
}

impl From<Jid> for String {
    fn from(j: Jid) -> String {
        j.0.to_string()
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_become_user_jids() {
        let j = Jid::parse("+55 (11) 99999-8888").unwrap();
        assert_eq!(j.as_str(), "5511999998888@s.whatsapp.net");
        assert_eq!(j.user(), "5511999998888");
        assert!(!j.is_group());
        assert_eq!(
            Jid::parse("5511999998888:12@s.whatsapp.net")
                .unwrap()
                .user(),
            "5511999998888"
        );
        assert!(Jid::parse("120363025246125486@g.us").unwrap().is_group());
    }

    #[test]
    fn bad_numbers_and_servers_name_the_field() {
        for bad in [
            "",
            "123",
            "0011999998888",
            "55119999x8888",
            "5511999998888@evil.com",
            "1234567890123456",
        ] {
            let e = Jid::parse(bad).unwrap_err();
            assert_eq!(e.field, "to", "{bad}");
        }
    }
}
