//! What forwards say, per language: data only, compiled once by [`super::block`].
//!
//! The banners and header labels themselves are the reply stripper's
//! ([`crate::reply::locales`]); this file adds what tells a forward from a reply: the subject
//! prefixes mail clients write when forwarding (`Fwd:`, `WG:`, `TR:`, `RV:`, ...), those they
//! write when replying (a reply that quotes a forward is not a forward), and the stems that make
//! a banner a forward banner (`Forwarded message`, `Weitergeleitete Nachricht`, ...) rather than
//! an `Original message` banner, which Outlook writes above replies and forwards alike.
//!
//! Words are lower case (matching ignores case) and plain text (escaped when compiled).

/// Subject prefixes of a forward, before a colon: English, German (`WG`), French (`TR`),
/// Spanish (`RV`, `REENV`), Portuguese (`ENC`), Italian (`I`, `INOLTRA`), Dutch (`DOORST`),
/// Nordic (`VS`, `VB`, `VL`), Polish (`PD`), Czech (`PŘEPOSLAT`), Russian, Turkish (`İLT`),
/// Hungarian, Greek, Romanian, Japanese, Chinese and Korean.
pub const FORWARD_PREFIXES: &[&str] = &[
    "fwd",
    "fw",
    "wg",
    "tr",
    "rv",
    "reenv",
    "enc",
    "i",
    "inoltra",
    "doorst",
    "vs",
    "vb",
    "vl",
    "pd",
    "přeposlat",
    "пересл",
    "пересылка",
    "ilt",
    "i̇lt",
    "továbbítás",
    "προώθηση",
    "πρθ",
    "redirecționat",
    "転送",
    "转发",
    "轉寄",
    "전달",
];

/// Subject prefixes of a reply: an email whose subject starts with one replies, even when its
/// quoted history holds a forward.
pub const REPLY_PREFIXES: &[&str] = &[
    "re", "aw", "sv", "antw", "odp", "ris", "r", "res", "ynt", "отв", "απ", "答复", "回复", "回覆",
    "답장",
];

/// Stems that make a banner a forward banner, in every language of the reply stripper's
/// locales (`Forwarded message`, `Weitergeleitete Nachricht`, `Message transféré`, ...).
pub const FORWARD_STEMS: &[&str] = &[
    "forward",
    "weitergeleitet",
    "transféré",
    "réexpédi",
    "transfere",
    "reenviado",
    "encaminhad",
    "inoltrat",
    "doorgestuurd",
    "vidarebefordra",
    "videresendt",
    "välitetty",
    "przekazan",
    "przekazywan",
    "przesłan",
    "přeposlan",
    "пересла",
    "пересыла",
    "переслан",
    "iletil",
    "továbbított",
    "προωθημέν",
    "redirec",
    "переадрес",
    "転送",
    "转发",
    "轉寄",
    "전달",
];

/// Local parts (without a `+tag`) of robots, which report on mail rather than forward it.
pub const ROBOTS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "bounce",
    "bounces",
    "mailer",
    "mail-daemon",
];

/// Whether `email` is a robot's address ([`ROBOTS`]).
pub fn is_robot(email: &str) -> bool {
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l);
    let base = local.split_once('+').map_or(local, |(b, _)| b);
    ROBOTS.contains(&base.to_ascii_lowercase().as_str())
}
