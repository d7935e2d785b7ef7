//! What a lead is about and who works it: the rules file's `intents` and `routing`.
//!
//! ```yaml
//! intents:                 # in order; the first that matches names the intent, else `other`
//!   - id: support-words
//!     intent: support
//!     when: {body: {contains_any: [error, broken, "not working"]}}
//! routing:
//!   teams:
//!     dach: {owners: [anna@example.com, ben@example.com], inactive: [ben@example.com]}
//!     sales: {owners: [carla@example.com]}
//!   routes:                # in order; the first that matches names the team
//!     - id: german
//!       team: dach
//!       when: {any: [{language: {in: [de]}}, {country: {in: [de, at, ch]}}]}
//!   default_team: sales    # when no route matches (none: no team)
//! ```
//!
//! - **Intent** is decided before the scoring rules run, so they (and routes) can test it
//!   (`intent: {in: [support]}`); an intent rule itself cannot.
//! - **Owner**: among the team's active owners (`owners` less `inactive`), the one with the
//!   highest SHA-256 of (sticky key, owner), the sticky key being the account, else the lead
//!   key (rendezvous hashing). An account therefore keeps its owner across emails, instances
//!   and replays, leads spread evenly, and when an owner leaves or is marked inactive only that
//!   owner's accounts move. No counter is kept: the owner is a function of the email and the
//!   rules, like everything the scorer writes.
//! - Excluded emails (auto-replies, reports, list mail) get no routing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::condition::{Candidate, Condition};
use crate::rules::{ConditionSpec, parse_condition, take};
use crate::validate::{Checker, DUPLICATE_ID, check_id, compile_condition};

/// The intent of an email no intent rule matched.
pub const OTHER: &str = "other";
/// The route of an email no route matched, sent to the default team.
pub const DEFAULT_ROUTE: &str = "default";

/// One intent rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub id: String,
    pub intent: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub when: ConditionSpec,
}

/// Teams and routes, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    pub teams: BTreeMap<String, TeamSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_team: Option<String>,
}

/// A team's owners (email addresses or CRM user ids); `inactive` ones get no new accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    pub owners: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inactive: Vec<String>,
}

/// One route, as written: `team` when `when` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub id: String,
    pub team: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub when: ConditionSpec,
}

/// A compiled intent rule.
#[derive(Debug)]
pub struct IntentRule {
    pub id: String,
    pub intent: String,
    pub condition: Condition,
}

/// The email's intent: which rule decided it and on what evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub intent: String,
    pub rule: Option<String>,
    pub evidence: Option<String>,
}

/// Compiled routing.
#[derive(Debug)]
pub struct Router {
    /// Team → its active owners.
    teams: BTreeMap<String, Vec<String>>,
    routes: Vec<Route>,
    default_team: Option<String>,
}

#[derive(Debug)]
struct Route {
    id: String,
    team: String,
    condition: Condition,
}

/// Where an email goes: the team, the route that chose it, the owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub team: Option<String>,
    pub route: Option<String>,
    pub owner: Option<String>,
}

/// The intent of the first rule in `rules` that holds for `candidate`, else [`OTHER`].
pub fn intent_of(rules: &[IntentRule], candidate: &Candidate<'_>) -> Intent {
    rules
        .iter()
        .find_map(|rule| {
            rule.condition.test(candidate).map(|evidence| Intent {
                intent: rule.intent.clone(),
                rule: Some(rule.id.clone()),
                evidence: Some(evidence),
            })
        })
        .unwrap_or_else(|| Intent {
            intent: OTHER.into(),
            rule: None,
            evidence: None,
        })
}

impl Router {
    /// The team of the first route that holds (else the default team) and its owner for
    /// `sticky_key` (the account, else the lead key).
    pub fn assign(&self, candidate: &Candidate<'_>, sticky_key: &str) -> Assignment {
        let chosen = self
            .routes
            .iter()
            .find(|route| route.condition.test(candidate).is_some())
            .map(|route| (route.team.clone(), route.id.clone()))
            .or_else(|| {
                self.default_team
                    .clone()
                    .map(|team| (team, DEFAULT_ROUTE.to_string()))
            });
        let Some((team, route)) = chosen else {
            return Assignment::default();
        };
        let owner = self
            .teams
            .get(&team)
            .and_then(|owners| owner_for(owners, sticky_key))
            .cloned();
        Assignment {
            team: Some(team),
            route: Some(route),
            owner,
        }
    }
}

