//! Phone numbers (the ids of SMS conversations), normalized to E.164.

use phonenumber::Mode;

use crate::ValidationError;

/// Parses a phone number and formats it as E.164 (`+14155550123`).
///
/// Numbers with a leading `+` are parsed as international; numbers without
/// one are read in the North American numbering plan (the seeds' SMS agents
/// were US numbers). Anything that is not a valid number is an error naming
/// `field`.
pub fn normalize_e164(field: &str, input: &str) -> Result<String, ValidationError> {
    let trimmed = input.trim();
    let region = if trimmed.starts_with('+') {
        None
    } else {
        Some(phonenumber::country::Id::US)
    };
    let parsed = phonenumber::parse(region, trimmed).map_err(|_| invalid(field))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(invalid(field));
    }
    Ok(parsed.format().mode(Mode::E164).to_string())
}

fn invalid(field: &str) -> ValidationError {
    ValidationError::new(
        crate::ErrorCode::InvalidPhoneNumber,
        field,
        format!("{field} is not a valid phone number (expected E.164 such as +14155550123)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_variants_of_one_number_identically() {
        for input in ["+1 415 555 2671", "(415) 555-2671", "+14155552671", " 415.555.2671 "] {
            assert_eq!(normalize_e164("userId", input).unwrap(), "+14155552671", "{input}");
        }
        assert_eq!(normalize_e164("agentId", "+44 20 7946 0958").unwrap(), "+442079460958");
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        for input in ["hello", "", "+1 555", "12", "+999 1234567"] {
            let err = normalize_e164("userId", input).unwrap_err();
            assert_eq!(err.code, crate::ErrorCode::InvalidPhoneNumber, "{input}");
            assert_eq!(err.field.as_deref(), Some("userId"));
        }
    }
}
