//! A minimal SMTP client for load (RFC 5321 with PIPELINING, RFC 2920): one session sends many
//! messages; MAIL, RCPT and DATA go in one write, the body is dot-stuffed. It tells a refusal
//! from a lost connection, and a loss before the final dot (nothing was accepted) from one
//! after it (the server may have accepted the message: an MTA must send it again, so the
//! receiver can see it twice).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How long one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub enum SmtpError {
    /// The server answered with a non-success code (`4xx` transient, `5xx` permanent).
    Refused { code: u16, text: String },
    /// The connection failed. `after_dot`: the whole message had been sent, so the server may
    /// have accepted it.
    Lost { after_dot: bool, reason: String },
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { code, text } => write!(f, "refused {code} {text}"),
            Self::Lost { after_dot, reason } => {
                write!(
                    f,
                    "connection lost (after the final dot: {after_dot}): {reason}"
                )
            }
        }
    }
}

impl std::error::Error for SmtpError {}

pub struct SmtpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn lost(after_dot: bool, reason: impl std::fmt::Display) -> SmtpError {
    SmtpError::Lost {
        after_dot,
        reason: reason.to_string(),
    }
}

/// `data` with CRLF line ends kept, every line starting with `.` given one more, a CRLF
/// ensured at the end, and the final `.` line.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl SmtpClient {
    /// Connects, reads the greeting and says EHLO.
    pub async fn connect(addr: &str, helo: &str) -> Result<Self, SmtpError> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| lost(false, "connect timed out"))?
            .map_err(|e| lost(false, e))?;
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
        };
        client.expect(220, false).await?;
        client
            .write(format!("EHLO {helo}\r\n").as_bytes(), false)
            .await?;
        client.expect(250, false).await?;
        Ok(client)
    }

    async fn write(&mut self, bytes: &[u8], after_dot: bool) -> Result<(), SmtpError> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| lost(after_dot, e))
    }

    /// Reads one (possibly multi-line) reply: its code and last line's text.
    async fn reply(&mut self, after_dot: bool) -> Result<(u16, String), SmtpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .map_err(|_| lost(after_dot, "reply timed out"))?
                .map_err(|e| lost(after_dot, e))?;
            if n == 0 {
                return Err(lost(after_dot, "closed by the server"));
            }
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| lost(after_dot, format!("not a reply: {}", line.trim_end())))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((
                    code,
                    line.get(4..).unwrap_or_default().trim_end().to_string(),
                ));
            }
        }
    }

    async fn expect(&mut self, want: u16, after_dot: bool) -> Result<(), SmtpError> {
        let (code, text) = self.reply(after_dot).await?;
        if code == want {
            Ok(())
        } else {
            Err(SmtpError::Refused { code, text })
        }
    }

    /// Sends one message; `Ok` once the server answered 250 to the final dot.
    pub async fn send(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> Result<(), SmtpError> {
        let mut commands = format!("MAIL FROM:<{from}>\r\n");
        for r in rcpts {
            commands.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        commands.push_str("DATA\r\n");
        self.write(commands.as_bytes(), false).await?;
        // Every pipelined command is answered, in order, whatever the earlier answers were.
        let mut refusal = None;
        let (code, text) = self.reply(false).await?;
        if code != 250 {
            refusal = Some(SmtpError::Refused { code, text });
        }
        let mut accepted = 0;
        for _ in rcpts {
            let (code, text) = self.reply(false).await?;
            if code == 250 || code == 251 {
                accepted += 1;
            } else if refusal.is_none() {
                refusal = Some(SmtpError::Refused { code, text });
            }
        }
        let (code, text) = self.reply(false).await?;
        if code != 354 {
            return Err(refusal.unwrap_or(SmtpError::Refused { code, text }));
        }
        if accepted == 0 {
            // The server began DATA with no recipient: end it empty (it will refuse).
            self.write(b".\r\n", false).await?;
            let _ = self.reply(false).await;
            return Err(refusal.unwrap_or(SmtpError::Refused {
                code: 554,
                text: "no valid recipients".into(),
            }));
        }
        self.write(&dot_stuff(data), false).await?;
        self.writer.flush().await.map_err(|e| lost(true, e))?;
        self.expect(250, true).await
    }

    /// Ends the session politely (errors ignored).
    pub async fn quit(mut self) {
        if self.write(b"QUIT\r\n", false).await.is_ok() {
            let _ = self.reply(false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_the_data() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c"),
            b"..a\r\nb\r\n...c\r\n.\r\n".to_vec()
        );
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n.\r\n".to_vec());
    }
}