/// Rendezvous (highest random weight) hashing: the owner whose SHA-256 of (key, owner) is
/// highest.
pub fn owner_for<'o>(owners: &'o [String], key: &str) -> Option<&'o String> {
    owners.iter().max_by_key(|owner| {
        let digest = Sha256::new()
            .chain_update(key.as_bytes())
            .chain_update([0u8])
            .chain_update(owner.as_bytes())
            .finalize();
        let mut weight = [0u8; 8];
        weight.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(weight), owner.as_str())
    })
}

/// Parses the file's `intents` list; every problem is reported.
pub(crate) fn parse_intents(value: Json, problems: &mut Vec<String>) -> Vec<IntentSpec> {
    parse_list(value, "intents", "intent", problems)
        .into_iter()
        .map(|item| IntentSpec {
            id: item.id,
            intent: item.target,
            description: item.description,
            when: item.when,
        })
        .collect()
}

/// Parses the file's `routing` table; every problem is reported.
pub(crate) fn parse_routing(mut value: Json, problems: &mut Vec<String>) -> Option<RoutingSpec> {
    let Json::Object(map) = &mut value else {
        problems.push("key `routing`: must be a table with teams, routes and default_team".into());
        return None;
    };
    let routes = map
        .remove("routes")
        .map(|v| parse_list(v, "routing.routes", "team", problems))
        .unwrap_or_default();
    let mut rest = serde_path_to_error::deserialize::<_, RoutingRest>(value)
        .map_err(|e| problems.push(format!("key `routing.{}`: {}", e.path(), e.inner())))
        .ok()?;
    Some(RoutingSpec {
        teams: std::mem::take(&mut rest.teams),
        routes: routes
            .into_iter()
            .map(|item| RouteSpec {
                id: item.id,
                team: item.target,
                description: item.description,
                when: item.when,
            })
            .collect(),
        default_team: rest.default_team,
    })
}

/// `routing` without its routes (parsed item by item, for their conditions' messages).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingRest {
    teams: BTreeMap<String, TeamSpec>,
    #[serde(default)]
    default_team: Option<String>,
}

/// One item of `intents`, `routing.routes` or `visibility`: `target` is its intent, team or level.
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) target: String,
    pub(crate) description: String,
    pub(crate) when: ConditionSpec,
}

/// A list of `{id, <target>, description, when}` items (`intents`, `routing.routes`,
/// `visibility`).
pub(crate) fn parse_list(
    value: Json,
    list: &str,
    target: &str,
    problems: &mut Vec<String>,
) -> Vec<Item> {
    let Json::Array(items) = value else {
        problems.push(format!("key `{list}`: must be a list"));
        return Vec::new();
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Json::Object(mut map) = item else {
            problems.push(format!(
                "{list}[{index}]: must be a table with id, {target} and when"
            ));
            continue;
        };
        let id = map.get("id").and_then(Json::as_str).map(str::to_string);
        let mut check = Checker {
            label: item_label(list, id.as_deref(), index),
            problems,
        };
        for key in map.keys() {
            if !["id", target, "description", "when"].contains(&key.as_str()) {
                check.bad(
                    key,
                    format!("unknown key (known: id, {target}, description, when)"),
                );
            }
        }
        let has_description = map.contains_key("description");
        let mut string = |key: &str, what: &str, check: &mut Checker<'_>| {
            take(&mut map, key, what, check).and_then(|v| match v {
                Json::String(s) => Some(s),
                other => {
                    check.bad(key, format!("must be a string, not {other}"));
                    None
                }
            })
        };
        let id = string("id", "the item's unique id", &mut check);
        let value = string(target, &format!("the {target} it names"), &mut check);
        let description = match has_description {
            true => string("description", "", &mut check),
            false => Some(String::new()),
        };
        let when = take(&mut map, "when", "its condition", &mut check)
            .and_then(|v| parse_condition(v, "when", &mut check));
        if let (Some(id), Some(target), Some(description), Some(when)) =
            (id, value, description, when)
        {
            parsed.push(Item {
                id,
                target,
                description,
                when,
            });
        }
    }
    parsed
}

pub(crate) fn item_label(list: &str, id: Option<&str>, index: usize) -> String {
    match id.filter(|id| !id.trim().is_empty()) {
        Some(id) => format!("{list} `{id}`"),
        None => format!("{list}[{index}]"),
    }
}

