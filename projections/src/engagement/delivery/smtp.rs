//! Talking to the mail server: `SMTP_URL` as `../shared/API.md` specifies it, the pooled lettre
//! transport, the message as it leaves (Message-ID, both List-Unsubscribe headers, text and
//! HTML, optional DKIM), and the server's verdict sorted into retry, refuse-the-recipient or
//! refuse-the-message.

use std::str::FromStr;
use std::time::Duration;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`smtps://`, port 465 by default).
    Implicit,
    /// STARTTLS, required: a server that does not offer it gets no credentials and no mail
    /// (`smtp://`, port 587 by default).
    StartTls,
    /// Plain text (`smtp://...?tls=off`), for a local relay.
    Off,
}

/// `SMTP_URL`, parsed. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS.
    pub security: Security,
    /// User name, if any.
    pub username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for SmtpUrl {
    /// The URL with its password replaced, for logs and health.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.security == Security::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if self.security == Security::Off {
            write!(f, "?tls=off")?;
        }
        Ok(())
    }
}

fn decode(part: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "its user name or password is not UTF-8 once percent-decoded".to_owned())
}

impl FromStr for SmtpUrl {
    type Err = String;

    /// `smtps://user:pass@host:465` (implicit TLS), `smtp://user:pass@host:587` (STARTTLS
    /// required), `smtp://host:port?tls=off` (plain). User name and password are
    /// percent-decoded. The error never repeats the URL (it may hold a password).
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s.trim()).map_err(|e| {
            format!("SMTP_URL is not a URL ({e}); expected smtp://host:port or smtps://host:port")
        })?;
        let mut security = match url.scheme() {
            "smtps" => Security::Implicit,
            "smtp" => Security::StartTls,
            other => {
                return Err(format!(
                "SMTP_URL has scheme {other:?}; expected smtp (STARTTLS) or smtps (implicit TLS)"
            ))
            }
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "off") if security == Security::StartTls => security = Security::Off,
                ("tls", "starttls" | "required") if security == Security::StartTls => {}
                ("tls", other) => {
                    return Err(format!(
                        "SMTP_URL has tls={other:?}; only smtp://...?tls=off (plain, for a local relay) is accepted"
                    ))
                }
                (other, _) => return Err(format!("SMTP_URL has an unknown parameter {other:?}")),
            }
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("SMTP_URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(match security {
            Security::Implicit => 465,
            Security::StartTls => 587,
            Security::Off => 25,
        });
        let username = Some(decode(url.username())?).filter(|u| !u.is_empty());
        let password = url.password().map(decode).transpose()?;
        if password.is_some() && username.is_none() {
            return Err("SMTP_URL has a password without a user name".into());
        }
        Ok(Self {
            host,
            port,
            security,
            username,
            password,
        })
    }
}

/// Optional DKIM signing (`DKIM_SELECTOR`, `DKIM_DOMAIN`, `DKIM_PRIVATE_KEY_FILE`).
#[derive(Clone)]
pub struct DkimSettings {
    /// The selector published in DNS.
    pub selector: String,
    /// The signing domain.
    pub domain: String,
    /// The PKCS#1 PEM RSA key (never shown).
    pub private_key_pem: String,
}

impl std::fmt::Debug for DkimSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSettings")
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .field("private_key_pem", &"***")
            .finish()
    }
}

/// What the mailer needs.
#[derive(Debug, Clone)]
pub struct MailerSettings {
    /// The server.
    pub url: SmtpUrl,
    /// `EMAIL_FROM`.
    pub from: Mailbox,
    /// A `mailto:` for List-Unsubscribe, if configured.
    pub unsubscribe_mailto: Option<String>,
    /// DKIM, if configured.
    pub dkim: Option<DkimSettings>,
    /// Connections kept open.
    pub pool_size: u32,
    /// How long one SMTP exchange may take.
    pub timeout: Duration,
}

/// One email as it leaves.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The email.
    pub email_id: Uuid,
    /// The client's name.
    pub to_name: String,
    /// The client's address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
    /// The one-click unsubscribe URL.
    pub unsubscribe_url: String,
}

/// Why a message did not leave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again (4xx, timeout, connection refused or lost).
    #[error("{0}")]
    Transient(String),
    /// Refused for good (5xx). `recipient` when it was the recipient that was refused.
    #[error("{reply}")]
    Permanent {
        /// The server's reply.
        reply: String,
        /// The address is undeliverable.
        recipient: bool,
    },
}

