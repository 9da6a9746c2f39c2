//! The `filters` target: containerd's filter syntax, parsed and evaluated.

use crate::filters::{map_field, Adaptor, Filter, FilterError};
use std::collections::HashMap;

/// An item to match filters against: a name and labels.
struct Item {
    name: String,
    labels: HashMap<String, String>,
}

impl Adaptor for Item {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.name.clone()),
            Some("labels") => map_field(&path[1..], &self.labels),
            _ => None,
        }
    }
}

fn item(name: &str, labels: &[(&str, &str)]) -> Item {
    Item {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Filter strings (one per line, up to a line `--`), then `key=value` labels of one more item:
/// a request matches what any of its strings matches, a string's error names the right string,
/// and joining two strings with `,` matches what both match.
pub fn filters(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let strings: Vec<&str> = lines.by_ref().take_while(|l| *l != "--").take(8).collect();
    let mut items = vec![
        item("foo", &[("foo", "true")]),
        item("bar", &[]),
        item(
            "",
            &[("a.b", "c"), ("example.com/x", "a b \"c\""), ("", "empty")],
        ),
    ];
    items.push(Item {
        name: strings.first().copied().unwrap_or_default().to_string(),
        labels: lines
            .take(16)
            .map(|l| l.split_once('=').unwrap_or((l, "")))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    let each: Vec<Result<Filter, FilterError>> =
        strings.iter().map(|s| Filter::parse(&[s])).collect();
    match Filter::parse(&strings) {
        Ok(f) => {
            for it in &items {
                let any = each.iter().any(|e| {
                    e.as_ref()
                        .expect("each string of a valid request")
                        .matches(it)
                });
                assert_eq!(f.matches(it), strings.is_empty() || any, "{strings:?}");
            }
        }
        Err(e) => {
            let FilterError::Syntax { index, .. } = &e;
            let _ = e.to_string();
            assert!(each[*index].is_err(), "error names a valid string: {e}");
            assert!(each[..*index].iter().all(Result::is_ok), "{e}");
        }
    }
    if let [Ok(a), Ok(b), ..] = &each[..] {
        if !strings[0].is_empty() && !strings[1].is_empty() {
            let joined = format!("{},{}", strings[0], strings[1]);
            let both = Filter::parse(&[&joined]);
            let both = both.unwrap_or_else(|e| panic!("{joined:?}: {e}"));
            for it in &items {
                assert_eq!(
                    both.matches(it),
                    a.matches(it) && b.matches(it),
                    "{joined:?}"
                );
            }
        }
    }
}
