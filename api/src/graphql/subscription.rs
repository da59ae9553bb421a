//! Subscriptions: events as they are committed, by any instance.

use std::sync::Arc;

use async_graphql::{Context, Subscription as SubscriptionObject, ID};
use futures::Stream;
use projections::log::StoredEvent;
use tokio::sync::broadcast::error::RecvError;

use super::errors::ApiError;
use super::ids::parse_id;
use super::types::Event;
use super::ApiContext;

/// The subscription root.
pub struct Subscription;

#[SubscriptionObject]
impl Subscription {
    /// Events as they are committed; all users, or one.
    async fn events(
        &self,
        ctx: &Context<'_>,
        user_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let only = user_id
            .as_ref()
            .map(|id| parse_id(id, "userId"))
            .transpose()?;
        let receiver = ctx.data_unchecked::<ApiContext>().live.subscribe();
        Ok(futures::stream::unfold(
            Some(receiver),
            move |state| async move {
                let mut receiver = state?;
                loop {
                    match receiver.recv().await {
                        Ok(event) if only.is_none_or(|id| id == event.user_id) => {
                            let item =
                                Event::from_stored(&event).map_err(async_graphql::Error::from);
                            return Some((item, Some(receiver)));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(missed)) => {
                            let error = ApiError::RateLimited.to_graphql();
                            let error = async_graphql::Error {
                                message: format!(
                                    "this subscriber fell {missed} events behind and was dropped; \
                                 resubscribe and catch up with userHistory"
                                ),
                                ..error
                            };
                            return Some((Err(error), None));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

/// The live feed subscribers read from.
pub type LiveFeed = tokio::sync::broadcast::Sender<Arc<StoredEvent>>;
