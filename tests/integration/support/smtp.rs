//! A plain SMTP server on loopback that records the mail it is handed: the
//! stand-in for a mail relay in tests of e-mail notifications.
//!
//! It is a test server only. It speaks just enough of RFC 5321 for a client
//! that sends plain-text mail without TLS or authentication (`EHLO`/`HELO`,
//! `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`), accepts any sender and
//! size, and offers neither `STARTTLS` nor `AUTH`: point clients at it with
//! TLS off and without a login.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// One mail the sink accepted: the envelope and the message as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mail {
    /// The envelope sender, from `MAIL FROM:<...>`, without the brackets.
    pub from: String,
    /// The envelope recipients, from each accepted `RCPT TO:<...>`, in order.
    pub to: Vec<String>,
    /// The message between `DATA` and the line holding only `.`,
    /// dot-unstuffed, with its CRLF line endings: the header section, an
    /// empty line, the body. A client that ends its message with CRLF and
    /// then sends `CRLF . CRLF`, as lettre does, leaves an empty last line.
    pub data: String,
}

impl Mail {
    /// The first header called `name` (any case), unfolded, with RFC 2047
    /// encoded words decoded and surrounding blanks trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.parts();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", "\t");
        unfolded.split("\r\n").find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field
                .trim()
                .eq_ignore_ascii_case(name)
                .then(|| decode_words(value.trim()))
        })
    }

    /// The decoded `Subject`. Panics, showing the message, if there is none.
    pub fn subject(&self) -> String {
        self.header("Subject")
            .unwrap_or_else(|| panic!("the mail has no Subject header:\n{}", self.data))
    }

    /// The body decoded from its `Content-Transfer-Encoding` (7bit, 8bit,
    /// quoted-printable or base64) as UTF-8, with `\n` line endings. Only a
    /// single-part message is understood: a multipart body comes back with
    /// its MIME boundaries.
    pub fn body(&self) -> String {
        let (_, body) = self.parts();
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => base64(body)
                .unwrap_or_else(|| panic!("the base64 body is not valid base64:\n{body}")),
            "quoted-printable" => quoted_printable(body, false),
            _ => body.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// The header section and the body, split at the first empty line.
    fn parts(&self) -> (&str, &str) {
        self.data.split_once("\r\n\r\n").unwrap_or((&self.data, ""))
    }
}

/// An SMTP server on `127.0.0.1` and a free port that accepts every mail and
/// keeps it for [`SmtpSink::mails`]. Its answers can be turned against the
/// client: [`SmtpSink::set_busy`], [`SmtpSink::refuse_recipients`],
/// [`SmtpSink::stop`].
///
/// Stops, cutting open sessions, when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    port: u16,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    /// Sessions still to be turned away with 421 at the greeting.
    busy: AtomicUsize,
    /// Whether recipients are refused with 550.
    refuse_recipients: AtomicBool,
    /// Connections accepted, busy ones included.
    sessions: AtomicUsize,
    /// The mails accepted, in order; a watch so that tests can wait on it.
    mails: watch::Sender<Vec<Mail>>,
}

impl SmtpSink {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the SMTP sink on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the SMTP sink's address: {e}"))
            .port();
        let shared = Arc::new(Shared {
            busy: AtomicUsize::new(0),
            refuse_recipients: AtomicBool::new(false),
            sessions: AtomicUsize::new(0),
            mails: watch::Sender::new(Vec::new()),
        });
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        SmtpSink {
            port,
            shared,
            server: Mutex::new(Some(server)),
        }
    }

    /// The port it listens on, on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The mails accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.mails.borrow().clone()
    }

    /// Waits until at least `count` mails were accepted and returns them all.
    /// Panics after `timeout`, showing what was accepted.
    pub async fn wait_for_mails(&self, count: usize, timeout: Duration) -> Vec<Mail> {
        let mut mails = self.shared.mails.subscribe();
        match tokio::time::timeout(timeout, mails.wait_for(|m| m.len() >= count)).await {
            Ok(Ok(mails)) => mails.clone(),
            Ok(Err(e)) => panic!("waiting for mails to the SMTP sink: {e}"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {count} mail(s) to the SMTP sink; got {:#?}",
                self.mails()
            ),
        }
    }

    /// Connections accepted so far, the ones turned away included.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Answers the next `sessions` connections with `421` at the greeting
    /// and closes them, as a busy server does; a client may try again later.
    pub fn set_busy(&self, sessions: usize) {
        self.shared.busy.store(sessions, Ordering::SeqCst);
    }

    /// Whether every `RCPT` is answered `550` (no such user), a refusal a
    /// client should not retry.
    pub fn refuse_recipients(&self, refuse: bool) {
        self.shared
            .refuse_recipients
            .store(refuse, Ordering::SeqCst);
    }

    /// Closes the listener and cuts open sessions: from its return on,
    /// connections to [`SmtpSink::port`] are refused. The mails accepted
    /// before stay readable.
    pub async fn stop(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.abort();
            // Returns once the task, and so the listener, has been dropped.
            let _ = server.await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.abort();
        }
    }
}

