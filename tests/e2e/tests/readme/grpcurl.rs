//! grpcurl's side: the messages it can find by reflection, its JSON
//! (proto3's mapping, as Go's protojson writes it and grpcurl indents it)
//! and its layout of an error.

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

/// Every message grpcurl could find by reflection: the API, health, and
/// the error details a status carries.
pub fn pool() -> DescriptorPool {
    let mut pool = DescriptorPool::new();
    for set in [
        tally_api::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_types::pb::FILE_DESCRIPTOR_SET,
    ] {
        pool.decode_file_descriptor_set(set)
            .expect("a descriptor set");
    }
    pool
}

/// A message in the proto3 JSON mapping, as grpcurl writes it.
pub fn to_json(message: &DynamicMessage) -> Value {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .expect("a message serializes")
}

/// grpc-go's name of a code, which grpcurl prints.
pub fn go_code(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// An `ERROR:` block as JSON (code, message, details), read back from
/// grpcurl's layout: each detail after `N)` and a tab, its JSON going on
/// over the indented lines below.
pub fn parse_error(lines: &[&str]) -> Result<Value, String> {
    let mut rest = lines.iter();
    if rest.next() != Some(&"ERROR:") {
        return Err("an error block starts with ERROR:".into());
    }
    let field = |line: Option<&&str>, name: &str| {
        line.and_then(|l| l.strip_prefix(&format!("  {name}: ")))
            .map(str::to_owned)
            .ok_or_else(|| format!("an error block's {name} line"))
    };
    let code = field(rest.next(), "Code")?;
    let message = field(rest.next(), "Message")?;
    let mut details: Vec<String> = Vec::new();
    if let Some(line) = rest.next() {
        if *line != "  Details:" {
            return Err(format!("after Message, {line:?}"));
        }
        for line in rest {
            let numbered = line
                .trim_start()
                .split_once(")\t")
                .filter(|(n, _)| n.parse::<usize>().is_ok());
            match numbered {
                Some((_, json)) => details.push(json.to_owned()),
                None => details
                    .last_mut()
                    .ok_or("details start with 1)")?
                    .push_str(line.trim_start()),
            }
        }
    }
    let details = details
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).map_err(|e| format!("a detail: {e}: {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({ "code": code, "message": message, "details": details }))
}

/// What a JSON value is in the message it came from: which decides the
/// order of an object's names.
pub enum Shape {
    Message(MessageDescriptor),
    /// A map field, with its values' message if they are messages.
    Map(Option<MessageDescriptor>),
    Other,
}

/// Writes `value` as grpcurl prints it (protojson, re-indented by Go's
/// json.Indent with two spaces): a message's fields in the order the proto
/// declares them, an Any's `@type` first, map keys sorted.
pub fn write_json(
    out: &mut String,
    value: &Value,
    shape: &Shape,
    depth: usize,
    pool: &DescriptorPool,
) {
    let indent = |depth: usize| "  ".repeat(depth);
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            let ordered = ordered(fields, shape, pool);
            out.push_str("{\n");
            for (i, (name, value, shape)) in ordered.iter().enumerate() {
                out.push_str(&format!("{}{}: ", indent(depth + 1), Value::from(*name)));
                write_json(out, value, shape, depth + 1, pool);
                out.push_str(if i + 1 < ordered.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&indent(depth + 1));
                write_json(out, item, shape, depth + 1, pool);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// An object's names in grpcurl's order, each with the shape of its value.
fn ordered<'a>(
    fields: &'a serde_json::Map<String, Value>,
    shape: &Shape,
    pool: &DescriptorPool,
) -> Vec<(&'a str, &'a Value, Shape)> {
    let message = match shape {
        Shape::Message(m) if m.full_name() == "google.protobuf.Any" => fields
            .get("@type")
            .and_then(Value::as_str)
            .and_then(|url| url.rsplit_once('/'))
            .and_then(|(_, name)| pool.get_message_by_name(name)),
        Shape::Message(m) => Some(m.clone()),
        Shape::Map(values) => {
            // serde_json's map keeps its keys sorted.
            return fields
                .iter()
                .map(|(k, v)| {
                    let shape = values.clone().map_or(Shape::Other, Shape::Message);
                    (k.as_str(), v, shape)
                })
                .collect();
        }
        Shape::Other => None,
    };
    let mut order: Vec<(String, Shape)> = vec![("@type".to_owned(), Shape::Other)];
    if let Some(message) = &message {
        for declared in &message.descriptor_proto().field {
            let field = message
                .get_field_by_name(declared.name())
                .expect("a declared field");
            let kind = field.kind();
            let inner = kind.as_message().cloned();
            let shape = if field.is_map() {
                let value = inner.expect("a map entry").map_entry_value_field();
                Shape::Map(value.kind().as_message().cloned())
            } else {
                inner.map_or(Shape::Other, Shape::Message)
            };
            order.push((field.json_name().to_owned(), shape));
        }
    }
    let mut out: Vec<(&str, &Value, Shape)> = Vec::new();
    for (name, shape) in order {
        if let Some((name, value)) = fields.get_key_value(&name) {
            out.push((name.as_str(), value, shape));
        }
    }
    // Anything the descriptor did not name (none expected), last.
    for (name, value) in fields {
        if !out.iter().any(|(n, _, _)| *n == name) {
            out.push((name.as_str(), value, Shape::Other));
        }
    }
    out
}
