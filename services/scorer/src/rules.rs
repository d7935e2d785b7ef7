//! The rules model: what a rules file may say, and how it is loaded, validated and compiled.
//!
//! Scoring rules are data that analysts change, not code: they live in a YAML (`.yaml`, `.yml`)
//! or TOML (`.toml`) file whose format is described in the crate docs and in the comments of
//! `rules/default.yaml` (the rules used when no file is configured). A file is checked as a whole
//! before it is used and *every* problem is reported at once, each naming the rule id and the key
//! (``rule `spam`: key `when.any[1].body.matches`: ...``), so one edit fixes them all. This file
//! holds the model and the parsing (syntax, keys, types); [`crate::validate`] checks what each
//! condition says and compiles it, once per load.
//!
//! [`RuleSet::version`] is the first 12 hex digits of the SHA-256 of the rules' canonical form
//! (the parsed file, defaults filled in, as compact JSON): it changes when what the rules *say*
//! changes, not with comments, layout or the file format, and it is written on every scored
//! record so a score can be traced to the rules that made it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::condition::Condition;
use crate::routing::{
    IntentRule, IntentSpec, Router, RoutingSpec, compile_intents, compile_routing, parse_intents,
    parse_routing,
};
use crate::validate::{Checker, DUPLICATE_ID, check_id, compile_condition, rule_label};
use crate::visibility::{VisibilityRule, VisibilitySpec, compile_visibility, parse_visibility};

/// The rules used when no rules file is configured (also the documented example).
pub const DEFAULT_RULES: &str = include_str!("../rules/default.yaml");

/// Authentication results a rule may expect (RFC 8601 result values).
pub const AUTH_RESULTS: &[&str] = &[
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
    "policy",
];

fn default_qualified_at() -> i32 {
    40
}

fn default_nurture_below() -> i32 {
    15
}

/// A rules file, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// A score at or above this is `qualified`.
    #[serde(default = "default_qualified_at")]
    pub qualified_at: i32,
    /// A score below this is `nurture`; in between is `review`.
    #[serde(default = "default_nurture_below")]
    pub nurture_below: i32,
    /// The rules, in the order their hits appear in a breakdown.
    pub rules: Vec<RuleSpec>,
    /// Intent rules, in order: the first that matches names the email's intent
    /// ([`crate::routing`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<IntentSpec>,
    /// Teams, owners and the routes to them ([`crate::routing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSpec>,
    /// Visibility rules, in order: the first that matches sets how much of the email the CRM
    /// gets ([`crate::visibility`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub visibility: Vec<VisibilitySpec>,
}

/// One rule: `points` when the condition `when` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id, `[A-Za-z0-9._-]+`; it names the rule in every breakdown.
    pub id: String,
    /// Added to the score when the rule matches (negative subtracts).
    pub points: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub when: ConditionSpec,
}

/// A condition: exactly one key, naming the field it tests (or a combinator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionSpec {
    Subject(TextSpec),
    Body(TextSpec),
    Header(HeaderSpec),
    SenderDomain(DomainSpec),
    SenderEmail(TextSpec),
    Recipient(TextSpec),
    Attachment(AttachmentSpec),
    Auth(AuthSpec),
    TargetAccount(bool),
    FreeMail(bool),
    KnownContact(bool),
    Links(LinksSpec),
    Language(InSpec),
    Country(InSpec),
    Intent(InSpec),
    Any(Vec<ConditionSpec>),
    All(Vec<ConditionSpec>),
    Not(Box<ConditionSpec>),
}

/// The keys a condition may have, for messages.
const CONDITION_KEYS: &[&str] = &[
    "subject",
    "body",
    "header",
    "sender_domain",
    "sender_email",
    "recipient",
    "attachment",
    "auth",
    "target_account",
    "free_mail",
    "known_contact",
    "links",
    "language",
    "country",
    "intent",
    "any",
    "all",
    "not",
];

/// A test on a derived value: it is one of `in` (`language`, `country`, `intent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InSpec {
    #[serde(rename = "in")]
    pub within: Vec<String>,
}

/// A test on text: `contains_any` (whole words, case-insensitive) or `matches` (a regex).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_any: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// A test on the header(s) called `name`: `contains_any`, `matches` or `present`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_any: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A test on the sender's domain: `in` (the domain or a subdomain of one) or `matches`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// Some attachment has every property given (none given: any attachment).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec {
    /// Extensions (`pdf`) or MIME types (`application/pdf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<bool>,
}

/// Every result given must be what the parser recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<String>,
}

/// A test on the links: `suspicious` or `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspicious: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

