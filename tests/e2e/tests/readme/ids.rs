//! Ids the service mints (`rsv_…`, `grn_…`) differ on every run: the first
//! place the README shows one binds it to the id the server answered
//! there, and every later use, requests included, stands for that id.

use std::collections::BTreeMap;

use serde_json::Value;

/// The README's ids and the server's ids they stand for.
#[derive(Default)]
pub struct Ids {
    actual: BTreeMap<String, String>,
}

/// `rsv_` or `grn_` (any three letters) and a 128-bit hex id.
fn minted(text: &str) -> Option<&str> {
    let (prefix, hex) = text.split_once('_')?;
    let fits = prefix.len() == 3
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    fits.then_some(prefix)
}

impl Ids {
    /// Puts the server's ids in place of the README's in a request.
    pub fn substitute(&self, value: &mut Value) -> Result<(), String> {
        match value {
            Value::String(text) if minted(text).is_some() => {
                *text = self.actual.get(text.as_str()).cloned().ok_or_else(|| {
                    format!("the request names {text}, which no earlier output shows")
                })?;
            }
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.substitute(v))?,
            Value::Object(fields) => fields.values_mut().try_for_each(|v| self.substitute(v))?,
            _ => {}
        }
        Ok(())
    }

    /// Puts the README's ids in place of the server's in an output.
    pub fn to_readme(&self, text: &str) -> String {
        self.actual
            .iter()
            .fold(text.to_owned(), |text, (readme, actual)| {
                text.replace(actual.as_str(), readme)
            })
    }
}

/// Every difference between what the README shows and the answer, by
/// path. A README id not seen before binds to the id at the same place.
pub fn compare(expected: &Value, actual: &Value, path: &str, ids: &mut Ids, out: &mut Vec<String>) {
    let here = if path.is_empty() { "the answer" } else { path };
    match (expected, actual) {
        (Value::String(shown), _) if minted(shown).is_some() => {
            let bound = ids.actual.get(shown).cloned();
            match (bound, actual.as_str()) {
                (Some(id), Some(answered)) if id == answered => {}
                (None, Some(answered)) if minted(answered) == minted(shown) => {
                    ids.actual.insert(shown.clone(), answered.to_owned());
                }
                (bound, _) => out.push(format!(
                    "{here}: the README shows {shown}{}, tallyd answered {actual}",
                    bound.map_or_else(String::new, |id| format!(" (here {id})"))
                )),
            }
        }
        (Value::Object(shown), Value::Object(answered)) => {
            for (name, value) in shown {
                let at = format!("{path}.{name}");
                match answered.get(name) {
                    Some(answer) => compare(value, answer, &at, ids, out),
                    None => out.push(format!(
                        "{at}: the README shows {value}, tallyd's answer has none"
                    )),
                }
            }
            for (name, value) in answered {
                if !shown.contains_key(name) {
                    out.push(format!(
                        "{path}.{name}: tallyd answered {value}, the README shows none"
                    ));
                }
            }
        }
        (Value::Array(shown), Value::Array(answered)) => {
            for (n, (s, a)) in shown.iter().zip(answered).enumerate() {
                compare(s, a, &format!("{path}[{n}]"), ids, out);
            }
            if shown.len() != answered.len() {
                out.push(format!(
                    "{here}: the README shows {} items, tallyd answered {}",
                    shown.len(),
                    answered.len()
                ));
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!(
            "{here}: the README shows {expected}, tallyd answered {actual}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHOWN: &str = "rsv_0000000000000000000000000000000a";
    const ANSWERED: &str = "rsv_0000000000000000000000000000000b";
    const OTHER: &str = "rsv_0000000000000000000000000000000c";

    #[test]
    fn an_id_binds_where_it_is_first_shown_and_stands_for_that_id_after() {
        let mut ids = Ids::default();
        let mut out = Vec::new();
        compare(
            &json!({ "reservationId": SHOWN }),
            &json!({ "reservationId": ANSWERED }),
            "",
            &mut ids,
            &mut out,
        );
        assert_eq!(out, Vec::<String>::new());
        // The same README id later, where the server answered another.
        compare(&json!([SHOWN]), &json!([OTHER]), "", &mut ids, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        // A grant id is not a reservation's.
        let grant = "grn_0000000000000000000000000000000d";
        compare(&json!(grant), &json!(OTHER), "", &mut ids, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");

        let mut request = json!({ "reservation_id": SHOWN, "items": [SHOWN] });
        ids.substitute(&mut request).unwrap();
        assert_eq!(
            request,
            json!({ "reservation_id": ANSWERED, "items": [ANSWERED] })
        );
        assert!(ids.substitute(&mut json!(OTHER)).is_err(), "never shown");
        assert_eq!(
            ids.to_readme(&format!("[{ANSWERED}]")),
            format!("[{SHOWN}]")
        );
    }
}
