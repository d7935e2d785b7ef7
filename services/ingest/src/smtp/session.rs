//! One SMTP session (RFC 5321): the command state machine, driven from tokio.
//!
//! Parsing is `smtp-proto`'s (Stalwart Labs): `RequestReceiver` turns bytes into commands with
//! their ESMTP parameters (SIZE, BODY, SMTPUTF8, ...), `DataReceiver` collects DATA and undoes
//! dot-stuffing, `EhloResponse` writes the EHLO reply. This file keeps the session state (HELO
//! name, reverse path, recipients) and decides every reply.
//!
//! PIPELINING: every command in a chunk is answered in order and the replies are flushed
//! together once the chunk is used up; after STARTTLS, bytes the client pipelined in plain text
//! are thrown away (they could be injected). The reply to DATA's final dot is written only
//! after the email is durably in Kafka: 250 when the write was acknowledged, 451 (retry) when it
//! failed, 552 5.3.4 when the message was over `max_message_bytes`.

use std::net::SocketAddr;
use std::sync::Arc;

use mailstream_runtime::Shutdown;
use mailstream_runtime::records::{Envelope, IngestSource};
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use smtp_proto::{
    EXT_8BIT_MIME, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse, Error as ProtoError, MAIL_BODY_BINARYMIME, Request,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::SmtpContext;
use crate::error::PublishError;
use crate::events;
use crate::publisher::Intake;

const CHANNEL: &str = "smtp";
/// Bad commands tolerated before the session is closed.
const MAX_ERRORS: u32 = 20;

/// What the connection does after [`Session::run`] returns.
pub(crate) enum Next<S> {
    Close,
    /// The client asked for STARTTLS and got 220: upgrade this stream and run again.
    StartTls(S),
}

enum Mode {
    Command(RequestReceiver),
    Data(DataReceiver),
    /// DATA over the size limit: read to the final dot, keep nothing.
    Discard(DummyDataReceiver),
}

/// What a command asks of the connection.
enum Step {
    Continue,
    Data,
    StartTls,
    Close,
}

pub(crate) struct Session {
    ctx: Arc<SmtpContext>,
    peer: SocketAddr,
    tls_active: bool,
    helo: Option<String>,
    /// `Some(None)` is the null reverse path `<>`.
    mail_from: Option<Option<String>>,
    rcpt_to: Vec<String>,
    message: Vec<u8>,
    errors: u32,
}

fn reply(out: &mut Vec<u8>, code: u16, esc: [u8; 3], text: &str) {
    let [a, b, c] = esc;
    out.extend_from_slice(format!("{code} {a}.{b}.{c} {text}\r\n").as_bytes());
}

impl Session {
    pub(crate) fn new(ctx: Arc<SmtpContext>, peer: SocketAddr) -> Self {
        Self {
            ctx,
            peer,
            tls_active: false,
            helo: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            message: Vec::new(),
            errors: 0,
        }
    }

    /// After a TLS handshake the session starts over (RFC 3207 4.2): the client says EHLO again.
    pub(crate) fn tls_started(&mut self) {
        self.tls_active = true;
        self.helo = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
        self.message = Vec::new();
    }

    /// Runs the session on `stream` until QUIT, an error, a timeout, shutdown or STARTTLS.
    pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        mut shutdown: Shutdown,
        greet: bool,
    ) -> std::io::Result<Next<S>> {
        let mut out = Vec::with_capacity(512);
        if greet {
            out.extend_from_slice(
                format!("220 {} ESMTP mailstream ready\r\n", self.ctx.hostname).as_bytes(),
            );
        }
        let mut buf = vec![0u8; 16 * 1024];
        let mut mode = Mode::Command(RequestReceiver::default());
        let mut close = false;
        loop {
            if !out.is_empty() {
                stream.write_all(&out).await?;
                stream.flush().await?;
                out.clear();
            }
            if close {
                let _ = stream.shutdown().await;
                return Ok(Next::Close);
            }
            let in_command = matches!(mode, Mode::Command(_));
            let n = tokio::select! {
                read = tokio::time::timeout(self.ctx.timeout, stream.read(&mut buf)) => match read {
                    Ok(n) => n?,
                    Err(_) => {
                        reply(&mut out, 421, [4, 4, 2], "Idle timeout, closing connection");
                        close = true;
                        continue;
                    }
                },
                _ = shutdown.wait(), if in_command => {
                    reply(&mut out, 421, [4, 3, 2], "Service shutting down, try again later");
                    close = true;
                    continue;
                }
            };
            if n == 0 {
                return Ok(Next::Close);
            }
            let mut bytes = buf[..n].iter();
            while !bytes.as_slice().is_empty() && !close {
                match &mut mode {
                    Mode::Command(receiver) => {
                        let before = bytes.as_slice().len();
                        let request = match receiver.ingest(&mut bytes) {
                            Ok(request) => request.into_owned(),
                            Err(ProtoError::NeedsMoreData { .. }) => break,
                            Err(e) => {
                                self.protocol_error(e, &mut out);
                                self.errors += 1;
                                if self.errors > MAX_ERRORS {
                                    reply(&mut out, 421, [4, 7, 0], "Too many errors, closing");
                                    close = true;
                                }
                                if bytes.as_slice().len() == before {
                                    break;
                                }
                                continue;
                            }
                        };
                        match self.command(request, &mut out) {
                            Step::Continue => {}
                            Step::Data => {
                                self.message = Vec::new();
                                mode = Mode::Data(DataReceiver::new());
                            }
                            Step::Close => close = true,
                            Step::StartTls => {
                                // Pipelined plain-text bytes after STARTTLS are discarded.
                                stream.write_all(&out).await?;
                                stream.flush().await?;
                                return Ok(Next::StartTls(stream));
                            }
                        }
                    }
                    Mode::Data(receiver) => {
                        let done = receiver.ingest(&mut bytes, &mut self.message);
                        let over = self.message.len() > self.ctx.max_message_bytes;
                        if done {
                            self.end_of_data(over, &mut out).await;
                            mode = Mode::Command(RequestReceiver::default());
                        } else if over {
                            self.message = Vec::new();
                            mode = Mode::Discard(DummyDataReceiver::new_data(receiver));
                        }
                    }
                    Mode::Discard(receiver) => {
                        if receiver.ingest(&mut bytes) {
                            self.end_of_data(true, &mut out).await;
                            mode = Mode::Command(RequestReceiver::default());
                        }
                    }
                }
            }
        }
    }

    /// The final dot: write the email durably, then answer.
    async fn end_of_data(&mut self, oversize: bool, out: &mut Vec<u8>) {
        let raw = std::mem::take(&mut self.message);
        let mail_from = self.mail_from.take().flatten();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        if oversize {
            events::refused(
                self.ctx.publisher.metrics(),
                CHANNEL,
                "too-large",
                "message over max_message_bytes",
            );
            reply(out, 552, [5, 3, 4], "Message size exceeds fixed maximum");
            return;
        }
        let intake = Intake {
            source: IngestSource::Smtp,
            envelope: Envelope {
                mail_from,
                rcpt_to,
                remote_addr: Some(self.peer.to_string()),
                helo: self.helo.clone(),
            },
            raw,
            origin: None,
            ingest_id: None,
        };
        match self.ctx.publisher.publish(intake, CHANNEL).await {
            Ok(published) => reply(
                out,
                250,
                [2, 0, 0],
                &format!("OK: queued as {}", published.ingest_id),
            ),
            Err(PublishError::Transient(e)) => {
                events::write_failed(self.ctx.publisher.metrics(), CHANNEL, &e);
                reply(
                    out,
                    451,
                    [4, 3, 0],
                    "Temporary failure storing the message, try again later",
                );
            }
            Err(PublishError::Permanent(e)) => {
                events::refused(self.ctx.publisher.metrics(), CHANNEL, "unstorable", &e);
                reply(out, 554, [5, 3, 0], "The message cannot be stored");
            }
        }
    }

    fn refuse(&self, out: &mut Vec<u8>, reason: &str, code: u16, esc: [u8; 3], text: &str) {
        events::refused(self.ctx.publisher.metrics(), CHANNEL, reason, text);
        reply(out, code, esc, text);
    }

    fn command(&mut self, request: Request<String>, out: &mut Vec<u8>) -> Step {
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

    fn rcpt(&mut self, address: String, out: &mut Vec<u8>) {
        if self.mail_from.is_none() {
            return reply(out, 503, [5, 5, 1], "Send MAIL first");
        }
        if self.rcpt_to.len() >= self.ctx.max_recipients {
            return self.refuse(
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
            None => self.refuse(
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
            Some(_) => self.refuse(
                out,
                "domain-not-accepted",
                550,
                [5, 7, 1],
                "Relaying denied: recipient domain not accepted here",
            ),
        }
    }

    fn protocol_error(&self, error: ProtoError, out: &mut Vec<u8>) {
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
