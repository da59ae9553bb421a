//! The offline writer: a personal email from the same brief, deterministic, no network. The
//! default when no LLM key is configured, and (configurably) the fallback when the LLM has
//! failed for good.

use domain::client::Generator;

use super::{Brief, Draft, EmailWriter, WriteError, Written};

/// The template writer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateWriter;

/// The template's version, part of `generator` (`template:v1`).
pub const TEMPLATE_VERSION: &str = "v1";

impl TemplateWriter {
    /// Writes the draft (pure: the same brief gives the same email).
    pub fn draft(brief: &Brief) -> Draft {
        let first_name = brief
            .name
            .split_whitespace()
            .next()
            .unwrap_or("there")
            .to_owned();
        let lower: Vec<String> = brief
            .preferred_categories
            .iter()
            .map(|c| c.to_lowercase())
            .collect();
        let categories = match lower.as_slice() {
            [] => "the pieces you like".to_owned(),
            [one] => one.clone(),
            [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        };
        let since = match (brief.order_count, brief.days_since_last_order) {
            (0, _) | (_, None) => {
                "We'd love to help you find your first favourite piece.".to_owned()
            }
            (_, Some(days)) if days >= 60 => {
                format!("It has been about {} months since your last order, and we have been saving ideas for you.", days / 30)
            }
            (n, Some(_)) if n > 1 => format!(
                "Thank you for your {n} orders with us; it has been a while since we caught up."
            ),
            _ => "Thank you for shopping with us; it has been a little while.".to_owned(),
        };
        let preheader = format!("New {categories} picked for you");
        Draft {
            subject: format!("{first_name}, we picked new {categories} for you"),
            preheader: truncate(&preheader, 120),
            greeting: format!("Hi {first_name},"),
            paragraphs: vec![
                since,
                format!("Our stylists have put together fresh {categories} with you in mind, new since your last visit."),
                "Your next box is still picked by a person who remembers what you kept and what you sent back, so it gets better every time. Take a look; if nothing feels right, tell us and we will keep looking.".to_owned(),
            ],
            call_to_action: "See your picks".to_owned(),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl EmailWriter for TemplateWriter {
    fn label(&self) -> String {
        format!("template:{TEMPLATE_VERSION}")
    }

    async fn write(&self, brief: &Brief) -> Result<Written, WriteError> {
        let mut draft = Self::draft(brief);
        // A category list can make the subject long; keep the rule every writer keeps.
        if draft.subject.chars().count() > 120 {
            draft.subject = format!(
                "{}, we picked something new for you",
                brief.name.split_whitespace().next().unwrap_or("Hi")
            );
            draft.subject = truncate(&draft.subject, 120);
        }
        draft.validate().map_err(WriteError::fatal)?;
        Ok(Written {
            draft,
            generator: Generator {
                kind: "template".into(),
                model: TEMPLATE_VERSION.into(),
            },
            usage: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief() -> Brief {
        Brief {
            name: "Ada Lovelace".into(),
            order_count: 3,
            average_order_value: "42.00".into(),
            last_order_date: None,
            days_since_last_order: Some(95),
            preferred_categories: vec!["Denim".into(), "Shoes".into(), "Knitwear".into()],
            engagement_score: 31,
        }
    }

    #[tokio::test]
    async fn the_template_is_personal_and_deterministic() {
        let a = TemplateWriter.write(&brief()).await.unwrap();
        let b = TemplateWriter.write(&brief()).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.draft.greeting, "Hi Ada,");
        assert!(
            a.draft.subject.contains("denim, shoes and knitwear"),
            "{}",
            a.draft.subject
        );
        assert!(a.draft.paragraphs[0].contains("3 months"));
        assert_eq!(a.generator.label(), "template:v1");
    }

    #[tokio::test]
    async fn long_category_lists_keep_the_subject_rule() {
        let mut b = brief();
        b.preferred_categories = (0..20).map(|i| format!("Category number {i}")).collect();
        let w = TemplateWriter.write(&b).await.unwrap();
        assert!(w.draft.subject.chars().count() <= 120);
    }
}
