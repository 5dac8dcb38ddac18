//! The identity rule: how a user or agent id is written, stored and found.
//!
//! One function, [`party_id`], turns every spelling of an id into the one
//! it is stored under, on every route (create, find-or-create, lists,
//! stats, erasure, export, the console, events):
//!
//! - Leading or trailing whitespace and control characters anywhere are
//!   refused (a 400 naming the field), never trimmed: an id is a key.
//! - An id that starts with `+` after NFKC (so `＋1 415…` counts) is a
//!   phone number: it is parsed as an international number and stored as
//!   E.164 (`+14155550101`); one that is not a valid number is a 400
//!   `invalid_phone_number`. Two spellings of one number are one user.
//! - Every other id is opaque and stored NFC-normalised, so `José` typed
//!   with a combining accent and `José` precomposed are one user. Bare
//!   digits (`4155550101`, `(415) 555-0101`) are never a phone number.
//!
//! An SMS conversation's ids must be phone numbers ([`sms_party_id`]): a
//! national number without `+` is a 400 that says so.

use phonenumber::Mode;
use unicode_normalization::UnicodeNormalization;

use crate::{ErrorCode, ValidationError, validate};

/// The stored form of a user or agent id given as `raw`, or a validation
/// error naming `field`.
pub fn party_id(field: &str, raw: &str) -> Result<String, ValidationError> {
    if raw.chars().next().is_some_and(char::is_whitespace) || raw.chars().last().is_some_and(char::is_whitespace) {
        return Err(ValidationError::invalid(
            field,
            format!("{field} must not begin or end with whitespace"),
        ));
    }
    validate::id(field, raw)?;
    if raw.chars().any(is_invisible) {
        return Err(ValidationError::invalid(
            field,
            format!("{field} must not contain invisible formatting characters (such as a zero-width space)"),
        ));
    }
    let compatible: String = raw.nfkc().collect();
    if compatible.starts_with('+') {
        return e164(field, &compatible);
    }
    let id: String = raw.nfc().collect();
    // Composition can change the length; the limits hold for what is stored.
    validate::id(field, &id)?;
    Ok(id)
}

/// The stored form of an SMS conversation's user or agent id: a phone
/// number in international form (starting with `+`), as E.164.
pub fn sms_party_id(field: &str, raw: &str) -> Result<String, ValidationError> {
    let id = party_id(field, raw)?;
    if !id.starts_with('+') {
        return Err(ValidationError::new(
            ErrorCode::InvalidPhoneNumber,
            field,
            format!(
                "an SMS conversation's {field} must be a phone number in international form, \
                 starting with + and the country code (such as +14155550123)"
            ),
        ));
    }
    Ok(id)
}

/// Invisible formatting characters (Unicode's format category in the Basic
/// Multilingual Plane): a soft hyphen, zero-width spaces and joiners,
/// direction marks and overrides, the byte-order mark. An id holding one
/// looks like another id and is not it, so they are refused. The OpenAPI
/// patterns of the ids leave out the same characters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// Whether a stored id is a phone number (E.164).
pub fn is_phone(id: &str) -> bool {
    id.starts_with('+')
}

fn e164(field: &str, international: &str) -> Result<String, ValidationError> {
    let parsed = phonenumber::parse(None, international).map_err(|_| invalid_phone(field))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(invalid_phone(field));
    }
    Ok(parsed.format().mode(Mode::E164).to_string())
}

fn invalid_phone(field: &str) -> ValidationError {
    ValidationError::new(
        ErrorCode::InvalidPhoneNumber,
        field,
        format!("{field} starts with + but is not a valid phone number (expected E.164 such as +14155550123)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_number_is_one_id() {
        for input in [
            "+14155550101",
            "+1 415 555 0101",
            "+1 (415) 555-0101",
            "+1-415-555-0101",
            "+1.415.555.0101",
            "\u{ff0b}14155550101",
            "\u{ff0b}\u{ff11}\u{ff14}\u{ff11}\u{ff15}\u{ff15}\u{ff15}\u{ff15}\u{ff10}\u{ff11}\u{ff10}\u{ff11}",
        ] {
            assert_eq!(
                party_id("userId", input).map_err(|e| format!("{input}: {e}")).unwrap(),
                "+14155550101"
            );
        }
        assert_eq!(party_id("agentId", "+44 20 7946 0958").unwrap(), "+442079460958");
    }

    #[test]
    fn bare_digits_are_opaque_and_kept_as_written() {
        for input in [
            "4155550101",
            "(415) 555-0101",
            "415-555-0101",
            "14155550101",
            "child-42",
        ] {
            assert_eq!(party_id("userId", input).unwrap(), input);
        }
    }

    #[test]
    fn opaque_ids_are_nfc() {
        let nfd = "Jose\u{301}";
        let nfc = "Jos\u{e9}";
        assert_eq!(party_id("userId", nfd).unwrap(), nfc);
        assert_eq!(party_id("userId", nfc).unwrap(), nfc);
        // Compatibility forms are not folded for opaque ids: only the plus.
        assert_eq!(party_id("userId", "\u{ff41}bc").unwrap(), "\u{ff41}bc");
    }

    #[test]
    fn whitespace_at_the_ends_and_controls_are_refused() {
        for input in [
            " +14155550101",
            "+14155550101 ",
            "child\u{3000}",
            "\tchild",
            "a\u{7}b",
            "",
            "  ",
            "child-42\u{200b}",
            "\u{feff}child",
            "chi\u{202e}ld",
            "+1415555\u{200d}0101",
        ] {
            let err = party_id("userId", input).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("userId"), "{input:?}");
            assert_eq!(err.code, ErrorCode::ValidationFailed, "{input:?}");
        }
    }

    #[test]
    fn a_plus_that_is_no_number_is_an_invalid_phone_number() {
        for input in ["+", "+1 555", "+999 1234567", "+hello", "\u{ff0b}12"] {
            let err = party_id("userId", input).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPhoneNumber, "{input}");
            assert_eq!(err.field.as_deref(), Some("userId"));
        }
    }

    #[test]
    fn sms_ids_must_be_international() {
        assert_eq!(sms_party_id("userId", "+1 415 555 0101").unwrap(), "+14155550101");
        for input in ["(415) 555-0101", "4155550101", "hello"] {
            let err = sms_party_id("userId", input).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPhoneNumber, "{input}");
            assert!(err.message.contains("international"), "{}", err.message);
        }
    }

    proptest::proptest! {
        /// No string makes the identity rule panic; each answers an id or
        /// an error naming its field.
        #[test]
        fn never_panics_and_names_its_field(raw in "\\PC{0,40}", digits in "[0-9]{1,25}[smhd]?") {
            for input in [raw.as_str(), digits.as_str()] {
                if let Err(e) = party_id("userId", input) {
                    proptest::prop_assert_eq!(e.field.as_deref(), Some("userId"));
                }
            }
        }


        /// Normalising is idempotent: the stored form of a stored id is
        /// itself, so a user is found under the id the API returned.
        #[test]
        fn the_stored_form_is_a_fixed_point(raw in "\\PC{0,30}") {
            if let Ok(id) = party_id("userId", &raw) {
                proptest::prop_assert_eq!(party_id("userId", &id).unwrap(), id);
            }
        }
    }
}
