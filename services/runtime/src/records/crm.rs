//! `CrmResult` (schema `crm-result.avsc`): what the CRM sink wrote for one message, for audit.

use serde::{Deserialize, Serialize};

/// The CRM sink's outcome for one message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CrmResult {
    pub message_id: String,
    /// `postgres`, `rest` or `hubspot`.
    pub backend: String,
    /// `written`, `unchanged`, `skipped` (excluded mail, not written) or `dry-run`.
    pub outcome: String,
    pub contact_id: Option<String>,
    pub contact_created: bool,
    pub account_id: Option<String>,
    pub deal_id: Option<String>,
    pub activity_id: Option<String>,
    pub attachments_written: i32,
    pub attachments_failed: i32,
    pub follow_ups: Vec<String>,
    pub attempts: i32,
    pub written_at: i64,
    /// Why a `skipped` email was not written: `excluded` or `never-log`.
    pub reason: Option<String>,
    /// The helpdesk ticket a low-qualified support lead opened.
    pub ticket_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::roundtrip::through_schema;

    #[test]
    fn round_trips_through_its_schema() {
        let result = CrmResult {
            message_id: "m1".into(),
            backend: "postgres".into(),
            outcome: "written".into(),
            contact_id: Some("c1".into()),
            contact_created: true,
            activity_id: Some("17".into()),
            attachments_written: 1,
            follow_ups: vec!["attachment report.pdf: 503".into()],
            attempts: 2,
            written_at: 9,
            reason: Some("never-log".into()),
            ..CrmResult::default()
        };
        assert_eq!(through_schema("crm-result.avsc", result.clone()), result);
    }
}
