//! The items of a list, each resolved field after field without async-graphql's per-field
//! machinery.
//!
//! For every object, async-graphql boxes one future per selected field (each with its own copy
//! of the context), then inserts each answer into a map that grows as it goes. A page of 50
//! clients with their emails is some 900 such fields, and `perf` put that bookkeeping above
//! the fields' own work. [`Serial`] answers the same fields with the same generated resolvers,
//! in the same order and with the same handling of errors (a failing field is reported and
//! left out), but awaits each resolver in place and sizes the answer once. The schema does not
//! change: a `Serial<T>` is `T` to every client.

use std::borrow::Cow;

use async_graphql::indexmap::map::Entry;
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::resolve_container_serial;
use async_graphql::{
    ContainerType, ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult,
    Value,
};

/// `T`, resolved field after field (see the module).
#[derive(Debug, Clone)]
pub struct Serial<T>(pub T);

impl<T: ContainerType> OutputType for Serial<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn qualified_type_name() -> String {
        T::qualified_type_name()
    }

    fn introspection_type_name(&self) -> Cow<'static, str> {
        self.0.introspection_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        // Custom directives wrap each field's resolver: async-graphql's own path does that.
        // So would extensions, which this path does not call: the schema registers none
        // (`build_schema`, which says so).
        if !ctx.schema_env.custom_directives.is_empty() {
            return resolve_container_serial(ctx, &self.0).await;
        }
        let mut fields = Vec::with_capacity(ctx.item.node.items.len());
        collect(ctx, &ctx.item.node, &self.0, &mut fields)?;
        let mut answer = IndexMap::with_capacity(fields.len());
        for field in fields {
            let key = field.node.response_key().node.clone();
            if field.node.name.node == "__typename" {
                let name = self.0.introspection_type_name().into_owned();
                insert(&mut answer, key, Value::String(name));
                continue;
            }
            match self.0.resolve_field(&ctx.with_field(field)).await {
                Ok(value) => insert(&mut answer, key, value.unwrap_or_default()),
                Err(error) => ctx.add_error(error),
            }
        }
        Ok(match answer.is_empty() {
            true => Value::Null,
            false => Value::Object(answer),
        })
    }
}

/// The fields of `set` that apply to `root`, in order, fragments spread in place (a fragment
/// applies when it names no type, or `root`'s type, or an interface `root` implements).
fn collect<'a, T: ContainerType + ?Sized>(
    ctx: &ContextSelectionSet<'a>,
    set: &'a SelectionSet,
    root: &T,
    out: &mut Vec<&'a Positioned<Field>>,
) -> ServerResult<()> {
    for selection in &set.items {
        let (condition, inner) = match &selection.node {
            Selection::Field(field) => {
                out.push(field);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let Some(fragment) = ctx.query_env.fragments.get(name) else {
                    return Err(ServerError::new(
                        format!(r#"Unknown fragment "{name}"."#),
                        Some(spread.pos),
                    ));
                };
                (
                    Some(&fragment.node.type_condition),
                    &fragment.node.selection_set,
                )
            }
            Selection::InlineFragment(fragment) => (
                fragment.node.type_condition.as_ref(),
                &fragment.node.selection_set,
            ),
        };
        let applies = condition.is_none_or(|condition| {
            let on = condition.node.on.node.as_str();
            let name = root.introspection_type_name();
            name == on
                || T::type_name() == on
                || ctx
                    .schema_env
                    .registry
                    .implements
                    .get(&*name)
                    .is_some_and(|interfaces| interfaces.contains(on))
        });
        if applies {
            collect(ctx, &inner.node, root, out)?;
        }
    }
    Ok(())
}

/// An answer under `key`, merged into one already there (a field asked twice, e.g. once
/// directly and once through a fragment, answers once with both selections), as async-graphql
/// merges them; the key is hashed once (SipHash: a tenth of a page's instructions went to
/// hashing).
fn insert(target: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    let previous = match target.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            return;
        }
        Entry::Occupied(slot) => slot.into_mut(),
    };
    match (previous, value) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                insert(into, key, value);
            }
        }
        (Value::List(into), Value::List(from)) => {
            for (slot, value) in into.iter_mut().zip(from) {
                if let (Value::Object(into), Value::Object(from)) = (slot, value) {
                    for (key, value) in from {
                        insert(into, key, value);
                    }
                }
            }
        }
        _ => {}
    }
}