/// The syntax of a rules file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// `.yaml`/`.yml` or `.toml`.
    pub fn of_path(path: &Path) -> Result<Self, String> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yaml" | "yml") => Ok(Format::Yaml),
            Some("toml") => Ok(Format::Toml),
            _ => Err(
                "the file name must end in .yaml, .yml or .toml (that is how its syntax is chosen)"
                    .into(),
            ),
        }
    }
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub points: i32,
    pub description: String,
    pub condition: Condition,
}

/// Validated, compiled rules, ready to score with.
#[derive(Debug)]
pub struct RuleSet {
    pub qualified_at: i32,
    pub nurture_below: i32,
    pub rules: Vec<Rule>,
    pub intents: Vec<IntentRule>,
    /// `None`: the file has no `routing`, leads get no team.
    pub router: Option<Router>,
    pub visibility: Vec<VisibilityRule>,
    /// Some condition tests the language, so it is detected for every scored email.
    pub detect_language: bool,
    /// First 12 hex digits of the SHA-256 of the canonical rules.
    pub version: String,
}

impl RuleSet {
    /// The built-in rules ([`DEFAULT_RULES`]).
    pub fn builtin() -> Result<Self, Vec<String>> {
        Self::from_text(DEFAULT_RULES, Format::Yaml)
    }

    /// Parses, validates and compiles rules text.
    pub fn from_text(text: &str, format: Format) -> Result<Self, Vec<String>> {
        let (file, mut problems) = parse(text, format);
        match file {
            Some(file) => match file.compile() {
                Ok(set) if problems.is_empty() => Ok(set),
                Ok(_) => Err(problems),
                Err(more) => {
                    for problem in more {
                        if !problems.contains(&problem) {
                            problems.push(problem);
                        }
                    }
                    Err(problems)
                }
            },
            None => Err(problems),
        }
    }

    /// Reads `path` and loads it ([`RuleSet::from_text`] with the format of its extension).
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let format = Format::of_path(path).map_err(|e| vec![e])?;
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
        Self::from_text(&text, format)
    }
}

impl RulesFile {
    /// Parses rules text, reporting every problem: syntax, unknown and badly typed keys, and
    /// malformed conditions (what the values say is checked by [`RulesFile::validate`]).
    pub fn parse(text: &str, format: Format) -> Result<Self, Vec<String>> {
        match parse(text, format) {
            (Some(file), problems) if problems.is_empty() => Ok(file),
            (_, problems) => Err(problems),
        }
    }

    /// Every problem of a parsed file (empty when it is valid).
    pub fn validate(&self) -> Vec<String> {
        self.compile().err().unwrap_or_default()
    }

    /// The canonical form, the same for the same rules in any syntax or layout.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Validates and compiles the rules, reporting every problem.
    pub fn compile(&self) -> Result<RuleSet, Vec<String>> {
        let mut problems = Vec::new();
        if self.nurture_below > self.qualified_at {
            problems.push(format!(
                "key `nurture_below`: {} is above qualified_at ({}); it must be at most qualified_at",
                self.nurture_below, self.qualified_at
            ));
        }
        if self.rules.is_empty() {
            problems.push("key `rules`: there are no rules".into());
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (index, spec) in self.rules.iter().enumerate() {
            let mut check = Checker {
                label: rule_label(Some(&spec.id), index),
                problems: &mut problems,
            };
            check_id(&spec.id, &mut check);
            if self.rules[..index].iter().any(|r| r.id == spec.id) {
                check.bad("id", DUPLICATE_ID);
            }
            if let Some(condition) = compile_condition(&spec.when, "when", &mut check) {
                rules.push(Rule {
                    id: spec.id.clone(),
                    points: spec.points,
                    description: spec.description.clone(),
                    condition,
                });
            }
        }
        let intents = compile_intents(&self.intents, &mut problems);
        let visibility = compile_visibility(&self.visibility, &mut problems);
        let router = self
            .routing
            .as_ref()
            .and_then(|spec| compile_routing(spec, &mut problems));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RuleSet {
            qualified_at: self.qualified_at,
            nurture_below: self.nurture_below,
            rules,
            intents,
            router,
            visibility,
            detect_language: crate::routing::uses_language(self),
            version: version_of(&self.canonical()),
        })
    }
}