/// Accepts connections until aborted; sessions live in a [`JoinSet`] owned
/// here, so that aborting this task ends them too.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let shared = Arc::clone(&shared);
                    sessions.spawn(async move {
                        // A session the client breaks off just ends.
                        let _ = session(socket, &shared).await;
                    });
                }
                Err(e) => {
                    eprintln!("SMTP sink on port {}: accepting: {e}", port_of(&listener));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().map(|a| a.port()).unwrap_or_default()
}

/// One SMTP session: any number of mails until `QUIT` or the client leaves.
async fn session(socket: TcpStream, shared: &Shared) -> std::io::Result<()> {
    shared.sessions.fetch_add(1, Ordering::SeqCst);
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let busy = shared
        .busy
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if busy {
        write
            .write_all(b"421 sink busy, try again later\r\n")
            .await?;
        return Ok(());
    }
    write
        .write_all(b"220 sink ESMTP test server ready\r\n")
        .await?;
    let mut mail = Mail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink greets you\r\n250 8BITMIME\r\n",
            "HELO" => b"250 sink\r\n",
            "NOOP" => b"250 ok\r\n",
            "RSET" => {
                mail = Mail::default();
                b"250 ok\r\n"
            }
            "MAIL" => {
                mail = Mail {
                    from: angle_address(&command),
                    ..Mail::default()
                };
                b"250 ok\r\n"
            }
            "RCPT" if shared.refuse_recipients.load(Ordering::SeqCst) => {
                b"550 no such user here\r\n"
            }
            "RCPT" => {
                mail.to.push(angle_address(&command));
                b"250 ok\r\n"
            }
            "DATA" if mail.to.is_empty() => b"503 no valid recipients\r\n",
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // Transparency (RFC 5321 4.5.2): a leading dot was doubled.
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    mail.data.push_str(unstuffed);
                }
                let accepted = std::mem::take(&mut mail);
                shared.mails.send_modify(|mails| mails.push(accepted));
                b"250 queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The address between `<` and `>` in `MAIL FROM:<a@b> ...` or `RCPT TO:<a@b>`.
fn angle_address(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

/// `value` with its RFC 2047 encoded words (`=?charset?B|Q?text?=`) decoded,
/// taking every charset for UTF-8; blanks between two encoded words go.
fn decode_words(value: &str) -> String {
    let mut out = Vec::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some((start, end, decoded)) = next_encoded_word(rest) {
        let gap = &rest[..start];
        if !(after_word && gap.chars().all(char::is_whitespace)) {
            out.extend_from_slice(gap.as_bytes());
        }
        out.extend_from_slice(&decoded);
        rest = &rest[end..];
        after_word = true;
    }
    out.extend_from_slice(rest.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

/// The first well-formed encoded word in `text`: where it starts and ends,
/// and its bytes.
fn next_encoded_word(text: &str) -> Option<(usize, usize, Vec<u8>)> {
    let mut from = 0;
    while let Some(found) = text[from..].find("=?") {
        let start = from + found;
        if let Some((length, decoded)) = encoded_word(&text[start + 2..]) {
            return Some((start, start + 2 + length, decoded));
        }
        from = start + 2;
    }
    None
}

/// `charset?encoding?text?=` at the start of `word`: its length and bytes.
fn encoded_word(word: &str) -> Option<(usize, Vec<u8>)> {
    let (_charset, rest) = word.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let (encoded, after) = rest.split_once("?=")?;
    let length = word.len() - after.len();
    if word[..length].contains(char::is_whitespace) {
        return None;
    }
    let decoded = match encoding {
        "B" | "b" => base64(encoded)?,
        "Q" | "q" => quoted_printable(encoded, true),
        _ => return None,
    };
    Some((length, decoded))
}

/// Decodes base64, ignoring whitespace and stopping at padding.
fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0_u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decodes quoted-printable (RFC 2045 6.7): `=XX` escapes and `=` soft line
/// breaks; in a header's Q encoding (`header`), `_` is a space.
fn quoted_printable(text: &str, header: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' => match hex_byte(&bytes[i + 1..]) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b'_' if header => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// The byte two hex digits at the start of `bytes` spell.
fn hex_byte(bytes: &[u8]) -> Option<u8> {
    let digits = bytes.get(..2)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}
