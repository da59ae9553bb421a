//! Who writes the re-engagement emails: an OpenAI-compatible LLM client or an offline
//! template, behind one trait.
//!
//! Either way the writer returns plain-text fields only; [`render`] turns them into the text
//! and HTML bodies with our own template, escaping everything, so nothing the model or a user
//! typed becomes markup.
//!
//! # Layout
//! - [`template`]: the offline, deterministic writer.
//! - [`openai`]: the chat-completions client (OpenRouter by default).
//! - [`rate_limit`]: the LLM's requests-per-minute limit.
//! - [`ConfiguredWriter`]: the one chosen at start-up.

pub mod openai;
pub mod rate_limit;
pub mod template;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::client::{EmailContent, Generator, TokenUsage};
use serde::{Deserialize, Serialize};

/// What the writer knows of the client: the seed's brief (name, order history summary,
/// preferred categories, engagement score, days since last order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Brief {
    /// The client's name.
    pub name: String,
    /// Orders so far.
    pub order_count: i32,
    /// Mean order value, as a decimal string.
    pub average_order_value: String,
    /// Last order, if any.
    pub last_order_date: Option<DateTime<Utc>>,
    /// Days since the last order, if any.
    pub days_since_last_order: Option<i64>,
    /// Preferred categories.
    pub preferred_categories: Vec<String>,
    /// The engagement score (0..=100, lower = more at risk).
    pub engagement_score: i32,
}

/// The fields a writer produces, all plain text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Draft {
    /// Subject: one line, at most 120 characters.
    pub subject: String,
    /// Preview text after the subject.
    pub preheader: String,
    /// Greeting line ("Hi Ada,").
    pub greeting: String,
    /// Body paragraphs.
    pub paragraphs: Vec<String>,
    /// The call to action's label.
    pub call_to_action: String,
}

impl Draft {
    /// Checks the draft: a subject is one line of at most 120 characters, no field is empty,
    /// between one and six paragraphs of reasonable length.
    ///
    /// # Errors
    /// The first rule broken, in words.
    pub fn validate(&self) -> Result<(), String> {
        let subject = self.subject.trim();
        if subject.is_empty() || subject.contains(['\n', '\r']) || subject.chars().count() > 120 {
            return Err("the subject must be one non-empty line of at most 120 characters".into());
        }
        for (name, value) in [
            ("preheader", &self.preheader),
            ("greeting", &self.greeting),
            ("callToAction", &self.call_to_action),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{name} is empty"));
            }
            if value.chars().count() > 300 {
                return Err(format!("{name} is longer than 300 characters"));
            }
        }
        if self.paragraphs.is_empty() || self.paragraphs.len() > 6 {
            return Err("the body must have one to six paragraphs".into());
        }
        if self
            .paragraphs
            .iter()
            .any(|p| p.trim().is_empty() || p.chars().count() > 1200)
        {
            return Err("each paragraph must be non-empty and at most 1200 characters".into());
        }
        Ok(())
    }
}

/// A written email and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The draft.
    pub draft: Draft,
    /// Who wrote it.
    pub generator: Generator,
    /// Provider usage, when reported.
    pub usage: Option<TokenUsage>,
}

/// Why writing failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    /// What happened (never contains a secret).
    pub message: String,
    /// Worth trying again later (timeouts, 408, 429, 5xx, malformed replies).
    pub retryable: bool,
    /// The provider asked us to wait this long.
    pub retry_after: Option<Duration>,
}

impl WriteError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure retrying will not fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
}

/// Writes re-engagement emails.
pub trait EmailWriter: Send + Sync + 'static {
    /// What it is, for health reports and the `generator` field (`llm:<model>`,
    /// `template:v1`).
    fn label(&self) -> String;

    /// Writes an email for `brief`.
    fn write(&self, brief: &Brief) -> impl Future<Output = Result<Written, WriteError>> + Send;
}

