//! How much of an email the CRM gets: the rules file's optional `visibility` list.
//!
//! ```yaml
//! visibility:              # in order; the first that matches sets the level, else `full`
//!   - id: counsel
//!     level: metadata      # metadata | subject | full
//!     when: {sender_domain: {in: [lawfirm.example]}}
//! ```
//!
//! | level | the CRM gets |
//! |---|---|
//! | `full` (no rule matched) | everything: subject, text, attachments |
//! | `subject` | the subject, not the text or the attachments |
//! | `metadata` | neither subject, text nor attachments: who, when, to whom, the score |
//!
//! The level is the scored record's `visibility`; the CRM sink and the notifier honour it
//! (the stream topics keep the whole email for the pipeline; their retention and `mailstream
//! erase` bound that copy). Every email gets a level, excluded ones too.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::condition::{Candidate, Condition};
use crate::routing::{item_label, parse_list};
use crate::rules::ConditionSpec;
use crate::validate::{Checker, DUPLICATE_ID, check_id, compile_condition};

/// The level of an email no visibility rule matched.
pub const FULL: &str = "full";
/// Every level, from most to least shown.
pub const LEVELS: [&str; 3] = [FULL, "subject", "metadata"];

/// One visibility rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisibilitySpec {
    pub id: String,
    pub level: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub when: ConditionSpec,
}

/// A compiled visibility rule.
#[derive(Debug)]
pub struct VisibilityRule {
    pub id: String,
    pub level: String,
    pub condition: Condition,
}

/// The level of the first rule in `rules` that holds for `candidate`, else [`FULL`].
pub fn visibility_of(rules: &[VisibilityRule], candidate: &Candidate<'_>) -> String {
    rules
        .iter()
        .find(|rule| rule.condition.test(candidate).is_some())
        .map_or_else(|| FULL.to_string(), |rule| rule.level.clone())
}

/// Parses the file's `visibility` list; every problem is reported.
pub(crate) fn parse_visibility(value: Json, problems: &mut Vec<String>) -> Vec<VisibilitySpec> {
    parse_list(value, "visibility", "level", problems)
        .into_iter()
        .map(|item| VisibilitySpec {
            id: item.id,
            level: item.target,
            description: item.description,
            when: item.when,
        })
        .collect()
}

/// Validates and compiles the visibility rules.
pub(crate) fn compile_visibility(
    specs: &[VisibilitySpec],
    problems: &mut Vec<String>,
) -> Vec<VisibilityRule> {
    let mut rules = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let mut check = Checker {
            label: item_label("visibility", Some(&spec.id), index),
            problems,
        };
        check_id(&spec.id, &mut check);
        if specs[..index].iter().any(|s| s.id == spec.id) {
            check.bad("id", DUPLICATE_ID);
        }
        if !LEVELS.contains(&spec.level.as_str()) {
            check.bad(
                "level",
                format!("`{}` is not one of {}", spec.level, LEVELS.join(", ")),
            );
        }
        if let Some(condition) = compile_condition(&spec.when, "when", &mut check) {
            rules.push(VisibilityRule {
                id: spec.id.clone(),
                level: spec.level.clone(),
                condition,
            });
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::records::{AutoReply, ResolvedEmail};

    use crate::rules::{Format, RuleSet};
    use crate::score::scored_record;

    const RULES: &str = r#"
rules:
  - id: asks-price
    points: 30
    when: {subject: {contains_any: [price]}}
visibility:
  - id: counsel
    level: metadata
    when: {sender_domain: {in: [lawfirm.example]}}
  - id: hr-mail
    level: subject
    when: {subject: {contains_any: [salary]}}
"#;

    fn email(id: &str, sender: &str, subject: &str) -> ResolvedEmail {
        crate::routing::tests::email(id, sender, subject, "The details.")
    }

    #[test]
    fn the_first_matching_rule_sets_the_level_else_full_excluded_mail_included() {
        let rules = RuleSet::from_text(RULES, Format::Yaml).expect("valid rules");
        let level = |e: ResolvedEmail| scored_record(e, &rules).visibility;
        assert_eq!(
            level(email("m1", "ann@lawfirm.example", "price and salary")),
            "metadata"
        );
        assert_eq!(
            level(email("m2", "kim@acme.example", "salary review")),
            "subject"
        );
        assert_eq!(level(email("m3", "kim@acme.example", "price")), "full");
        let mut out_of_office = email("m4", "bo@lawfirm.example", "Away");
        out_of_office.email.auto_reply = Some(AutoReply::default());
        let scored = scored_record(out_of_office, &rules);
        assert_eq!(
            (scored.status.as_str(), scored.visibility.as_str()),
            ("excluded", "metadata")
        );
        // The rules' version covers the visibility rules.
        let plain = RuleSet::from_text(
            RULES.split("visibility:").next().unwrap_or_default(),
            Format::Yaml,
        )
        .expect("valid rules");
        assert_ne!(plain.version, rules.version);
    }

    #[test]
    fn an_unknown_level_is_refused_naming_the_rule_and_key() {
        let text = RULES.replace("level: subject", "level: secret");
        let problems = RuleSet::from_text(&text, Format::Yaml).expect_err("refused");
        assert_eq!(
            problems,
            ["visibility `hr-mail`: key `level`: `secret` is not one of full, subject, metadata"]
        );
    }
}
