//! Parapet's domain types and their validation: zones, DNS records, API tokens, and the
//! BIND zone-file reader and writer.
//!
//! Everything that enters Parapet from outside (an API body, a zone file, a CLI argument) is
//! turned into these typed values here, or rejected with errors naming each bad field or line.
//! No IO happens in this crate.

pub mod certificate;
mod error;
pub mod expr;
pub mod ids;
pub mod name;
pub mod purge;
pub mod record;
pub mod rules;
pub mod settings;
pub mod token;
pub mod transfer;
pub mod txt;
pub mod zone;
pub mod zonefile;

pub use error::{FieldError, ModelError};
pub use record::{DnsRecord, RecordDraft, RecordType};
pub use token::{ApiToken, Grant, Need, Permission, ZoneScope};
pub use zone::{Zone, ZoneStatus};
