//! The read side of `mailstream dlq`: `list` (one line per dead letter, with its error headers
//! and whether it was replayed) and `show` (one dead letter's headers and value: decoded through
//! the registry when it is Avro, else a UTF-8 or hex preview). Also the reads `dlq replay`
//! shares: the dead letters of a topic and the replay markers.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use apache_avro::types::Value;
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::topology::TopicKind;
use mailstream_runtime::{AvroRecord, Naming, RuntimeConfig, Topology, headers};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::dlq_cmd::REPLAYS_TOPIC;
use crate::groups::format_millis;
use crate::scan::{Range, Reader, Scanned};

/// Bytes of a value (or of a bytes field) shown before cutting.
const PREVIEW: usize = 16 * 1024;

/// The marker of one re-injected dead letter (schema `dlq-replay.avsc`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqReplay {
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub dlq_timestamp: i64,
    pub error_class: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub replayed_at: i64,
    pub replayed_by: Option<String>,
}

/// Marker key → marker.
pub type Markers = BTreeMap<String, DlqReplay>;

pub fn marker_key(dlq: &str, partition: i32, offset: i64) -> String {
    format!("{dlq}/{partition}/{offset}")
}

/// The marker of `letter`, if it was replayed (same offset and timestamp).
pub fn replayed<'a>(markers: &'a Markers, dlq: &str, letter: &Scanned) -> Option<&'a DlqReplay> {
    markers
        .get(&marker_key(dlq, letter.partition, letter.offset))
        .filter(|m| Some(m.dlq_timestamp) == letter.timestamp_ms)
}

/// What every `dlq` subcommand needs.
pub struct Context {
    pub config: RuntimeConfig,
    pub topology: Topology,
    pub naming: Naming,
    codec: AvroCodec,
}

impl Context {
    pub fn new(config: RuntimeConfig, topology: Topology) -> anyhow::Result<Self> {
        let codec = AvroCodec::decoder(registry_settings(&config)?);
        Ok(Self {
            naming: Naming::new(config.topic_prefix.clone()),
            config,
            topology,
            codec,
        })
    }

    async fn read(
        &self,
        logical: &str,
        from: Option<(i32, i64)>,
    ) -> anyhow::Result<Option<Vec<Scanned>>> {
        let physical = self.naming.topic(logical);
        let reader = Reader::new(&self.config)?;
        let Some(mut ranges) = reader.ranges(&physical)? else {
            return Ok(None);
        };
        let mut limit = None;
        if let Some((partition, offset)) = from {
            ranges = ranges
                .into_iter()
                .filter(|r| r.partition == partition)
                .map(|r| Range {
                    start: offset.max(r.start),
                    ..r
                })
                .collect();
            limit = Some(1);
        }
        reader.read(&physical, &ranges, limit).await.map(Some)
    }

    /// Every dead letter of `dlq` (logical name).
    pub async fn letters(&self, dlq: &str) -> anyhow::Result<Vec<Scanned>> {
        self.read(dlq, None)
            .await?
            .with_context(|| missing(&self.naming.topic(dlq)))
    }

    /// Every replay marker; without the marker topic, none (or an error when `required`).
    pub async fn markers(&self, required: bool) -> anyhow::Result<Markers> {
        let Some(records) = self.read(REPLAYS_TOPIC, None).await? else {
            if required {
                bail!("{}", missing(&self.naming.topic(REPLAYS_TOPIC)));
            }
            return Ok(Markers::new());
        };
        let mut markers = Markers::new();
        for r in records {
            let (Some(key), Some(payload)) = (r.key_string(), r.payload.as_deref()) else {
                continue;
            };
            let value = self
                .codec
                .decode(Some(payload))
                .await
                .map_err(|e| anyhow::anyhow!("decoding a replay marker: {e}"))?;
            let marker = DlqReplay::from_avro(value).map_err(anyhow::Error::msg)?;
            markers.insert(key, marker);
        }
        Ok(markers)
    }
}

fn missing(physical: &str) -> String {
    format!(
        "topic {physical} does not exist: create the topology's topics with `mailstream topology apply` (and check MAILSTREAM_TOPIC_PREFIX)"
    )
}

/// The dead-letter topic a user named (`raw-email.dlq` or `raw-email`), checked against the
/// topology.
pub fn dlq_topic(topology: &Topology, name: &str) -> anyhow::Result<String> {
    let dlq = if name.ends_with(".dlq") {
        name.to_string()
    } else {
        format!("{name}.dlq")
    };
    if topology
        .topic(&dlq)
        .is_some_and(|t| t.kind == TopicKind::Dlq)
    {
        return Ok(dlq);
    }
    bail!(
        "`{name}` is not a dead-letter topic of the topology (they are: {})",
        dlq_topics(topology).join(", ")
    )
}