/// First 12 hex digits of the SHA-256 of `canonical`.
fn version_of(canonical: &str) -> String {
    Sha256::digest(canonical.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The keys of a rules file.
const TOP_KEYS: &[&str] = &[
    "qualified_at",
    "nurture_below",
    "rules",
    "intents",
    "routing",
    "visibility",
];

/// Parses `text` into a file, reporting every problem: syntax, unknown or badly typed keys at
/// the top and in each rule (the rule named by its id), malformed conditions. Returns the rules
/// that did parse (for [`RulesFile::compile`] to find their problems too) with the problems.
fn parse(text: &str, format: Format) -> (Option<RulesFile>, Vec<String>) {
    let mut problems = Vec::new();
    let root = match to_json(text, format) {
        Ok(root) => root,
        Err(e) => return (None, vec![e]),
    };
    let mut top = match root {
        Json::Object(map) => map,
        Json::Null => return (None, vec!["the file is empty".into()]),
        _ => {
            return (
                None,
                vec![format!(
                    "the file must be a table ({})",
                    TOP_KEYS.join(", ")
                )],
            );
        }
    };
    for key in top.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "unknown key `{key}` (known: {})",
                TOP_KEYS.join(", ")
            ));
        }
    }
    let mut threshold = |key: &str, default: i32| match top.remove(key) {
        None => default,
        Some(v) => i32::deserialize(v).unwrap_or_else(|e| {
            problems.push(format!("key `{key}`: {e}"));
            default
        }),
    };
    let qualified_at = threshold("qualified_at", default_qualified_at());
    let nurture_below = threshold("nurture_below", default_nurture_below());
    let items = match top.remove("rules") {
        Some(Json::Array(items)) => items,
        Some(_) => {
            problems.push("key `rules`: must be a list of rules".into());
            Vec::new()
        }
        None => {
            problems.push("key `rules` is missing: the list of rules".into());
            Vec::new()
        }
    };
    // Duplicate ids are found here too, over every rule (also those that fail to parse);
    // `compile` finds the same for files built in code, and `from_text` drops the repeats.
    let ids: Vec<Option<&str>> = items
        .iter()
        .map(|item| item.get("id").and_then(Json::as_str))
        .collect();
    for (index, id) in ids.iter().enumerate() {
        if let Some(id) = id
            && ids[..index].contains(&Some(id))
        {
            problems.push(format!(
                "{}: key `id`: {DUPLICATE_ID}",
                rule_label(Some(id), index)
            ));
        }
    }
    let mut rules = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        if let Some(rule) = parse_rule(item, index, &mut problems) {
            rules.push(rule);
        }
    }
    let intents = top
        .remove("intents")
        .map(|v| parse_intents(v, &mut problems))
        .unwrap_or_default();
    let routing = top
        .remove("routing")
        .and_then(|v| parse_routing(v, &mut problems));
    let visibility = top
        .remove("visibility")
        .map(|v| parse_visibility(v, &mut problems))
        .unwrap_or_default();
    let file = RulesFile {
        qualified_at,
        nurture_below,
        rules,
        intents,
        routing,
        visibility,
    };
    (Some(file), problems)
}

fn to_json(text: &str, format: Format) -> Result<Json, String> {
    match format {
        Format::Yaml => {
            let value: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
            serde_json::to_value(value).map_err(|e| format!("unsupported YAML: {e}"))
        }
        Format::Toml => {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                format!(
                    "not valid TOML: {}",
                    e.to_string().trim().replace('\n', " ")
                )
            })?;
            serde_json::to_value(table).map_err(|e| format!("unsupported TOML: {e}"))
        }
    }
}

/// One rule of the `rules` list; each of its keys is checked on its own, so a rule with several
/// mistakes reports them all.
fn parse_rule(item: Json, index: usize, problems: &mut Vec<String>) -> Option<RuleSpec> {
    let Json::Object(mut map) = item else {
        problems.push(format!(
            "rules[{index}]: must be a table with id, points, description and when"
        ));
        return None;
    };
    let id = map.get("id").and_then(Json::as_str).map(str::to_string);
    let mut check = Checker {
        label: rule_label(id.as_deref(), index),
        problems,
    };
    for key in map.keys() {
        if !["id", "points", "description", "when"].contains(&key.as_str()) {
            check.bad(key, "unknown key (known: id, points, description, when)");
        }
    }
    let id = take(&mut map, "id", "the rule's unique id", &mut check).and_then(|v| match v {
        Json::String(s) => Some(s),
        other => {
            check.bad("id", format!("must be a string, not {other}"));
            None
        }
    });
    let points = take(&mut map, "points", "the points the rule adds", &mut check)
        .and_then(|v| i32::deserialize(v).map_err(|e| check.bad("points", e)).ok());
    let description = match map.remove("description") {
        None => Some(String::new()),
        Some(Json::String(s)) => Some(s),
        Some(other) => {
            check.bad("description", format!("must be a string, not {other}"));
            None
        }
    };
    let when = take(&mut map, "when", "the rule's condition", &mut check)
        .and_then(|v| parse_condition(v, "when", &mut check));
    if let Some(when) = &when
        && (id.is_none() || points.is_none() || description.is_none())
    {
        // The rule is incomplete, so `compile` will not see it: check its condition now, so
        // its problems are reported with the others.
        let _ = compile_condition(when, "when", &mut check);
    }
    Some(RuleSpec {
        id: id?,
        points: points?,
        description: description?,
        when: when?,
    })
}

