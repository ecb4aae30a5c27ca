use std::fmt;

/// One problem with one field of an input, e.g. `content: not a valid IPv4 address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every way a domain value can be rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The input has one or more invalid fields; all of them are listed.
    #[error("invalid input: {}", list(.0))]
    Invalid(Vec<FieldError>),
    /// A zone file has bad lines; every one is listed with its line number.
    #[error("invalid zone file: {}", list(.0))]
    ZoneFile(Vec<FieldError>),
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ModelError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn errors(&self) -> &[FieldError] {
        match self {
            Self::Invalid(e) | Self::ZoneFile(e) => e,
        }
    }
}