/// Escapes text for HTML element content and attribute values. Beyond the five markup
/// characters, `=`, `:` and backticks become character references too: they display the
/// same, and no scan of the source can mistake typed text for an `on...=` attribute or a
/// `javascript:` URL.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '=' => out.push_str("&#61;"),
            ':' => out.push_str("&#58;"),
            '`' => out.push_str("&#96;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL of our own configuration inside an `href`: only the characters that would end the
/// attribute or start markup are replaced (a configured URL keeps its `:` and `=`).
fn escape_attribute_url(url: &str) -> String {
    url.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The shop's link when none is configured (`SHOP_URL`).
pub const DEFAULT_SHOP_URL: &str = "https://shop.example.com/welcome-back";

/// What our template adds around every email: who signs it, where its call to action points
/// (configured; never from the model), the sender's postal address and the unsubscribe link.
#[derive(Debug, Clone, PartialEq)]
pub struct Letterhead {
    /// Signs the email (`BRAND_NAME`).
    pub brand: String,
    /// The call to action's link (`SHOP_URL`).
    pub shop_url: String,
    /// The sender's postal address, for the footer (`SENDER_POSTAL_ADDRESS`; CAN-SPAM).
    pub postal_address: Option<String>,
}

impl Default for Letterhead {
    fn default() -> Self {
        Self {
            brand: "Our stylists".to_owned(),
            shop_url: DEFAULT_SHOP_URL.to_owned(),
            postal_address: None,
        }
    }
}

/// Renders a written draft into the email's content with our own template, signed with
/// `letterhead`, and with a visible unsubscribe link when the email has one.
pub fn render(
    written: Written,
    letterhead: &Letterhead,
    unsubscribe_url: Option<&str>,
) -> EmailContent {
    let Written {
        draft,
        generator,
        usage,
    } = written;
    let subject = draft.subject.trim().to_owned();
    let mut text = format!("{}\n\n", draft.greeting.trim());
    let mut body = String::new();
    for paragraph in &draft.paragraphs {
        text.push_str(paragraph.trim());
        text.push_str("\n\n");
        body.push_str(&format!(
            "      <p style=\"margin:0 0 16px\">{}</p>\n",
            escape_html(paragraph.trim())
        ));
    }
    let shop = &letterhead.shop_url;
    let brand = letterhead.brand.trim();
    text.push_str(&format!(
        "{}: {shop}\n\n{brand}\n",
        draft.call_to_action.trim()
    ));
    let mut footer = String::new();
    if let Some(address) = letterhead.postal_address.as_deref() {
        text.push_str(&format!("\n{address}\n"));
        footer.push_str(&format!(
            "<p style=\"margin:0 0 8px\">{}</p>",
            escape_html(address)
        ));
    }
    if let Some(url) = unsubscribe_url {
        text.push_str(&format!("\nTo stop these emails, unsubscribe: {url}\n"));
        footer.push_str(&format!(
            "<p style=\"margin:0\"><a href=\"{}\" style=\"color:#666\">Unsubscribe</a> from these emails.</p>",
            escape_attribute_url(url)
        ));
    }
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n</head>\n\
         <body style=\"margin:0;padding:24px;background:#f6f5f2;font-family:Georgia,serif;color:#222\">\n\
         <div style=\"display:none\">{preheader}</div>\n\
         <div style=\"max-width:560px;margin:0 auto;background:#fff;padding:32px;border-radius:8px\">\n\
         \x20     <p style=\"margin:0 0 16px\">{greeting}</p>\n{body}\
         \x20     <p style=\"margin:24px 0 0\"><a href=\"{url}\" style=\"background:#222;color:#fff;padding:12px 20px;border-radius:4px;text-decoration:none\">{cta}</a></p>\n\
         \x20     <p style=\"margin:24px 0 0\">{brand}</p>\n\
         </div>\n\
         <div style=\"max-width:560px;margin:16px auto 0;font-size:12px;color:#666;font-family:Arial,sans-serif\">{footer}</div>\n\
         </body>\n</html>\n",
        title = escape_html(&subject),
        preheader = escape_html(draft.preheader.trim()),
        greeting = escape_html(draft.greeting.trim()),
        url = escape_attribute_url(shop),
        cta = escape_html(draft.call_to_action.trim()),
        brand = escape_html(brand),
    );
    EmailContent {
        subject,
        preheader: draft.preheader.trim().to_owned(),
        text,
        html,
        generator,
        usage,
    }
}

/// The writer chosen at start-up: the LLM when a key is configured, else the template.
#[derive(Debug, Clone)]
pub enum ConfiguredWriter {
    /// The chat-completions client.
    Llm(openai::OpenAiWriter),
    /// The offline template.
    Template(template::TemplateWriter),
}

impl EmailWriter for ConfiguredWriter {
    fn label(&self) -> String {
        match self {
            Self::Llm(w) => w.label(),
            Self::Template(w) => w.label(),
        }
    }

    async fn write(&self, brief: &Brief) -> Result<Written, WriteError> {
        match self {
            Self::Llm(w) => w.write(brief).await,
            Self::Template(w) => w.write(brief).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile() -> Written {
        Written {
            draft: Draft {
                subject: "Hi <script>alert(1)</script>".into(),
                preheader: "\" onload=\"alert(2)".into(),
                greeting: "Hi Ignore previous instructions <script>alert(1)</script>,".into(),
                paragraphs: vec![
                    "<img src=x onerror=alert(3)> <a href=\"javascript:alert(4)\">x</a>".into(),
                ],
                call_to_action: "<b>Shop</b>".into(),
            },
            generator: Generator {
                kind: "template".into(),
                model: "v1".into(),
            },
            usage: None,
        }
    }

    #[test]
    fn nothing_a_model_or_a_user_typed_becomes_markup() {
        let letterhead = Letterhead {
            brand: "Acme <b>Style</b>".into(),
            ..Letterhead::default()
        };
        let content = render(
            hostile(),
            &letterhead,
            Some("https://e.example/unsubscribe/tok"),
        );
        let html = content.html;
        assert!(html.contains("Acme &lt;b&gt;Style&lt;/b&gt;"), "{html}");
        assert!(
            html.contains("href=\"https://e.example/unsubscribe/tok\""),
            "{html}"
        );
        assert!(content
            .text
            .contains("unsubscribe: https://e.example/unsubscribe/tok"));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.to_lowercase().contains(" onerror="), "{html}");
        assert!(!html.to_lowercase().contains(" onload="), "{html}");
        assert!(!html.to_lowercase().contains("javascript:"), "{html}");
        // Every tag in the page is one of the template's own.
        for tag in html
            .split('<')
            .skip(1)
            .map(|t| t.split('>').next().unwrap_or_default())
        {
            let name = tag
                .trim_start_matches('/')
                .split([' ', '>'])
                .next()
                .unwrap_or_default()
                .to_lowercase();
            assert!(
                ["!doctype", "html", "head", "meta", "title", "body", "div", "p", "a"]
                    .contains(&name.as_str()),
                "unexpected tag <{tag}>"
            );
            assert!(
                !tag.to_lowercase().contains(" on"),
                "event handler in <{tag}>"
            );
        }
        assert!(
            html.contains("Ignore previous instructions &lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains(&format!("href=\"{DEFAULT_SHOP_URL}\"")));
    }

    #[test]
    fn drafts_are_validated() {
        let mut d = hostile().draft;
        assert!(d.validate().is_ok());
        d.subject = "two\nlines".into();
        assert!(d.validate().unwrap_err().contains("subject"));
        d.subject = "x".repeat(121);
        assert!(d.validate().is_err());
        d.subject = "ok".into();
        d.paragraphs.clear();
        assert!(d.validate().unwrap_err().contains("paragraph"));
    }
}