pub fn dlq_topics(topology: &Topology) -> Vec<String> {
    topology
        .resolved_topics()
        .into_iter()
        .filter(|t| t.kind == TopicKind::Dlq)
        .map(|t| t.name)
        .collect()
}

/// A dead letter's value as JSON: decoded through the registry when it is Avro (bytes fields as
/// text when they are UTF-8), else `None`.
pub async fn decode(codec: &AvroCodec, payload: &[u8]) -> Option<Json> {
    if payload.len() < 5 || payload[0] != 0 {
        return None;
    }
    codec.decode(Some(payload)).await.ok().map(to_json)
}

/// One dead letter's summary, as `list` prints it.
fn summary(dlq: &str, l: &Scanned, markers: &Markers) -> Json {
    json!({
        "topic": dlq,
        "partition": l.partition,
        "offset": l.offset,
        "key": l.key_string(),
        "class": l.header_str(headers::ERROR_CLASS),
        "processor": l.header_str(headers::ERROR_PROCESSOR),
        "time": l.header_str(headers::ERROR_TIME),
        "reason": l.header_str(headers::ERROR_MESSAGE),
        "source": l.header_str(headers::ERROR_SOURCE_TOPIC).map(|t| format!(
            "{t}/{}/{}",
            l.header_str(headers::ERROR_SOURCE_PARTITION).unwrap_or_default(),
            l.header_str(headers::ERROR_SOURCE_OFFSET).unwrap_or_default()
        )),
        "replayed_to": replayed(markers, dlq, l)
            .map(|m| format!("{}/{}/{}", m.source_topic, m.source_partition, m.source_offset)),
    })
}

