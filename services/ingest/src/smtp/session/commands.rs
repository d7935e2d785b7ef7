//! The SMTP commands of a [`Session`]: what each one does to the session state and which
//! reply it gets. Recipients must be in `accepted_domains` (catch-all per domain), or be
//! `postmaster` (RFC 5321 4.5.1); refused ones are counted and summed up per session.

use smtp_proto::{
    EXT_8BIT_MIME, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse, Error as ProtoError, MAIL_BODY_BINARYMIME, Request,
};

use super::{CHANNEL, Session, Step, reply};
use crate::events;

impl Session {
    pub(super) fn refuse(
        &self,
        out: &mut Vec<u8>,
        reason: &str,
        code: u16,
        esc: [u8; 3],
        text: &str,
    ) {
        events::refused(self.ctx.publisher.metrics(), CHANNEL, reason, text);
        reply(out, code, esc, text);
    }

    pub(super) fn command(&mut self, request: Request<String>, out: &mut Vec<u8>) -> Step {
        match request {
            Request::Ehlo { host } => {
                self.helo = Some(host);
                self.reset();
                let mut ehlo = EhloResponse::new(self.ctx.hostname.as_str());
                ehlo.capabilities = EXT_PIPELINING
                    | EXT_SIZE
                    | EXT_8BIT_MIME
                    | EXT_SMTP_UTF8
                    | EXT_ENHANCED_STATUS_CODES;
                if self.ctx.tls.is_some() && !self.tls_active {
                    ehlo.capabilities |= EXT_START_TLS;
                }
                ehlo.size = self.ctx.max_message_bytes;
                // Writing to a Vec cannot fail.
                let _ = ehlo.write(&mut *out);
            }
            Request::Helo { host } => {
                self.helo = Some(host);
                self.reset();
                out.extend_from_slice(format!("250 {}\r\n", self.ctx.hostname).as_bytes());
            }
            Request::Lhlo { .. } => reply(out, 500, [5, 5, 1], "LHLO is LMTP; this is SMTP"),
            Request::Mail { from } => {
                if self.helo.is_none() {
                    reply(out, 503, [5, 5, 1], "Send EHLO or HELO first");
                } else if self.mail_from.is_some() {
                    reply(out, 503, [5, 5, 1], "Nested MAIL command");
                } else if from.size > self.ctx.max_message_bytes {
                    self.refuse(
                        out,
                        "too-large",
                        552,
                        [5, 3, 4],
                        "Message size exceeds fixed maximum",
                    );
                } else if from.flags & MAIL_BODY_BINARYMIME != 0 {
                    reply(out, 555, [5, 5, 4], "BODY=BINARYMIME is not supported");
                } else {
                    let address = from.address.trim().to_string();
                    self.mail_from = Some((!address.is_empty()).then_some(address));
                    reply(out, 250, [2, 1, 0], "Sender OK");
                }
            }
            Request::Rcpt { to } => self.rcpt(to.address, out),
            Request::Data => {
                if self.mail_from.is_none() {
                    reply(out, 503, [5, 5, 1], "Send MAIL first");
                } else if self.rcpt_to.is_empty() {
                    reply(out, 554, [5, 5, 1], "No valid recipients");
                } else {
                    out.extend_from_slice(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n");
                    return Step::Data;
                }
            }
            Request::Rset => {
                self.reset();
                reply(out, 250, [2, 0, 0], "OK");
            }
            Request::Noop { .. } => reply(out, 250, [2, 0, 0], "OK"),
            Request::Quit => {
                reply(out, 221, [2, 0, 0], "Bye");
                return Step::Close;
            }
            Request::Vrfy { .. } => reply(
                out,
                252,
                [2, 5, 0],
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Request::Help { .. } => reply(out, 214, [2, 0, 0], "See RFC 5321"),
            Request::StartTls => {
                if self.tls_active {
                    reply(out, 503, [5, 5, 1], "TLS already active");
                } else if self.ctx.tls.is_none() {
                    reply(out, 454, [4, 7, 0], "TLS not available");
                } else {
                    reply(out, 220, [2, 0, 0], "Ready to start TLS");
                    return Step::StartTls;
                }
            }
            Request::Bdat { .. } => reply(out, 502, [5, 5, 1], "CHUNKING is not offered"),
            Request::Auth { .. } => reply(out, 502, [5, 5, 1], "AUTH is not offered"),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => reply(out, 502, [5, 5, 1], "Command not implemented"),
        }
        Step::Continue
    }

    /// A refused recipient: counted, answered, logged only in the session summary.
    pub(super) fn refuse_recipient(
        &mut self,
        out: &mut Vec<u8>,
        reason: &str,
        code: u16,
        esc: [u8; 3],
        text: &str,
    ) {
        self.recipients_refused = self.recipients_refused.saturating_add(1);
        events::recipient_refused(self.ctx.publisher.metrics(), CHANNEL, reason);
        reply(out, code, esc, text);
    }

    pub(super) fn rcpt(&mut self, address: String, out: &mut Vec<u8>) {
        if self.mail_from.is_none() {
            return reply(out, 503, [5, 5, 1], "Send MAIL first");
        }
        if self.rcpt_to.len() >= self.ctx.max_recipients {
            return self.refuse_recipient(
                out,
                "too-many-recipients",
                452,
                [4, 5, 3],
                "Too many recipients",
            );
        }
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_lowercase());
        match domain {
            // RFC 5321 4.5.1: `postmaster` without a domain must be accepted. smtp-proto hands
            // `<postmaster>` over as the empty address (as it does `<>`, which is no recipient:
            // it is taken as postmaster too).
            None if address.is_empty() || address.eq_ignore_ascii_case("postmaster") => {
                self.rcpt_to.push("postmaster".into());
                reply(out, 250, [2, 1, 5], "Recipient OK");
            }
            None => self.refuse_recipient(
                out,
                "bad-recipient",
                550,
                [5, 1, 1],
                "Recipient must be user@domain",
            ),
            Some(d) if self.ctx.domains.contains(&d) => {
                self.rcpt_to.push(address);
                reply(out, 250, [2, 1, 5], "Recipient OK");
            }
            Some(_) => self.refuse_recipient(
                out,
                "domain-not-accepted",
                550,
                [5, 7, 1],
                "Relaying denied: recipient domain not accepted here",
            ),
        }
    }

    pub(super) fn protocol_error(&self, error: ProtoError, out: &mut Vec<u8>) {
        match error {
            ProtoError::UnknownCommand => reply(out, 500, [5, 5, 1], "Unrecognized command"),
            ProtoError::InvalidSenderAddress => {
                reply(out, 501, [5, 1, 7], "Bad sender address syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                reply(out, 501, [5, 1, 3], "Bad recipient address syntax")
            }
            ProtoError::SyntaxError { syntax } => {
                reply(out, 501, [5, 5, 4], &format!("Syntax: {syntax}"))
            }
            ProtoError::InvalidParameter { param } => {
                reply(out, 501, [5, 5, 4], &format!("Invalid {param} parameter"))
            }
            ProtoError::UnsupportedParameter { .. } => {
                reply(out, 555, [5, 5, 4], "Unsupported parameter")
            }
            ProtoError::ResponseTooLong => reply(out, 500, [5, 5, 2], "Line too long"),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                reply(out, 500, [5, 5, 2], "Syntax error")
            }
        }
    }
}