/// Removes and returns `key` of a rule, reporting it when missing.
pub(crate) fn take(
    map: &mut serde_json::Map<String, Json>,
    key: &str,
    what: &str,
    check: &mut Checker<'_>,
) -> Option<Json> {
    let value = map.remove(key);
    if value.is_none() {
        check.bad(key, format!("is missing: {what}"));
    }
    value
}

/// Parses one condition: a table with exactly one known key. Combinators are parsed item by
/// item and each leaf on its own, so every malformed condition in a tree is reported.
pub(crate) fn parse_condition(
    value: Json,
    key: &str,
    check: &mut Checker<'_>,
) -> Option<ConditionSpec> {
    let Json::Object(map) = value else {
        check.bad(
            key,
            format!(
                "a condition is a table with one key ({})",
                CONDITION_KEYS.join(", ")
            ),
        );
        return None;
    };
    if map.len() != 1 {
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        check.bad(
            key,
            format!(
                "a condition has exactly one key ({}), found {}: {}; combine conditions with any or all",
                CONDITION_KEYS.join(", "),
                keys.len(),
                keys.join(", ")
            ),
        );
        return None;
    }
    let (name, inner) = map.into_iter().next()?;
    let path = format!("{key}.{name}");
    match (name.as_str(), inner) {
        ("any" | "all", Json::Array(items)) => {
            let parsed: Vec<Option<ConditionSpec>> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| parse_condition(item, &format!("{path}[{i}]"), check))
                .collect();
            if parsed.iter().any(Option::is_none) {
                // The tree will not be compiled as a whole: check the items that did parse now,
                // so their problems are reported with the others.
                for (i, item) in parsed.iter().enumerate() {
                    if let Some(item) = item {
                        let _ = compile_condition(item, &format!("{path}[{i}]"), check);
                    }
                }
                return None;
            }
            let parsed: Vec<ConditionSpec> = parsed.into_iter().flatten().collect();
            Some(if name == "any" {
                ConditionSpec::Any(parsed)
            } else {
                ConditionSpec::All(parsed)
            })
        }
        ("any" | "all", _) => {
            check.bad(&path, "must be a list of conditions");
            None
        }
        ("not", inner) => {
            parse_condition(inner, &path, check).map(|c| ConditionSpec::Not(Box::new(c)))
        }
        (other, inner) if CONDITION_KEYS.contains(&other) => {
            let mut single = serde_json::Map::new();
            single.insert(name.clone(), inner);
            serde_path_to_error::deserialize::<_, ConditionSpec>(Json::Object(single))
                .map_err(|e| {
                    let at = e.path().to_string();
                    let at = if at == "." || at.is_empty() {
                        key.to_string()
                    } else {
                        format!("{key}.{at}")
                    };
                    check.bad(&at, e.inner());
                })
                .ok()
        }
        _ => {
            check.bad(
                &path,
                format!("unknown condition (known: {})", CONDITION_KEYS.join(", ")),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        RuleSet::from_text(text, Format::Yaml)
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn the_default_rules_are_valid() {
        let set = RuleSet::builtin().expect("the default rules are valid");
        assert_eq!((set.qualified_at, set.nurture_below), (40, 15));
        let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "subject-intent",
                "sender-authenticated",
                "target-account",
                "document-attachment",
                "spam-signals"
            ]
        );
        assert_eq!(set.version.len(), 12);
        assert!(set.version.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_rule_and_key() {
        let text = r#"
qualified_at: 10
nurture_below: 20
colour: blue
rules:
  - id: ok
    points: 5
    when: {subject: {contains_any: [demo]}}
  - id: bad-regex
    points: 5
    when: {body: {matches: "(unclosed"}}
  - id: ok
    points: lots
    when: {target_account: true}
  - id: two-keys
    points: 1
    when: {subject: {contains_any: [a]}, body: {contains_any: [b]}}
  - id: nested
    points: 1
    colour: red
    when:
      any:
        - subjct: {contains_any: [a]}
        - header: {name: "X-Bad:Name", present: true}
        - auth: {spf: pas}
        - attachment: {types: [pdf], min_bytes: 10, max_bytes: 5}
        - links: {}
  - points: 3
    when: {recipient: {contains_any: [demo], matches: "^demo@"}}
"#;
        let all = problems(text);
        let expect = [
            "unknown key `colour`",
            "key `nurture_below`: 20 is above qualified_at (10)",
            "rule `bad-regex`: key `when.body.matches`: invalid regex \"(unclosed\"",
            "rule `ok`: key `points`: invalid type: string \"lots\"",
            "rule `two-keys`: key `when`: a condition has exactly one key",
            "rule `nested`: key `colour`: unknown key",
            "rule `nested`: key `when.any[0].subjct`: unknown condition",
            "rules[5]: key `id`: is missing",
            "rules[5]: key `when.recipient`: give contains_any or matches, not both",
            "rule `ok`: key `id`: is used by more than one rule",
            // The items of a tree that did parse are checked even when a sibling did not.
            "rule `nested`: key `when.any[1].header.name`: must be a header field name",
            "rule `nested`: key `when.any[2].auth.spf`: \"pas\" is not a result",
            "rule `nested`: key `when.any[3].attachment.min_bytes`: 10 is above max_bytes (5)",
            "rule `nested`: key `when.any[4].links`: needs suspicious",
        ];
        for e in expect {
            assert!(
                all.iter().any(|p| p.contains(e)),
                "missing {e:?} in:\n{}",
                all.join("\n")
            );
        }
    }

    #[test]
    fn syntax_errors_and_empty_files_are_problems() {
        assert!(problems("rules: [")[0].starts_with("not valid YAML"));
        assert_eq!(problems(""), ["the file is empty"]);
        assert_eq!(problems("rules: []"), ["key `rules`: there are no rules"]);
        let toml = RuleSet::from_text("rules = [", Format::Toml)
            .err()
            .unwrap_or_default();
        assert!(toml[0].starts_with("not valid TOML"), "{toml:?}");
        assert!(Format::of_path(Path::new("rules.json")).is_err());
        assert_eq!(Format::of_path(Path::new("r.YML")), Ok(Format::Yaml));
    }

    #[test]
    fn yaml_and_toml_load_the_same_rules() {
        let yaml = r#"
# comments and layout do not change the version
qualified_at: 30
rules:
  - id: intent
    points: 20
    description: Asks for a demo.
    when:
      subject: {contains_any: [demo, pricing]}
  - id: spam
    points: -30
    when:
      any:
        - body: {matches: "(?i)act now"}
        - links: {suspicious: true}
  - id: ours
    points: 5
    when:
      all:
        - sender_domain: {in: [acme.io]}
        - not: {header: {name: List-Id, present: true}}
"#;
        let toml = r#"
qualified_at = 30

[[rules]]
id = "intent"
points = 20
description = "Asks for a demo."
when = { subject = { contains_any = ["demo", "pricing"] } }

[[rules]]
id = "spam"
points = -30
[[rules.when.any]]
body = { matches = "(?i)act now" }
[[rules.when.any]]
links = { suspicious = true }

[[rules]]
id = "ours"
points = 5
when = { all = [ { sender_domain = { in = ["acme.io"] } }, { not = { header = { name = "List-Id", present = true } } } ] }
"#;
        let a = RulesFile::parse(yaml, Format::Yaml).expect("yaml parses");
        let b = RulesFile::parse(toml, Format::Toml).expect("toml parses");
        assert_eq!(a, b);
        assert!(a.validate().is_empty());
        let (a, b) = (
            RuleSet::from_text(yaml, Format::Yaml).expect("valid"),
            RuleSet::from_text(toml, Format::Toml).expect("valid"),
        );
        assert_eq!(a.version, b.version);
        assert_eq!(a.nurture_below, 15, "defaults filled in");
        // The same through files, whose extension picks the syntax.
        let dir =
            std::env::temp_dir().join(format!("mailstream-scorer-fmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (y, t) = (dir.join("rules.yml"), dir.join("rules.toml"));
        std::fs::write(&y, yaml).expect("write");
        std::fs::write(&t, toml).expect("write");
        let from_files = (
            RuleSet::load(&y).expect("yaml file"),
            RuleSet::load(&t).expect("toml file"),
        );
        assert_eq!(from_files.0.version, a.version);
        assert_eq!(from_files.1.version, a.version);
        let _ = std::fs::remove_dir_all(&dir);
        let changed = yaml.replace("points: 20", "points: 25");
        let c = RuleSet::from_text(&changed, Format::Yaml).expect("valid");
        assert_ne!(a.version, c.version, "a weight change is a new version");
    }
}