pub async fn list(ctx: &Context, topics: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let markers = ctx.markers(false).await?;
    let mut all = Vec::new();
    for dlq in topics {
        for l in ctx.letters(dlq).await? {
            all.push(summary(dlq, &l, &markers));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    for v in &all {
        println!("{}", list_line(v));
    }
    println!("{} dead letter(s) in {}", all.len(), topics.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// Characters of a reason `list` shows on its line.
const REASON_CHARS: usize = 160;

/// One dead letter's [`summary`] on one line: position, class, processor, time, the reason
/// (cut at [`REASON_CHARS`]) and where it was replayed to.
fn list_line(v: &Json) -> String {
    let text = |k: &str| v.get(k).and_then(Json::as_str).unwrap_or("-").to_string();
    let mut reason = text("reason").replace(['\n', '\r'], " ");
    if reason.chars().count() > REASON_CHARS {
        reason = format!("{}…", reason.chars().take(REASON_CHARS).collect::<String>());
    }
    let replayed = v
        .get("replayed_to")
        .and_then(Json::as_str)
        .map(|t| format!("  [replayed → {t}]"))
        .unwrap_or_default();
    format!(
        "{} {}:{}  {:<18} {:<10} {}  {reason}{replayed}",
        text("topic"),
        v["partition"],
        v["offset"],
        text("class"),
        text("processor"),
        text("time"),
    )
}

pub async fn show(
    ctx: &Context,
    dlq: &str,
    (partition, offset): (i32, i64),
    json: bool,
) -> anyhow::Result<ExitCode> {
    let found = ctx
        .read(dlq, Some((partition, offset)))
        .await?
        .with_context(|| missing(&ctx.naming.topic(dlq)))?;
    let Some(letter) = found.into_iter().find(|l| l.offset == offset) else {
        bail!(
            "no dead letter at {dlq} {partition}:{offset}: see `mailstream dlq list {dlq}` for the positions"
        );
    };
    let markers = ctx.markers(false).await?;
    let payload = letter.payload.as_deref().unwrap_or_default();
    let decoded = decode(&ctx.codec, payload).await;
    let headers: Map<String, Json> = letter
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_deref().map_or(Json::Null, |v| {
                    Json::String(String::from_utf8_lossy(v).into_owned())
                }),
            )
        })
        .collect();
    let mut out = summary(dlq, &letter, &markers);
    out["timestamp"] = letter.timestamp_ms.map(format_millis).into();
    out["headers"] = Json::Object(headers);
    out["value_bytes"] = payload.len().into();
    out["value"] = decoded.clone().unwrap_or(Json::Null);
    if decoded.is_none() {
        out["value_preview"] = preview(payload);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{dlq} {partition}:{offset}  timestamp {}  key {}",
        out["timestamp"].as_str().unwrap_or("-"),
        letter.key_string().unwrap_or_else(|| "-".into())
    );
    if let Some(to) = out["replayed_to"].as_str() {
        println!("replayed → {to}");
    }
    println!("headers:");
    for (k, v) in &letter.headers {
        let v = v.as_deref().map(String::from_utf8_lossy);
        println!("  {k}: {}", v.as_deref().unwrap_or("(null)"));
    }
    match decoded {
        Some(value) => println!(
            "value: Avro, {} bytes, decoded through the registry:\n{}",
            payload.len(),
            serde_json::to_string_pretty(&value)?
        ),
        None => println!(
            "value: not Avro in the registry's wire format, {} bytes:\n{}",
            payload.len(),
            serde_json::to_string_pretty(&out["value_preview"])?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A preview of bytes: UTF-8 text when they are, else hex; cut at [`PREVIEW`].
fn preview(bytes: &[u8]) -> Json {
    let cut = &bytes[..bytes.len().min(PREVIEW)];
    let more = bytes.len() - cut.len();
    let mut out = match std::str::from_utf8(cut) {
        Ok(text) => json!({"utf8": text}),
        Err(_) => json!({"hex": cut.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
    };
    if more > 0 {
        out["truncated_bytes"] = more.into();
    }
    out
}

/// An Avro value as JSON for people: unions unwrapped, enums as their symbol, bytes as text
/// when UTF-8 (else hex), both cut at [`PREVIEW`].
pub fn to_json(value: Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => b.into(),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => i.into(),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i) => i.into(),
        Value::Float(f) => f.into(),
        Value::Double(f) => f.into(),
        Value::String(s) | Value::Enum(_, s) => s.into(),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            let p = preview(&b);
            match (p.get("utf8"), p.get("truncated_bytes")) {
                (Some(text), None) => text.clone(),
                _ => p,
            }
        }
        Value::Union(_, inner) => to_json(*inner),
        Value::Array(items) => items.into_iter().map(to_json).collect(),
        Value::Map(map) => map
            .into_iter()
            .map(|(k, v)| (k, to_json(v)))
            .collect::<Map<_, _>>()
            .into(),
        Value::Record(fields) => fields
            .into_iter()
            .map(|(k, v)| (k, to_json(v)))
            .collect::<Map<_, _>>()
            .into(),
        other => Json::try_from(other).unwrap_or_else(|e| json!({"undecodable": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(partition: i32, offset: i64, headers: &[(&str, &str)]) -> Scanned {
        Scanned {
            partition,
            offset,
            timestamp_ms: Some(1_000),
            key: Some(b"k-1".to_vec()),
            payload: Some(b"value".to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    fn marker(dlq_timestamp: i64) -> DlqReplay {
        DlqReplay {
            dlq_topic: "raw-email.dlq".into(),
            dlq_partition: 1,
            dlq_offset: 4,
            dlq_timestamp,
            error_class: Some("mime-unparseable".into()),
            source_topic: "raw-email".into(),
            source_partition: 1,
            source_offset: 99,
            replayed_at: 2_000,
            replayed_by: None,
        }
    }

    #[test]
    fn a_letter_is_replayed_only_when_its_marker_matches_offset_and_time() {
        assert_eq!(marker_key("raw-email.dlq", 1, 4), "raw-email.dlq/1/4");
        let markers = Markers::from([(marker_key("raw-email.dlq", 1, 4), marker(1_000))]);
        let same = letter(1, 4, &[]);
        assert!(replayed(&markers, "raw-email.dlq", &same).is_some());
        assert!(replayed(&markers, "parsed.dlq", &same).is_none());
        assert!(replayed(&markers, "raw-email.dlq", &letter(1, 5, &[])).is_none());
        // The topic was recreated: same position, another record.
        let newer = Markers::from([(marker_key("raw-email.dlq", 1, 4), marker(999))]);
        assert!(replayed(&newer, "raw-email.dlq", &same).is_none());
    }

    #[test]
    fn a_dlq_topic_is_named_by_itself_or_its_source() {
        let topology = Topology::embedded().expect("embedded topology");
        assert_eq!(
            dlq_topic(&topology, "raw-email").expect("dlq"),
            "raw-email.dlq"
        );
        assert_eq!(
            dlq_topic(&topology, "parsed.dlq").expect("dlq"),
            "parsed.dlq"
        );
        let all = dlq_topics(&topology);
        assert!(all.contains(&"scored.dlq".to_string()), "{all:?}");
        assert!(all.iter().all(|t| t.ends_with(".dlq")), "{all:?}");
        let wrong = dlq_topic(&topology, "contacts")
            .expect_err("a table")
            .to_string();
        assert!(
            wrong.contains("`contacts` is not a dead-letter topic"),
            "{wrong}"
        );
        assert!(wrong.contains("raw-email.dlq"), "{wrong}");
    }

    #[test]
    fn previews_are_text_or_hex_and_cut() {
        assert_eq!(preview(b"hello"), json!({"utf8": "hello"}));
        assert_eq!(preview(&[0xff, 0x00, 0x10]), json!({"hex": "ff0010"}));
        let long = vec![b'a'; PREVIEW + 10];
        let cut = preview(&long);
        assert_eq!(cut["truncated_bytes"], 10);
        assert_eq!(cut["utf8"].as_str().map(str::len), Some(PREVIEW));
    }

    #[test]
    fn avro_values_read_as_plain_json() {
        let value = Value::Record(vec![
            ("id".into(), Value::String("x".into())),
            ("n".into(), Value::Union(1, Box::new(Value::Long(7)))),
            ("none".into(), Value::Union(0, Box::new(Value::Null))),
            ("kind".into(), Value::Enum(2, "bounce".into())),
            ("text".into(), Value::Bytes(b"plain".to_vec())),
            ("blob".into(), Value::Bytes(vec![0xff, 0x00])),
            (
                "list".into(),
                Value::Array(vec![Value::Int(1), Value::Boolean(true)]),
            ),
            (
                "map".into(),
                Value::Map([("a".to_string(), Value::Double(0.5))].into()),
            ),
        ]);
        assert_eq!(
            to_json(value),
            json!({
                "id": "x",
                "n": 7,
                "none": null,
                "kind": "bounce",
                "text": "plain",
                "blob": {"hex": "ff00"},
                "list": [1, true],
                "map": {"a": 0.5},
            })
        );
    }

    #[test]
    fn a_summary_names_the_source_and_the_replay() {
        let l = letter(
            1,
            4,
            &[
                (headers::ERROR_CLASS, "mime-unparseable"),
                (headers::ERROR_PROCESSOR, "parser"),
                (headers::ERROR_MESSAGE, "no header"),
                (headers::ERROR_SOURCE_TOPIC, "raw-email"),
                (headers::ERROR_SOURCE_PARTITION, "1"),
                (headers::ERROR_SOURCE_OFFSET, "17"),
            ],
        );
        let markers = Markers::from([(marker_key("raw-email.dlq", 1, 4), marker(1_000))]);
        let v = summary("raw-email.dlq", &l, &markers);
        assert_eq!(v["key"], "k-1");
        assert_eq!(v["class"], "mime-unparseable");
        assert_eq!(v["source"], "raw-email/1/17");
        assert_eq!(v["replayed_to"], "raw-email/1/99");
        assert_eq!(v["time"], Json::Null);
        let bare = summary("raw-email.dlq", &letter(0, 0, &[]), &Markers::new());
        assert_eq!(
            (&bare["source"], &bare["replayed_to"]),
            (&Json::Null, &Json::Null)
        );
    }

    #[test]
    fn a_list_line_keeps_the_reason_on_one_line_and_short() {
        let v = json!({
            "topic": "raw-email.dlq", "partition": 1, "offset": 4,
            "class": "mime-unparseable", "processor": "parser",
            "reason": format!("line one\nline two {}", "x".repeat(300)),
            "replayed_to": "raw-email/1/99",
        });
        let line = list_line(&v);
        assert!(
            line.starts_with("raw-email.dlq 1:4  mime-unparseable"),
            "{line}"
        );
        assert!(line.contains("parser"), "{line}");
        assert!(line.contains("line one line two"), "{line}");
        assert!(line.contains("…  [replayed → raw-email/1/99]"), "{line}");
        assert_eq!(
            line.matches('x').count(),
            REASON_CHARS - "line one line two ".len()
        );
        let bare = list_line(&json!({"topic": "t", "partition": 0, "offset": 1}));
        assert_eq!(
            bare.split_whitespace().collect::<Vec<_>>(),
            ["t", "0:1", "-", "-", "-", "-"]
        );
    }
}