/// Validates and compiles the intent rules.
pub(crate) fn compile_intents(specs: &[IntentSpec], problems: &mut Vec<String>) -> Vec<IntentRule> {
    let mut rules = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let mut check = Checker {
            label: item_label("intents", Some(&spec.id), index),
            problems,
        };
        check_id(&spec.id, &mut check);
        if specs[..index].iter().any(|s| s.id == spec.id) {
            check.bad("id", DUPLICATE_ID);
        }
        check_slug(&spec.intent, "intent", &mut check);
        if uses_intent(&spec.when) {
            check.bad(
                "when",
                "an intent rule cannot test the intent (it is being decided)",
            );
        }
        if let Some(condition) = compile_condition(&spec.when, "when", &mut check) {
            rules.push(IntentRule {
                id: spec.id.clone(),
                intent: spec.intent.clone(),
                condition,
            });
        }
    }
    rules
}

/// Validates and compiles the routing.
pub(crate) fn compile_routing(spec: &RoutingSpec, problems: &mut Vec<String>) -> Option<Router> {
    let before = problems.len();
    if spec.teams.is_empty() {
        problems.push("key `routing.teams`: there are no teams".into());
    }
    let mut teams = BTreeMap::new();
    for (name, team) in &spec.teams {
        let mut check = Checker {
            label: format!("team `{name}`"),
            problems,
        };
        check_slug(name, "name", &mut check);
        if team.owners.iter().any(|o| o.trim().is_empty()) || team.owners.is_empty() {
            check.bad("owners", "needs at least one owner, none blank");
        }
        for gone in team.inactive.iter().filter(|o| !team.owners.contains(o)) {
            check.bad(
                "inactive",
                format!("`{gone}` is not one of the team's owners"),
            );
        }
        let active: Vec<String> = team
            .owners
            .iter()
            .filter(|o| !team.inactive.contains(o))
            .cloned()
            .collect();
        teams.insert(name.clone(), active);
    }
    let mut routes = Vec::with_capacity(spec.routes.len());
    for (index, route) in spec.routes.iter().enumerate() {
        let mut check = Checker {
            label: item_label("routing.routes", Some(&route.id), index),
            problems,
        };
        check_id(&route.id, &mut check);
        if spec.routes[..index].iter().any(|r| r.id == route.id) {
            check.bad("id", DUPLICATE_ID);
        }
        if !spec.teams.contains_key(&route.team) {
            check.bad(
                "team",
                format!("`{}` is not one of routing.teams", route.team),
            );
        }
        if let Some(condition) = compile_condition(&route.when, "when", &mut check) {
            routes.push(Route {
                id: route.id.clone(),
                team: route.team.clone(),
                condition,
            });
        }
    }
    if let Some(team) = &spec.default_team
        && !spec.teams.contains_key(team)
    {
        problems.push(format!(
            "key `routing.default_team`: `{team}` is not one of routing.teams"
        ));
    }
    (problems.len() == before).then(|| Router {
        teams,
        routes,
        default_team: spec.default_team.clone(),
    })
}

/// Intents and team names: lower-case letters, digits, `-` and `_`.
fn check_slug(value: &str, key: &str, check: &mut Checker<'_>) {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if !ok {
        check.bad(
            key,
            format!("`{value}` must be lower-case letters, digits, '-' or '_'"),
        );
    }
}

fn uses_intent(spec: &ConditionSpec) -> bool {
    uses(spec, &|leaf| matches!(leaf, ConditionSpec::Intent(_)))
}

/// Whether some condition of the file tests the body's language: only then is it detected
/// (about 0.1 ms of CPU per email) and reported in `scored.routing.language`.
pub(crate) fn uses_language(file: &crate::rules::RulesFile) -> bool {
    let language = |leaf: &ConditionSpec| matches!(leaf, ConditionSpec::Language(_));
    file.rules.iter().any(|r| uses(&r.when, &language))
        || file.intents.iter().any(|i| uses(&i.when, &language))
        || file
            .routing
            .iter()
            .flat_map(|r| &r.routes)
            .any(|r| uses(&r.when, &language))
}

/// Whether `leaf` holds for a leaf of the condition tree `spec`.
fn uses(spec: &ConditionSpec, leaf: &dyn Fn(&ConditionSpec) -> bool) -> bool {
    match spec {
        ConditionSpec::Any(items) | ConditionSpec::All(items) => {
            items.iter().any(|item| uses(item, leaf))
        }
        ConditionSpec::Not(inner) => uses(inner, leaf),
        other => leaf(other),
    }
}

#[cfg(test)]
pub(crate) mod tests;