/// The pooled SMTP client.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
    unsubscribe_mailto: Option<String>,
    dkim: Option<DkimConfig>,
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `settings` (connects lazily).
    ///
    /// # Errors
    /// The TLS parameters or the DKIM key are unusable (said without the secret).
    pub fn new(settings: &MailerSettings) -> Result<Self, String> {
        let url = &settings.url;
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| format!("TLS for the mail server cannot be set up: {e}"))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host)
            .port(url.port)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(settings.pool_size.max(1)));
        builder = match url.security {
            Security::Implicit => builder.tls(Tls::Wrapper(tls(&url.host)?)),
            Security::StartTls => builder.tls(Tls::Required(tls(&url.host)?)),
            Security::Off => builder.tls(Tls::None),
        };
        if let (Some(user), Some(password)) = (&url.username, &url.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let dkim = match &settings.dkim {
            None => None,
            Some(d) => {
                let key = DkimSigningKey::new(&d.private_key_pem, DkimSigningAlgorithm::Rsa)
                    .map_err(|_| {
                        "DKIM_PRIVATE_KEY_FILE is not a PKCS#1 PEM RSA private key".to_owned()
                    })?;
                let headers = [
                    "From",
                    "To",
                    "Subject",
                    "Date",
                    "Message-ID",
                    "List-Unsubscribe",
                    "List-Unsubscribe-Post",
                ]
                .into_iter()
                .map(HeaderName::new_from_ascii_str)
                .collect();
                Some(DkimConfig::new(
                    d.selector.clone(),
                    d.domain.clone(),
                    key,
                    headers,
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                ))
            }
        };
        let domain = settings.from.email.domain().to_owned();
        Ok(Self {
            transport: builder.build(),
            from: settings.from.clone(),
            domain,
            unsubscribe_mailto: settings.unsubscribe_mailto.clone(),
            dkim,
            server: url.to_string(),
        })
    }

    /// The server, as `SMTP_URL` named it, password hidden.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The Message-ID of `email_id`: the same email always carries the same one.
    pub fn message_id(&self, email_id: Uuid) -> String {
        message_id(email_id, &self.domain)
    }

    /// The message as it leaves.
    ///
    /// # Errors
    /// The recipient's address or a header cannot be put in a message (permanent).
    pub fn build(&self, email: &Outgoing) -> Result<Message, SendError> {
        let refuse = |what: String| SendError::Permanent {
            reply: what,
            recipient: true,
        };
        let to: Mailbox = format!("{} <{}>", quote_name(&email.to_name), email.to)
            .parse()
            .or_else(|_| email.to.parse())
            .map_err(|e| refuse(format!("the address cannot be written to: {e}")))?;
        let mut list_unsubscribe = format!("<{}>", email.unsubscribe_url);
        if let Some(mailto) = &self.unsubscribe_mailto {
            list_unsubscribe.push_str(&format!(", <{mailto}>"));
        }
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(self.message_id(email.email_id)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                list_unsubscribe,
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ))
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| SendError::Permanent {
                reply: format!("the message cannot be built: {e}"),
                recipient: false,
            })?;
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(message)
    }

    /// Hands `email` to the server.
    ///
    /// # Errors
    /// The server refused it, or could not be reached.
    #[tracing::instrument(name = "smtp send", skip_all)]
    pub async fn send(&self, email: &Outgoing) -> Result<(), SendError> {
        let message = self.build(email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

/// `<email id@domain>`.
pub fn message_id(email_id: Uuid, domain: &str) -> String {
    format!("<{email_id}@{domain}>")
}

/// The email a Message-ID names, if it is one of ours (with or without angle brackets).
pub fn email_of_message_id(message_id: &str) -> Option<Uuid> {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let (local, _) = inner.split_once('@')?;
    Uuid::parse_str(local).ok()
}

/// A display name as a quoted string.
fn quote_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { ' ' } else { c })
        .collect();
    format!("\"{}\"", clean.trim())
}

/// Sorts lettre's error: a 5xx is permanent, and it is the recipient's when its enhanced
/// status code says so (RFC 3463: `5.1.x` addressing, `5.2.1` mailbox disabled) or, without
/// one, when the code is one RCPT answers with (550, 551, 553). Everything else (4xx,
/// timeouts, connection and TLS failures) is worth retrying.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let text = error.to_string();
    if !error.is_permanent() {
        return SendError::Transient(text);
    }
    let code = error.status().map(|c| c.to_string()).unwrap_or_default();
    let reply = std::error::Error::source(error)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let enhanced = reply.split_whitespace().next().unwrap_or_default();
    let recipient = if enhanced.starts_with("5.") && enhanced.matches('.').count() == 2 {
        enhanced.starts_with("5.1.") || enhanced == "5.2.1"
    } else {
        matches!(code.as_str(), "550" | "551" | "553")
    };
    SendError::Permanent {
        reply: format!("{code} {reply}").trim().to_owned(),
        recipient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_read_as_specified_and_never_show_the_password() {
        let u: SmtpUrl = "smtps://ann%40x.io:p%3Ass@mail.example.com"
            .parse()
            .unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.security),
            ("mail.example.com", 465, Security::Implicit)
        );
        assert_eq!(u.username.as_deref(), Some("ann@x.io"));
        assert_eq!(u.password.as_deref(), Some("p:ss"));
        assert!(!format!("{u:?} {u}").contains("p:ss"));
        let u: SmtpUrl = "smtp://relay:2525?tls=off".parse().unwrap();
        assert_eq!((u.port, u.security), (2525, Security::Off));
        let u: SmtpUrl = "smtp://user:pw@smtp.example.com".parse().unwrap();
        assert_eq!((u.port, u.security), (587, Security::StartTls));
        for bad in [
            "http://x",
            "smtps://x?tls=off",
            "smtp://x?foo=1",
            "smtp://:pw@x",
            "nope",
        ] {
            let err = bad.parse::<SmtpUrl>().unwrap_err();
            assert!(err.contains("SMTP_URL"), "{bad}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn message_ids_are_stable_and_lead_back_to_their_email() {
        let id = Uuid::from_u128(42);
        let m = message_id(id, "shop.example");
        assert_eq!(m, message_id(id, "shop.example"));
        assert_eq!(email_of_message_id(&m), Some(id));
        assert_eq!(email_of_message_id(m.trim_matches(['<', '>'])), Some(id));
        assert_eq!(email_of_message_id("<abc@x>"), None);
    }
}
