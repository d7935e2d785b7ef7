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
//!
//! Bounds: DATA goes into a [`Spool`] (memory up to `spool_threshold_bytes`, then a file), every
//! byte counted against the in-flight budget shared with HTTP. When the budget has no room the
//! rest of DATA is read and thrown away and the final dot is answered `451 4.3.1` (temporary:
//! the session goes on, the client retries later; `421` would close a connection that did
//! nothing wrong). A session waiting `smtp_timeout_secs` for a command, for data or for the
//! client to read its replies is closed (the write timeout is what cuts a client that sends
//! without ever reading).
//!
//! Recipients: `accepted_domains` (catch-all), plus `postmaster` without a domain (RFC 5321
//! 4.5.1). Refused recipients are counted (`ingest_refused_total`) and logged once per session.

use std::net::SocketAddr;
use std::sync::Arc;

use mailstream_runtime::Shutdown;
use mailstream_runtime::records::{Envelope, IngestSource};
use smtp_proto::Error as ProtoError;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod commands;

use super::SmtpContext;
use crate::error::PublishError;
use crate::events;
use crate::publisher::Intake;
use crate::spool::{Spool, SpoolError};

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
    /// The message being received (`None` until DATA's first bytes).
    spool: Option<Spool>,
    /// DATA bytes decoded from the last read, on their way to the spool.
    chunk: Vec<u8>,
    /// Why the rest of DATA is being thrown away.
    refusal: Option<DataRefusal>,
    errors: u32,
    recipients_refused: u32,
}

/// Why a message being received is refused at its final dot.
enum DataRefusal {
    TooLarge,
    OverBudget,
    SpoolFailed(String),
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
            spool: None,
            chunk: Vec::new(),
            refusal: None,
            errors: 0,
            recipients_refused: 0,
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
        self.spool = None;
        self.refusal = None;
    }

    /// Logs the session's summary (once, when the connection is over).
    pub(crate) fn finish(&self) {
        events::session_ended(&self.peer, self.recipients_refused);
    }

    /// Writes the pending replies, within the session timeout.
    async fn send<S: AsyncWrite + Unpin>(&self, stream: &mut S, out: &[u8]) -> std::io::Result<()> {
        let write = async {
            stream.write_all(out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.ctx.timeout, write).await {
            Ok(result) => result,
            Err(_) => {
                let m = self.ctx.publisher.metrics();
                events::connection_cut(m, CHANNEL, "write-timeout", &self.peer);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client did not read its replies",
                ))
            }
        }
    }

    /// Moves the decoded DATA bytes into the spool, or says why the message is refused.
    async fn keep_chunk(&mut self) -> Result<(), DataRefusal> {
        let spooler = &self.ctx.spooler;
        let spool = self.spool.get_or_insert_with(|| spooler.spool());
        let result = if spool.len() + self.chunk.len() > self.ctx.max_message_bytes {
            Err(DataRefusal::TooLarge)
        } else {
            spool.push(&self.chunk).await.map_err(|e| match e {
                SpoolError::OverBudget => DataRefusal::OverBudget,
                SpoolError::Io(e) => DataRefusal::SpoolFailed(e.to_string()),
            })
        };
        self.chunk.clear();
        if result.is_err() {
            // Release the bytes at once; the rest of DATA is thrown away.
            self.spool = None;
        }
        result
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
                self.send(&mut stream, &out).await?;
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
                        let m = self.ctx.publisher.metrics();
                        events::connection_cut(m, CHANNEL, "idle-timeout", &self.peer);
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
                                self.spool = None;
                                self.refusal = None;
                                mode = Mode::Data(DataReceiver::new());
                            }
                            Step::Close => close = true,
                            Step::StartTls => {
                                // Pipelined plain-text bytes after STARTTLS are discarded.
                                self.send(&mut stream, &out).await?;
                                return Ok(Next::StartTls(stream));
                            }
                        }
                    }
                    Mode::Data(receiver) => {
                        let done = receiver.ingest(&mut bytes, &mut self.chunk);
                        let kept = self.keep_chunk().await;
                        if done {
                            self.end_of_data(kept, &mut out).await;
                            mode = Mode::Command(RequestReceiver::default());
                        } else if let Err(refusal) = kept {
                            self.refusal = Some(refusal);
                            mode = Mode::Discard(DummyDataReceiver::new_data(receiver));
                        }
                    }
                    Mode::Discard(receiver) => {
                        if receiver.ingest(&mut bytes) {
                            let refusal = self.refusal.take().unwrap_or(DataRefusal::TooLarge);
                            self.end_of_data(Err(refusal), &mut out).await;
                            mode = Mode::Command(RequestReceiver::default());
                        }
                    }
                }
            }
        }
    }

    /// The final dot: write the email durably, then answer.
    async fn end_of_data(&mut self, kept: Result<(), DataRefusal>, out: &mut Vec<u8>) {
        let spool = self.spool.take();
        let mail_from = self.mail_from.take().flatten();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        let m = self.ctx.publisher.metrics();
        let spooled = match kept {
            Ok(()) => spool
                .unwrap_or_else(|| self.ctx.spooler.spool())
                .into_bytes()
                .await
                .map_err(|e| DataRefusal::SpoolFailed(e.to_string())),
            Err(refusal) => Err(refusal),
        };
        let (raw, _held) = match spooled {
            Ok(spooled) => spooled,
            Err(DataRefusal::TooLarge) => {
                events::refused(m, CHANNEL, "too-large", "message over max_message_bytes");
                return reply(out, 552, [5, 3, 4], "Message size exceeds fixed maximum");
            }
            Err(DataRefusal::OverBudget) => {
                events::refused(m, CHANNEL, "over-budget", "in-flight bytes budget used up");
                return reply(
                    out,
                    451,
                    [4, 3, 1],
                    "Insufficient system resources, try again later",
                );
            }
            Err(DataRefusal::SpoolFailed(e)) => {
                events::write_failed(m, CHANNEL, &format!("spooling the message: {e}"));
                return reply(
                    out,
                    451,
                    [4, 3, 0],
                    "Temporary failure storing the message, try again later",
                );
            }
        };
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
}
